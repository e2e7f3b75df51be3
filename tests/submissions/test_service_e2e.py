"""End to end, as an organizer and two teams would run it: `iugc db upgrade`, `iugc admin
init/add-dataset/create-user/token`, `iugc serve` (its embedded worker, or Celery with a
real redis-server and an `iugc worker` process), teams made through the API, `iugc
submit` of the baseline image, and the leaderboard showing the numbers `iugc
evaluate-image` gives for the same image and data; then SIGTERM stops everything cleanly
with no container left. Real frames, a real engine, SQLite and PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.docker_support import require_engine
from tests.service_support import database_url, free_port, postgres_cluster, redis_server, wait_for_port  # noqa: F401

# with the other engine tests, on one worker: they run containers, and the container tests
# count and clean up the runner's containers and the images they build
pytestmark = pytest.mark.xdist_group("docker")

PHASE = "psfhs2023-sanity-check"
N_CASES = 20


def iugc(*args, env, stdin=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "iugc", *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def baseline_image():
    engine = require_engine()
    built = subprocess.run([sys.executable, "-m", "iugc", "docker", "build-baseline"], capture_output=True, text=True,
                           timeout=1800, cwd=ROOT)  # idempotent: reuses the image when its recipe is unchanged
    assert built.returncode == 0, built.stderr
    return engine, "iugc/baseline:latest"


@pytest.fixture(scope="module")
def dataset(psfhs_dir, tmp_path_factory):
    from iugc.data_manifest.importers import import_dataset

    source = tmp_path_factory.mktemp("src")
    for folder in ("images", "masks"):
        (source / folder).mkdir()
        for path in sorted((psfhs_dir / folder).glob("*.png"))[:N_CASES]:
            (source / folder / path.name).symlink_to(path)
    dest = tmp_path_factory.mktemp("data") / "psfhs20"
    import_dataset("png", source, dest, progress=False)
    return dest


@pytest.fixture(scope="module")
def expected(baseline_image, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("expected") / "r.json"
    env = {**os.environ, "IUGC_CACHE_DIR": str(out.parent / "cache")}
    run = iugc("evaluate-image", "--image", baseline_image[1], "--data", str(dataset), "--challenge", "psfhs2023",
               "--phase", "sanity-check", "--out", str(out), env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "succeeded", result
    return result


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["embedded", "celery"])
def test_upload_to_leaderboard_gives_the_numbers_of_evaluate_image(mode, database_url, baseline_image, dataset, expected, tmp_path, request):
    import requests

    engine, image = baseline_image
    env = {**os.environ, "IUGC_INSTANCE": str(tmp_path / "instance"), "IUGC_DATABASE_URL": database_url,
           "IUGC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("IUGC_BROKER_URL", None)
    env["IUGC_SECRET_KEY"] = "k" * 40  # `iugc serve` refuses to start without one (the web sessions)
    if mode == "celery":
        env["IUGC_BROKER_URL"] = request.getfixturevalue("redis_server").url
    steps = [
        ("db", "upgrade"),
        ("admin", "init", "--challenge", "psfhs2023"),
        ("admin", "add-dataset", "--phase", PHASE, "--data", str(dataset)),
    ]
    for step in steps:
        run = iugc(*step, env=env)
        assert run.returncode == 0, (step, run.stderr)
    tokens = {}
    for email, role in (("org@example.org", "organizer"), ("alice@example.org", "participant"), ("bob@example.org", "participant")):
        run = iugc("admin", "create-user", email, "--role", role, env=env, stdin="a long password\n")
        assert run.returncode == 0, run.stderr
        tokens[email] = iugc("admin", "token", email, env=env).stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    worker = None
    if mode == "celery":
        worker = subprocess.Popen([sys.executable, "-m", "iugc", "worker", "--concurrency", "1"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process=server)
        for email, team in (("alice@example.org", "alpha"), ("bob@example.org", "beta")):
            made = requests.post(f"{url}/api/v1/teams", json={"name": team}, headers={"Authorization": f"Bearer {tokens[email]}"}, timeout=30)
            assert made.status_code == 201, made.text
            accepted = requests.post(f"{url}/api/v1/challenges/psfhs2023/terms", headers={"Authorization": f"Bearer {tokens[email]}"}, timeout=30)
            assert accepted.status_code == 200 and accepted.json()["team"] == team, accepted.text
        submit_env = {**env, "IUGC_SERVER": url, "IUGC_TOKEN": tokens["alice@example.org"]}
        later = iugc("submit", "--phase", PHASE, "--image", image, "--no-wait", env={**submit_env, "IUGC_TOKEN": tokens["bob@example.org"]})
        assert later.returncode == 0 and "queued" in later.stdout, later.stderr
        followed = iugc("submit", "--phase", PHASE, "--image", image, "--timeout", "600", env=submit_env)
        assert followed.returncode == 0, followed.stdout + followed.stderr
        assert f"score {expected['score']:.4f}" in followed.stdout
        bob = {"Authorization": f"Bearer {tokens['bob@example.org']}"}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rows = requests.get(f"{url}/api/v1/phases/{PHASE}/leaderboard", headers=bob, timeout=30).json()["rows"]
            if len(rows) == 2:
                break
            time.sleep(1)
        assert sorted(r["team"] for r in rows) == ["alpha", "beta"]
        for row in rows:
            assert row["rank"] == 1 and row["score"] == pytest.approx(expected["score"], abs=1e-12)
            for key, value in expected["aggregates"].items():
                assert row[key] == pytest.approx(value, abs=1e-12), key
        first = requests.get(f"{url}/api/v1/submissions/{rows[0]['submission']}", headers=bob if rows[0]["team"] == "beta" else
                             {"Authorization": f"Bearer {tokens['alice@example.org']}"}, timeout=30).json()
        evaluation = first["evaluations"][-1]
        assert evaluation["image_digest"] == expected["image_digest"] and evaluation["manifest_sha256"]
        assert str(dataset) not in json.dumps(first)  # the dataset's path is never shown
        with_cases = requests.get(f"{url}/api/v1/submissions/{rows[0]['submission']}/cases", headers=bob if rows[0]["team"] == "beta" else
                                  {"Authorization": f"Bearer {tokens['alice@example.org']}"}, timeout=30).json()
        assert set(with_cases["cases"]) == set(expected["cases"])
    finally:
        for process in filter(None, (server, worker)):
            process.send_signal(signal.SIGTERM)
        for process in filter(None, (server, worker)):
            try:
                process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
    assert server.returncode == 0
    for process in filter(None, (server, worker)):
        owner = f"{socket.gethostname()}:{process.pid}"
        assert engine.containers.list(all=True, sparse=True, filters={"label": f"org.iugc.owner={owner}"}) == []
