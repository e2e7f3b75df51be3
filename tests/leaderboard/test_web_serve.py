"""`iugc serve --processes N` runs gunicorn: N worker processes answer on the port, the
connections spread evenly over them, one evaluation process runs the embedded workers,
and SIGTERM stops them all (no process outlives the server)."""
from __future__ import annotations

import os
import signal
import socket
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


def _instance(tmp_path) -> dict:
    """The environment of a migrated SQLite instance in ``tmp_path`` (nothing else set)."""
    env = {**os.environ, "IUGC_INSTANCE": str(tmp_path), "IUGC_SECRET_KEY": "k" * 40}
    for name in ("IUGC_DATABASE_URL", "IUGC_BROKER_URL", "IUGC_STORAGE_URL", "IUGC_SMTP_URL"):
        env.pop(name, None)
    subprocess.run([sys.executable, "-m", "iugc", "db", "upgrade"], env=env, check=True, capture_output=True)
    return env


def _connections_held(pids: list[int], port: int) -> dict[int, int]:
    """Established connections on ``port`` that each of ``pids`` holds (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # local port, ESTABLISHED
            inodes.add(fields[9])
    held = {}
    for pid in pids:
        links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        held[pid] = sum(link.startswith("socket:[") and link[8:-1] in inodes for link in links)
    return held


def _spread(port: int, pids: list[int], n: int) -> dict[int, int]:
    """Connections each of ``pids`` holds after ``n`` clients connected at once (as a load
    test's do), each asking once and keeping its connection open."""
    import asyncio

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        return writer

    async def clients():
        writers = await asyncio.gather(*(client() for _ in range(n)))
        try:
            return _connections_held(pids, port)
        finally:
            for writer in writers:
                writer.close()

    return asyncio.run(clients())


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to see the request processes")
def test_serve_with_two_processes_answers_and_stops_them_all(tmp_path):
    env = _instance(tmp_path)
    bad = subprocess.run([sys.executable, "-m", "iugc", "serve", "--processes", "0"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--processes" in bad.stderr and "0 is not in the range 1<=x<=64" in bad.stderr
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
        request_processes = [c for c in children if b"iugc.leaderboard.server" not in Path(f"/proc/{c}/cmdline").read_bytes()]
        for _ in range(5):  # on one shared socket, one process took over 70 of 100 connections every other time
            held = _spread(port, request_processes, 100)  # on a socket each: about half (30 or more but once in 10**4 runs)
            assert len(held) == 2 and all(n >= 30 for n in held.values()), held
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    deadline = time.monotonic() + 10
    while any(_alive(child) for child in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(child) for child in children), "a process outlived the server"
    assert "2 process(es)" in err and "1 embedded worker(s)" in err and "Traceback" not in err


def test_serve_on_port_0_answers_on_the_port_it_announces(tmp_path):
    env = _instance(tmp_path)
    server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", "0", "--workers", "0", "--processes", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()  # "serving http://127.0.0.1:PORT/api/v1 (...)"
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        assert port > 0, line
        wait_for_port(port, process=server)
        assert requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=30).status_code == 200
        with pytest.raises(OSError):  # the port stays the server's: nothing else may listen there
            socket.create_server(("127.0.0.1", port)).close()
        second = subprocess.run([sys.executable, "-m", "iugc", "serve", "--port", str(port)], env=env,  # nor a second server
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "cannot listen on 127.0.0.1:" in second.stderr, second.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 0
