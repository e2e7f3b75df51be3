"""How much of the gap to issue 3's bar is the second scanner: the shipped training command
run on the first scanner's ids 03744-04200 alone, its best epoch chosen on the first
scanner's ids 04201-04301 (held out from training), then measured on those and on the
second scanner's 04302-04401 (seen neither by training nor by the choice of epoch), each
with p(standard plane) from the three sources of `iugc baseline predict --standard-from`.

    python benchmarks/same_scanner.py [--weights RUN/best.pt] [--work DIR]

Without --weights it trains first: `iugc baseline train` with the shipped weights' options
plus `--amp --val-every 2`, about 45 minutes on 2 CPU cores (bfloat16; slower on a CPU
without it); with --weights it only measures, about 2 minutes. Each block gets its
generated non-standard frames (`iugc data nonstandard --per-frame 0.5 --seed 0`) for the
classification figures. Needs ../shared/data/psfhs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from baseline.postprocess import STANDARD_SOURCES
from baseline_card import KEYS, ROOT, figures, make_dataset, split_subsets

BLOCKS = "train=03744-04200,validation=04201-04301,test=04302-04401"
TRAIN = ["--epochs", "40", "--encoder", "resnet18", "--decoder-channels", "128,64,32,16,8", "--seed", "0",
         "--style-noise", "0.5", "--amp", "--val-every", "2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="A checkpoint trained as this script would (default: train it).")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "same-scanner")
    args = parser.parse_args()
    dataset = make_dataset(args.work, BLOCKS)
    weights = args.weights
    if weights is None:
        run = args.work / "run"
        command = [sys.executable, "-m", "iugc", "baseline", "train", "--data", str(dataset), "--out", str(run), *TRAIN]
        if (run / "last.pt").is_file():
            command.append("--resume")
        subprocess.run(command, cwd=ROOT, check=True)
        weights = str(run / "best.pt")
    print(f"weights {weights}; trained on ids 03744-04200 (first scanner), best epoch chosen on 04201-04301")
    print(f"{'block':<44}{'p(standard) from':<18}" + " ".join(f"{k:>9}" for k in KEYS))
    for name, split in (("04201-04301, first scanner, held out", "validation"), ("04302-04401, second scanner, unseen", "test")):
        work = args.work / split
        split_subsets(dataset, work, split)
        for source in STANDARD_SOURCES:
            result = figures(work, weights, ["--standard-from", source], f"{split}-{source}")
            print(f"{name:<44}{source:<18}" + " ".join(f"{result[k]:>9.4f}" for k in KEYS), flush=True)


if __name__ == "__main__":
    main()
