"""Load on the web site and API v1: `iugc serve` as a real process on 127.0.0.1 with
10,000 evaluated submissions in the database (100 teams x 100, seeded as
``bench_service.seed`` does), asked for the validation leaderboard page (anonymous, the
phase published) and the API's leaderboard (bearer token), one endpoint at a time, by 1
and then by 50 concurrent clients (keep-alive HTTP/1.1 connections on one asyncio loop,
so the clients cost little of the 2 cores they share with the server).

    python benchmarks/bench_web.py [--clients 1,50] [--requests 40] [--max-seconds 60] [--processes 2] [--threads 2]

Each run is bounded: ``--requests`` per client, and stops after ``--max-seconds``. Prints,
per endpoint and client count, p50/p95/p99 latency, requests/s and the server's CPU time
per request (what bounds requests/s on an idle machine: about 1000 / that per core the
server gets), and the load average before and after (the machine may be shared). Target on 2 cores: p95 under 100 ms at 50
clients. Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from headline import emit  # noqa: E402
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_service import fresh, free_port, percentile, seed, wait_port  # noqa: E402
from iugc.submissions import accounts, challenges, db  # noqa: E402
from iugc.submissions.models import State  # noqa: E402

SLUG = "psfhs2023-validation"
HOST = "127.0.0.1"


def prepare(folder: Path) -> str:
    """The seeded database; returns an API token."""
    engine, sessions, phase_id = fresh(folder, None)
    for block in range(10):
        seed(sessions, phase_id, 1000, teams=10, state=State.succeeded, first=block * 1000)
    with db.transaction(sessions) as session:
        accounts.create_user(session, "org@example.org", "organizer")
        token = accounts.issue_token(session, "org@example.org")
        challenges.publish(session, SLUG)
    engine.dispose()
    return token


async def _get(reader, writer, request: bytes) -> tuple[int, int]:
    """One request on a kept-alive connection: (status, body bytes)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return status, length


async def _client(port: int, request: bytes, n: int, deadline: float, times: list[float], errors: list[str],
                  per_connection: int | None = None) -> None:
    """``n`` requests, on one kept-alive connection or a new one every ``per_connection``
    (a latency counts from sending; with ``per_connection``, the first request on each
    connection counts from connecting)."""
    done = 0
    while done < n and time.perf_counter() <= deadline:
        began = time.perf_counter()
        reader, writer = await asyncio.open_connection(HOST, port)
        if per_connection is None:
            began = time.perf_counter()
        try:
            for _ in range(min(per_connection or n, n - done)):
                if time.perf_counter() > deadline:
                    return
                status, _ = await _get(reader, writer, request)
                times.append(time.perf_counter() - began)
                done += 1
                if status != 200:
                    errors.append(str(status))
                began = time.perf_counter()
        finally:
            writer.close()


def run(port: int, request: bytes, clients: int, n: int, max_seconds: float,
        per_connection: int | None = None) -> tuple[list[float], float, list[str]]:
    """``clients`` concurrent clients asking ``n`` times each (on a new connection every
    ``per_connection`` requests, or one kept alive): (latencies, seconds, errors)."""
    times: list[float] = []
    errors: list[str] = []

    async def main():
        deadline = time.perf_counter() + max_seconds
        await asyncio.gather(*(_client(port, request, n, deadline, times, errors, per_connection) for _ in range(clients)))

    began = time.perf_counter()
    asyncio.run(main())
    return times, time.perf_counter() - began, errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """CPU seconds of the server and its request processes."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(cpu_seconds(int(p)) for p in [pid, *children])


def request_bytes(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", "Connection: keep-alive", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,50", help="client counts to run, comma-separated")
    parser.add_argument("--requests", type=int, default=200,
                        help="per client and endpoint (200: 10,000 requests at 50 clients, a few seconds; 40 was a second, much of "
                             "it the clients' connecting)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop a run after this long")
    parser.add_argument("--per-connection", type=int, default=None, metavar="N",
                        help="open a new connection every N requests (default: one kept-alive connection per client)")
    parser.add_argument("--threads", type=int, default=2, help="request threads per server process (iugc serve --threads)")
    parser.add_argument("--processes", type=int, default=2, help="server processes (iugc serve --processes)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.monotonic()
        token = prepare(folder)
        print(f"seeded 10,000 evaluated submissions (100 teams) in {time.monotonic() - began:.1f} s")
        # one token makes every API call here: lift its per-token rate (120 per minute by default)
        env = {**os.environ, "IUGC_INSTANCE": str(folder), "IUGC_SECRET_KEY": "b" * 64, "IUGC_API_RATE_LIMIT": "1000000 per minute"}
        for var in ("IUGC_DATABASE_URL", "IUGC_BROKER_URL", "IUGC_STORAGE_URL", "IUGC_SMTP_URL"):
            env.pop(var, None)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--host", HOST, "--port", str(port), "--workers", "0",
                                   "--threads", str(args.threads), "--processes", str(args.processes)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        targets = {"page": request_bytes(f"/leaderboard/{SLUG}", {}),
                   "api": request_bytes(f"/api/v1/phases/{SLUG}/leaderboard", {"Authorization": f"Bearer {token}"}),
                   # the reference: a static file through the same server, app and middleware (the floor of any request)
                   "static": request_bytes("/static/style.css", {})}
        results = []
        try:
            wait_port(port)
            for name, request in targets.items():  # warm: every process ranks and keeps the board once
                times, _, errors = run(port, request, 8 * args.processes, 2, args.max_seconds)
                assert not errors, f"{name}: HTTP {errors[0]}"
            load_before = os.getloadavg()
            for clients in counts:
                for name, request in targets.items():
                    cpu = server_cpu(server.pid)
                    times, seconds, errors = run(port, request, clients, args.requests, args.max_seconds, args.per_connection)
                    results.append((name, clients, times, seconds, errors, server_cpu(server.pid) - cpu))
            load_after = os.getloadavg()
        finally:
            server.terminate()
            server.wait(timeout=60)
    kept = f"a new connection every {args.per_connection} request(s)" if args.per_connection else "kept-alive connections"
    print(f"iugc serve --processes {args.processes} --threads {args.threads}; {kept}; {os.cpu_count()} CPUs; load average (1/5/15 min) before "
          f"{'/'.join(f'{v:.1f}' for v in load_before)}, after {'/'.join(f'{v:.1f}' for v in load_after)}")
    for name, clients, times, seconds, errors, cpu in results:
        ms = [v * 1000 for v in times]
        label = {"page": "leaderboard page", "api": "API leaderboard", "static": "static file"}[name]
        print(f"  {label:<17} {clients:>3} client(s): {len(ms):>5} requests, {len(ms) / seconds:7.1f} requests/s   "
              f"p50 {percentile(ms, 0.5):7.1f} ms   p95 {percentile(ms, 0.95):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms   "
              f"server CPU {cpu / max(1, len(ms)) * 1000:.2f} ms/request"
              + (f"   {len(errors)} errors (HTTP {', '.join(sorted(set(errors)))})" if errors else ""))
    print("  target: p95 < 100 ms at 50 clients")
    p95 = {(name, clients): percentile([v * 1000 for v in times], 0.95) for name, clients, times, *_ in results}
    top = max(counts)
    for name, label in (("page", "leaderboard page"), ("api", "API leaderboard")):
        emit(f"web-{name}-p95", f"{label} under gunicorn, 10,000 submissions, {top} clients, p95", p95[name, top], "ms",
             f"a static file, same server, {top} clients", p95["static", top])


if __name__ == "__main__":
    main()
