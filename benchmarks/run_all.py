"""``make bench``: every headline figure of docs/benchmarks.md in one run, each as a ratio
against its reference measured in the same run, beside the ratio last documented, so that a
regression shows.

    python benchmarks/run_all.py [--only evaluate,web] [--save]

Each benchmark runs as its own process with short settings (fewer repeats than the figures
in the docs were measured with), one after the other, never side by side; its full output
goes to ``.bench/<name>.log``. A benchmark whose needs are missing (the real frames in
../shared/data/psfhs, a Docker engine, PyTorch) is skipped and said so. ``--save`` writes
the measured ratios to ``benchmarks/headline.json``, the documented ones (do it with the
docs' figures, after a change that is meant to move them).

A ratio is the figure divided by its reference; for a rate (higher is better) a rising
ratio is good, for a time a falling one. A figure more than 25% worse than documented is
marked ``WORSE``: rerun it alone before believing it (the machines are shared).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PSFHS = ROOT.parent / "shared" / "data" / "psfhs"
DOCUMENTED = HERE / "headline.json"
OUT = ROOT / ".bench"
WORSE = 1.25

# name, arguments (short settings), needs
STEPS = [
    ("evaluate", ["bench_evaluate.py", "--repeats", "3"], {"data"}),
    ("report", ["bench_report.py", "--repeats", "2"], set()),
    ("baseline", ["bench_baseline.py", "--encoder", "resnet18", "--decoder", "128,64,32,16,8", "--repeats", "5"], {"torch"}),
    ("training-step", ["bench_training_step.py", "--quick", "--steps", "3"], {"torch"}),
    ("container", ["bench_container.py", "--repeats", "3"], {"data", "docker"}),
    ("kit", ["bench_kit.py", "--repeats", "1"], {"docker"}),
    ("service", ["bench_service.py", "--n", "300", "--repeats", "1", "--skip-celery"], {"docker"}),
    ("web", ["bench_web.py", "--clients", "50", "--requests", "20"], set()),
]


def missing(needs: set[str]) -> str | None:
    """Why a benchmark cannot run here, or None."""
    if "data" in needs and not PSFHS.is_dir():
        return f"no real frames at {PSFHS}"
    if "torch" in needs:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed (pip install -e '.[baseline]')"
    if "docker" in needs:
        if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
            return "no Docker engine answers (start one: dockerd &)"
    return None


def ratio(row: dict) -> float:
    return row["value"] / row["reference_value"]


def verdict(row: dict, documented: float | None) -> str:
    if documented is None:
        return "new"
    change = ratio(row) / documented
    worse = change < 1 / WORSE if row["higher_is_better"] else change > WORSE
    return f"WORSE ({change:.2f}x)" if worse else f"as documented ({change:.2f}x)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated, from: {', '.join(s[0] for s in STEPS)}")
    parser.add_argument("--save", action="store_true", help="write the measured ratios to benchmarks/headline.json")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    unknown = only - {s[0] for s in STEPS}
    if unknown:
        print(f"error: --only names no benchmark called {', '.join(sorted(unknown))}; choose from {', '.join(s[0] for s in STEPS)}",
              file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    rows_file = OUT / "rows.jsonl"
    rows_file.unlink(missing_ok=True)
    steps = [s for s in STEPS if not only or s[0] in only]
    skipped, failed = [], []
    for number, (name, command, needs) in enumerate(steps, 1):
        why = missing(needs)
        if why:
            skipped.append(f"{name}: {why}")
            print(f"[{number}/{len(steps)}] {name}: skipped, {why}", file=sys.stderr)
            continue
        print(f"[{number}/{len(steps)}] {name} ...", end="", flush=True, file=sys.stderr)
        began = time.monotonic()
        with open(OUT / f"{name}.log", "w") as log:
            done = subprocess.run([sys.executable, str(HERE / command[0]), *command[1:]], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "IUGC_BENCH_ROWS": str(rows_file)}, cwd=ROOT)
        print(f" {time.monotonic() - began:.0f} s" + ("" if done.returncode == 0 else f", FAILED (see .bench/{name}.log)"),
              file=sys.stderr)
        if done.returncode != 0:
            failed.append(name)
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    documented = json.loads(DOCUMENTED.read_text()) if DOCUMENTED.exists() else {}
    print("\n| figure | measured | reference, same run | ratio | documented ratio | |\n|---|---|---|---|---|---|")
    for row in rows:
        doc = documented.get(row["key"])
        print(f"| {row['part']} | {row['value']:.4g} {row['unit']} | {row['reference']}: {row['reference_value']:.4g} "
              f"| {ratio(row):.3g} | {'' if doc is None else f'{doc:.3g}'} | {verdict(row, doc)} |")
    for line in skipped:
        print(f"skipped {line}")
    if args.save and rows:
        documented.update({row["key"]: round(ratio(row), 4) for row in rows})
        DOCUMENTED.write_text(json.dumps(documented, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(rows)} ratios to {DOCUMENTED.relative_to(ROOT)}")
    if failed:
        print(f"error: {', '.join(failed)} failed; their output is in .bench/<name>.log", file=sys.stderr)
        return 1
    if not rows:
        print("error: no benchmark ran, so there is no figure to show", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
