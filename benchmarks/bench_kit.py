"""The team starter kit's steps, timed as a team runs them (issue 20's note).

    python benchmarks/bench_kit.py [--repeats 3] [--challenge iugc2024]

Each repeat, as fresh processes: `iugc kit new` into a new folder (offline base),
`docker build --no-cache --network none` of it (what a team's first build costs: no
cached layers of the kit), `iugc kit check` of the folder (its rebuild then hits the
cache) on the default SYNTHETIC phantom cases, and on 8 real cases when
../shared/data/psfhs is there. Prints the median of each and the total.

Needs a Docker engine and iugc/base:latest (`iugc docker build-base`).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from headline import emit, yardstick  # noqa: E402

from iugc.data_manifest.importers import import_dataset  # noqa: E402
from iugc.data_manifest.sample import write_sample  # noqa: E402

PSFHS = ROOT.parent / "shared" / "data" / "psfhs"


def timed(command: list[str]) -> float:
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--challenge", default="iugc2024")
    args = parser.parse_args()
    iugc = [sys.executable, "-m", "iugc"]
    times: dict[str, list[float]] = {"kit new": [], "docker build --no-cache": [], "kit check (phantoms)": []}
    with tempfile.TemporaryDirectory(prefix="bench-kit-") as tmp:
        real = None
        if PSFHS.is_dir():
            import_dataset("psfhs", PSFHS / "release_sample", Path(tmp) / "release", progress=False)
            real = Path(tmp) / "sample"
            write_sample(real, 8, source=Path(tmp) / "release")
            times["kit check (8 real cases)"] = []
        tags = []
        try:
            for i in range(args.repeats):
                kit = Path(tmp) / f"bench-kit-{i}"
                tags.append(f"team/bench-kit-{i}:latest")
                times["kit new"].append(timed([*iugc, "kit", "new", str(kit), "--challenge", args.challenge, "--base", "iugc/base:latest"]))
                times["docker build --no-cache"].append(timed(["docker", "build", "--no-cache", "--network", "none", "-q", "-t", tags[-1], str(kit)]))
                times["kit check (phantoms)"].append(timed([*iugc, "kit", "check", str(kit)]))
                if real is not None:
                    times["kit check (8 real cases)"].append(timed([*iugc, "kit", "check", str(kit), "--data", str(real)]))
        finally:  # the images this run built, no others
            subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True)
    print(f"{args.challenge}, {args.repeats} repeats, median seconds (min-max):")
    for step, values in times.items():
        print(f"  {step:<26}{statistics.median(values):6.2f}  ({min(values):.2f}-{max(values):.2f})")
    steps = ["kit new", "docker build --no-cache", "kit check (phantoms)"]
    total = sum(statistics.median(times[s]) for s in steps)
    print(f"  {'new + build + check':<26}{total:6.2f}")
    emit("kit", "team kit: new + cold build + check", total, "s", "yardstick", yardstick())


if __name__ == "__main__":
    main()
