"""Load on the web site and API v1: `iugc serve` as a real process on 127.0.0.1 with
10,000 evaluated submissions in the database (100 teams x 100, seeded as
``bench_service.seed`` does), and ``--clients`` concurrent clients (threads, one HTTP
session each) asking for the validation leaderboard page (anonymous, the phase
published) and the API's leaderboard (bearer token), ``--requests`` each.

    python benchmarks/bench_web.py [--clients 50] [--requests 40] [--threads 8]

Prints p50/p95/p99 latency per endpoint and requests/s over the whole run. Target on
2 cores: p95 under 100 ms. The clients run on the same 2 cores as the server, so the
figures include their cost.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_service import fresh, free_port, percentile, seed, wait_port  # noqa: E402
from submissions import admin, db  # noqa: E402
from submissions.models import State  # noqa: E402

SLUG = "psfhs2023-validation"


def prepare(folder: Path) -> str:
    """The seeded database; returns an API token."""
    engine, sessions, phase_id = fresh(folder, None)
    for block in range(10):
        seed(sessions, phase_id, 1000, teams=10, state=State.succeeded, first=block * 1000)
    with db.transaction(sessions) as session:
        admin.create_user(session, "org@example.org", "organizer")
        token = admin.issue_token(session, "org@example.org")
        admin.publish(session, SLUG)
    engine.dispose()
    return token


def client(base: str, token: str, n: int, out: dict[str, list[float]], errors: list[str]) -> None:
    http = requests.Session()
    targets = [("page", f"{base}/leaderboard/{SLUG}", {}),
               ("api", f"{base}/api/v1/phases/{SLUG}/leaderboard", {"Authorization": f"Bearer {token}"})]
    for i in range(n):
        name, url, headers = targets[i % 2]
        began = time.perf_counter()
        response = http.get(url, headers=headers, timeout=60)
        out[name].append(time.perf_counter() - began)
        if response.status_code != 200:
            errors.append(f"{name}: {response.status_code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client, alternating page and API")
    parser.add_argument("--threads", type=int, default=8, help="the server's request threads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.monotonic()
        token = prepare(folder)
        print(f"seeded 10,000 evaluated submissions (100 teams) in {time.monotonic() - began:.1f} s")
        # one token makes every API call here: lift its per-token rate (120 per minute by default)
        env = {**os.environ, "IUGC_INSTANCE": str(folder), "IUGC_SECRET_KEY": "b" * 64, "IUGC_API_RATE_LIMIT": "1000000 per minute"}
        for var in ("IUGC_DATABASE_URL", "IUGC_BROKER_URL", "IUGC_STORAGE_URL"):
            env.pop(var, None)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", str(port), "--workers", "0",
                                   "--threads", str(args.threads)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            base = f"http://127.0.0.1:{port}"
            warm = requests.get(f"{base}/leaderboard/{SLUG}", timeout=60)
            assert warm.status_code == 200 and warm.text.count("<tr") >= 101, warm.status_code
            times: dict[str, list[float]] = {"page": [], "api": []}
            errors: list[str] = []
            threads = [threading.Thread(target=client, args=(base, token, args.requests, times, errors)) for _ in range(args.clients)]
            began = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - began
        finally:
            server.terminate()
            server.wait(timeout=60)
    total = sum(len(v) for v in times.values())
    print(f"{args.clients} clients, {total} requests in {elapsed:.1f} s: {total / elapsed:.1f} requests/s; {len(errors)} errors")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"  {name:<5} {'leaderboard page' if name == 'page' else 'API leaderboard':<17} p50 {percentile(ms, 0.5):7.1f} ms   "
              f"p95 {percentile(ms, 0.95):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms   (target p95 < 100 ms)")
    if errors:
        print("errors:", ", ".join(sorted(set(errors))))


if __name__ == "__main__":
    main()
