"""`iugc serve --processes N` runs gunicorn: N worker processes answer on the port, one
evaluation process runs the embedded workers, and SIGTERM stops them all (no process
outlives the server)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.service_support import free_port, wait_for_port


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to see the request processes")
def test_serve_with_two_processes_answers_and_stops_them_all(tmp_path):
    env = {**os.environ, "IUGC_INSTANCE": str(tmp_path), "IUGC_SECRET_KEY": "k" * 40}
    for name in ("IUGC_DATABASE_URL", "IUGC_BROKER_URL", "IUGC_STORAGE_URL", "IUGC_SMTP_URL"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-m", "iugc", "db", "upgrade"], env=env, check=True, capture_output=True)
    bad = subprocess.run([sys.executable, "-m", "iugc", "serve", "--processes", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--processes" in bad.stderr and "0 is not in the range 1<=x<=64" in bad.stderr
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:  # something else listens there
        busy = subprocess.run([sys.executable, "-m", "iugc", "serve", "--port", str(taken.getsockname()[1])], env=env,
                              capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1 and busy.stderr.count("\n") == 1 and "cannot listen on 127.0.0.1:" in busy.stderr
    assert "Address already in use" in busy.stderr and "Traceback" not in busy.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", str(port), "--workers", "1", "--processes", "2",
                               "--evaluation", "noop"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process=server)
        deadline = time.monotonic() + 30
        while len(_children(server.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        children = _children(server.pid)
        assert len(children) == 3, children  # two request processes and the evaluation process
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=30).status_code, range(40)))
        assert codes == [200] * 40 and all(_alive(child) for child in children)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    deadline = time.monotonic() + 10
    while any(_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(child) for child in children), "a process outlived the server"
    assert "2 process(es)" in err and "1 embedded worker(s)" in err and "Traceback" not in err
