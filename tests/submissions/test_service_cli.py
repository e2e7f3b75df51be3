"""The service's commands as processes: refusal on an unmigrated database, the admin
commands' errors, and `iugc submit` against a running `iugc serve` (no engine needed:
the no-op evaluation), each bad input with one clear line and a non-zero exit."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.service_support import docker_like_archive, free_port, wait_for_port


def iugc(*args, env, stdin=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "iugc", *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture
def env(tmp_path):
    environ = {**os.environ, "IUGC_INSTANCE": str(tmp_path / "instance")}
    for name in ("IUGC_DATABASE_URL", "IUGC_BROKER_URL", "IUGC_STORAGE_URL", "IUGC_SERVER", "IUGC_TOKEN"):
        environ.pop(name, None)
    environ["IUGC_SECRET_KEY"] = "k" * 40  # `iugc serve` refuses to start without one (the web sessions)
    return environ


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["worker"], ["admin", "init", "--challenge", "psfhs2023"]])
def test_commands_refuse_an_unmigrated_database(env, command):
    run = iugc(*command, env=env)
    assert run.returncode == 1
    assert "has no schema: run `iugc db upgrade` first" in run.stderr and "Traceback" not in run.stderr


def test_admin_commands_say_what_was_wrong(env, tmp_path):
    assert iugc("db", "upgrade", env=env).returncode == 0
    cases = [
        (("admin", "init", "--challenge", "nope"), None, "unknown challenge 'nope'"),
        (("admin", "add-dataset", "--phase", "x-y", "--data", str(tmp_path)), None, "no phase 'x-y'"),
        (("admin", "create-user", "a@example.org", "--role", "participant"), "short\n", "at least 8 characters on stdin"),
        (("admin", "create-user", "not-an-email", "--role", "participant"), "long enough password\n", "is not an e-mail address"),
        (("admin", "token", "nobody@example.org"), None, "no user 'nobody@example.org'"),
        (("admin", "publish", "--phase", "x-y"), None, "no phase 'x-y'"),
        (("admin", "reevaluate", "--phase", "x-y"), None, "no phase 'x-y'"),
    ]
    for args, stdin, message in cases:
        run = iugc(*args, env=env, stdin=stdin)
        assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)
    assert iugc("admin", "init", "--challenge", "psfhs2023", env=env).returncode == 0
    again = iugc("admin", "init", "--challenge", "psfhs2023", env=env)
    assert again.returncode == 0 and "already there" in again.stdout
    not_data = iugc("admin", "add-dataset", "--phase", "psfhs2023-validation", "--data", str(tmp_path), env=env)
    assert not_data.returncode == 1 and "is not a dataset from `iugc data import`" in not_data.stderr
    made = iugc("admin", "create-user", "a@example.org", "--role", "participant", env=env, stdin="long enough password\n")
    assert made.returncode == 0
    twice = iugc("admin", "create-user", "A@example.org", "--role", "participant", env=env, stdin="long enough password\n")
    assert twice.returncode == 1 and "already exists" in twice.stderr
    token = iugc("admin", "token", "a@example.org", env=env).stdout.split()[-1]
    assert token.startswith("iugc_") and len(token) > 40


def test_submit_against_a_running_server(env, tmp_path):
    import requests

    for step in (("db", "upgrade"), ("admin", "init", "--challenge", "psfhs2023")):
        assert iugc(*step, env=env).returncode == 0
    iugc("admin", "create-user", "a@example.org", "--role", "participant", env=env, stdin="long enough password\n")
    token = iugc("admin", "token", "a@example.org", env=env).stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", str(port), "--evaluation", "noop"], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process=server)
        requests.post(f"{url}/api/v1/teams", json={"name": "alpha"}, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        good = docker_like_archive(tmp_path / "good.tar", "g")
        unaccepted = iugc("submit", "--phase", "psfhs2023-sanity-check", "--image", str(good), env={**env, "IUGC_SERVER": url, "IUGC_TOKEN": token})
        assert unaccepted.returncode == 2 and "403: your team alpha has not accepted the terms of psfhs2023 yet" in unaccepted.stderr
        requests.post(f"{url}/api/v1/challenges/psfhs2023/terms", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        good = docker_like_archive(tmp_path / "good.tar", "g")
        bad = docker_like_archive(tmp_path / "bad.tar", "b", extra=[("../x", b"x")])
        submit_env = {**env, "IUGC_SERVER": url, "IUGC_TOKEN": token}
        no_token = iugc("submit", "--phase", "psfhs2023-sanity-check", "--image", str(good), env={**submit_env, "IUGC_TOKEN": ""})
        assert no_token.returncode == 2 and "no token" in no_token.stderr
        unknown = iugc("submit", "--phase", "nope", "--image", str(good), env=submit_env)
        assert unknown.returncode == 2 and "404: no phase 'nope'" in unknown.stderr
        refused = iugc("submit", "--phase", "psfhs2023-sanity-check", "--image", str(bad), env=submit_env)
        assert refused.returncode == 2 and "422: image archive rejected: member '../x' has a '..' component" in refused.stderr
        forged = iugc("submit", "--phase", "psfhs2023-sanity-check", "--image", str(good), "--token", "iugc_forged", env=submit_env)
        assert forged.returncode == 2 and "401" in forged.stderr
        done = iugc("submit", "--phase", "psfhs2023-sanity-check", "--image", str(good), env=submit_env)
        assert done.returncode == 0 and "succeeded" in done.stdout, done.stdout + done.stderr
        duplicate = iugc("submit", "--phase", "psfhs2023-sanity-check", "--image", str(good), env=submit_env)
        assert duplicate.returncode == 2 and "409: this archive was already submitted" in duplicate.stderr
        unreachable = iugc("submit", "--phase", "p", "--image", str(good), "--server", f"http://127.0.0.1:{free_port()}", env=submit_env)
        assert unreachable.returncode == 2 and "is `iugc serve` running there?" in unreachable.stderr
        missing = iugc("submit", "--phase", "p", "--image", "no/such-image:tag", env=submit_env)
        assert missing.returncode == 2 and "no/such-image:tag" in missing.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert server.returncode == 0, server.stderr.read()


def test_following_a_submission_waits_out_the_tokens_rate_instead_of_failing(env, tmp_path):
    """`iugc submit` follows with status calls; when the token is over its rate (another
    script sharing it), a 429 makes it wait as long as Retry-After says and go on."""
    import requests

    from iugc.leaderboard.client import Client, ClientError

    for step in (("db", "upgrade"), ("admin", "init", "--challenge", "psfhs2023")):
        assert iugc(*step, env=env).returncode == 0
    iugc("admin", "create-user", "a@example.org", "--role", "participant", env=env, stdin="long enough password\n")
    token = iugc("admin", "token", "a@example.org", env=env).stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", str(port), "--workers", "0"],  # stays queued
                              env={**env, "IUGC_API_RATE_LIMIT": "3 per 2 seconds"}, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process=server)
        client = Client(url, token)
        assert requests.post(f"{url}/api/v1/teams", json={"name": "alpha"}, headers={"Authorization": f"Bearer {token}"},
                             timeout=30).status_code == 201
        assert requests.post(f"{url}/api/v1/challenges/psfhs2023/terms", headers={"Authorization": f"Bearer {token}"},
                             timeout=30).status_code == 200
        sid = client.upload("psfhs2023-sanity-check", docker_like_archive(tmp_path / "g.tar", "g"), progress=False)["id"]
        with pytest.raises(ClientError) as over:  # three calls in a row: the third is over the rate
            for _ in range(3):
                client.status(sid)
        assert over.value.retry_after is not None and 1 <= over.value.retry_after <= 2
        began = time.monotonic()
        with pytest.raises(ClientError, match=rf"submission {sid} is still queued after 6 s"):
            client.wait(sid, poll=0.2, timeout=6)  # 429s on the way, waited out, not raised
        assert time.monotonic() - began > 4
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
