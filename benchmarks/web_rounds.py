"""Web load in alternating rounds: ``bench_web.py --clients 50`` for each server set-up in
turn, ``--rounds`` times, then the median per set-up and endpoint. One run of bench_web is
too noisy on a shared 2-core machine to compare two servers; a dozen alternated rounds
settle a 20% difference.

    python benchmarks/web_rounds.py --rounds 6 2x2 2x4 [--requests 200] [--against OLD_CHECKOUT]

Each set-up ``PxT`` is ``iugc serve --processes P --threads T`` of this checkout.
``--against DIR`` (repeatable) adds, per round, DIR's own ``benchmarks/bench_web.py`` run
with DIR first on the import path (a checkout of an older commit, e.g. the server gunicorn
replaced), at its default set-up or at ``DIR:PxT``. Two of them tell the server's part from
the app's: the commit that changed the server against its parent, and this checkout
against the first (the app grown since, same server).
Only 127.0.0.1 is contacted; a round is bounded as bench_web's runs are.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"(leaderboard page|API leaderboard|static file)\s+50 client\(s\):\s+\d+ requests,\s+([\d.]+) requests/s"
                 r".*p95\s+([\d.]+) ms.*server CPU ([\d.]+) ms")


def one_run(command: list[str], cwd: Path, env: dict) -> list[tuple[str, float, float, float]]:
    """(endpoint, requests/s, p95 ms, server CPU ms per request) of one bench_web run."""
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600).stdout
    return [(m[1], float(m[2]), float(m[3]), float(m[4])) for m in ROW.finditer(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setups", nargs="+", help="PxT: processes x threads per process")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=200,
                        help="per client and endpoint in each run, passed to every bench_web (its own default was 40 before: "
                             "a run of about a second, much of it the clients' connecting)")
    parser.add_argument("--against", action="append", default=[], metavar="DIR[:PxT]",
                        help="an older checkout whose benchmarks/bench_web.py runs too (repeatable)")
    parser.add_argument("--per-connection", type=int, default=None, metavar="N",
                        help="passed to every bench_web: a new connection every N requests (an old checkout's bench needs the option added)")
    args = parser.parse_args()
    more = ["--per-connection", str(args.per_connection)] if args.per_connection else []
    runs = {}
    for setup in args.setups:
        processes, threads = setup.split("x")
        runs[f"this checkout {setup}"] = ([sys.executable, "benchmarks/bench_web.py", "--clients", "50", "--requests", str(args.requests),
                                          "--processes", processes, "--threads", threads, *more], ROOT, os.environ)
    for against in args.against:
        folder, _, setup = against.partition(":")
        folder = Path(folder)
        command = [sys.executable, "benchmarks/bench_web.py", "--clients", "50", "--requests", str(args.requests), *more]
        if setup:
            processes, threads = setup.split("x")
            command += ["--processes", processes, "--threads", threads]
        runs[f"{folder.name} {setup or '(its default)'}"] = (command, folder, {**os.environ, "PYTHONPATH": str(folder)})
    found: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for round_ in range(1, args.rounds + 1):
        for name, (command, cwd, env) in runs.items():
            rows = one_run(command, cwd, env)
            if not rows:
                sys.exit(f"{name}: bench_web printed no 50-client row; run it alone to see why")
            for endpoint, rate, p95, cpu in rows:
                found.setdefault((name, endpoint), []).append((rate, p95, cpu))
        print(f"round {round_}/{args.rounds} done", flush=True)
    print(f"{os.cpu_count()} CPUs; medians of {args.rounds} alternated rounds, 50 clients (p95 range in brackets)")
    for (name, endpoint), values in found.items():
        rate, p95, cpu = (statistics.median(v[i] for v in values) for i in range(3))
        low, high = min(v[1] for v in values), max(v[1] for v in values)
        print(f"  {name:<28} {endpoint:<17} {rate:7.0f} requests/s   p95 {p95:6.1f} ms ({low:.0f}-{high:.0f})   "
              f"server CPU {cpu:.2f} ms/request")


if __name__ == "__main__":
    main()
