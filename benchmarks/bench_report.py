"""Time of the whole `iugc rank --report` for 20 teams x 700 cases x 1000 bootstrap resamples.

The per-case values are SYNTHETIC (seeded): ranking never looks at masks, only at the
per-case values of the results, so 20 teams of graded skill with case-level noise are a
fair load. Measured: `ranking_report` (rankings by every psfhs2023 method including
test-then-rank, Kendall's tau, 1000 bootstrap resamples for score and mean-rank, the
significance maps) and `report_figures` with PNG + SVG rendering into a temporary folder,
which is what `iugc rank RESULTS... --report DIR` does after loading the files.

Usage: python benchmarks/bench_report.py [--teams 20] [--cases 700] [--samples 1000] [--repeats 3] [--keep DIR]
Target (issue 18): the whole report within 10 s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from headline import emit, yardstick  # noqa: E402

import numpy as np  # noqa: E402

from iugc.challenge.definition import load_challenge  # noqa: E402
from iugc.challenge.labels import STRUCTURES  # noqa: E402
from iugc.evaluator.scores import CaseTable, aggregate, challenge_score  # noqa: E402


def synthetic_results(teams: int, cases: int, seed: int = 0) -> dict[str, dict]:
    """SYNTHETIC psfhs2023 results: team k's skill falls with k; hard cases are hard for all."""
    challenge = load_challenge("psfhs2023")
    rng = np.random.default_rng(seed)
    difficulty = rng.gamma(2.0, 1.0, cases)
    out = {}
    for k in range(teams):
        skill = 1.0 - 0.004 * k
        result_cases = {}
        for i in range(cases):
            case = {"error": None}
            base = np.clip(0.95 * skill - 0.02 * difficulty[i] + rng.normal(0, 0.03), 0, 1)
            for s in STRUCTURES:
                case[f"dice_{s}"] = float(np.clip(base + rng.normal(0, 0.01), 0, 1))
                case[f"hd_{s}"] = float(abs(rng.normal(60 * (1 - base), 3)))
                case[f"asd_{s}"] = float(abs(rng.normal(15 * (1 - base), 1)))
            case["aop_error"] = float(abs(rng.normal(0, 4 + 3 * difficulty[i] + 4 * (1 - skill) * 10)))
            case["hsd_error"] = None
            result_cases[f"{i:05d}"] = case
        agg = aggregate(CaseTable.from_cases(result_cases), challenge)
        out[f"team{k + 1:02d}"] = {"challenge": "psfhs2023", "cases": result_cases, "aggregates": agg,
                                   "score": challenge_score(agg, challenge)[0]}
    return out


def whole_report(results, challenge, samples, folder: Path) -> None:
    """What `iugc rank --report` does once the files are loaded (report.json, PNG, SVG)."""
    from iugc.evaluator.report import write_report

    write_report(folder, results, {}, [], challenge, samples, seed=0, progress=False)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the figure workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teams", type=int, default=20)
    parser.add_argument("--cases", type=int, default=700)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="Also leave one report's figures in this folder.")
    args = parser.parse_args()
    challenge = load_challenge("psfhs2023")
    results = synthetic_results(args.teams, args.cases)
    import matplotlib

    matplotlib.use("Agg")
    from iugc.evaluator.report import ranking_report

    times, parts, cpu = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            ranking_report(results, challenge, args.samples, seed=0)
            parts.append(time.perf_counter() - t)
            t, c = time.perf_counter(), _cpu_seconds()
            whole_report(results, challenge, args.samples, Path(tmp) / "report")
            times.append(time.perf_counter() - t)
            cpu.append(_cpu_seconds() - c)
    if args.keep:
        whole_report(results, challenge, args.samples, args.keep)
    median = statistics.median(times)
    print(f"{args.teams} teams x {args.cases} cases x {args.samples} bootstrap resamples (SYNTHETIC values), median of {args.repeats}:")
    print(f"  numbers only (ranking_report): {statistics.median(parts):.2f} s")
    print(f"  whole report (numbers, report.json, every figure as PNG + SVG): {median:.2f} s"
          f" ({median / 10:.2f} x the 10 s target); CPU time {statistics.median(cpu):.2f} s over both cores"
          f" (the wall time on a shared machine includes waiting for the cores: load average {os.getloadavg()[0]:.1f})")
    emit("report", f"ranking report, {args.teams} teams x {args.cases} cases x {args.samples} resamples", median, "s",
         "yardstick", yardstick())


if __name__ == "__main__":
    main()
