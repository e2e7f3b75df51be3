"""Which settings make a training epoch cheaper without losing validation figures: short
runs of the shipped recipe, one per setting, same seed and split, side by side.

    python benchmarks/cheaper_epochs.py --data DATASET --work ~/iugc-runs/cheaper [--epochs 8] [--only NAME ...]

DATASET is the development split (`iugc data split --blocks
train=03744-04205+04302-04343,validation=04206-04301+04344-04401` of the PSFHS frames with
`iugc data nonstandard --per-frame 0.5 --seed 0`). Each run lives in WORK/NAME and is
resumed when its folder holds one already (`--resume`), so the study can span sessions.
The table gives each run's training minutes (the sum of its epochs' seconds, validation
included) and its validation figures after the last epoch and at its best one: the
figures `iugc baseline train` logs, on the weight average. Run nothing else meanwhile:
the minutes are only comparable on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ["--encoder", "resnet18", "--decoder-channels", "128,64,32,16,8", "--seed", "0", "--style-noise", "0.5"]
SETTINGS = {
    "256 px, float32": [],
    "256 px, bfloat16": ["--amp"],
    "bfloat16, half the epochs at 128 px": ["--amp", "--progressive", "128:{half}"],
    "bfloat16, half the epochs at 192 px": ["--amp", "--progressive", "192:{half}"],
    "bfloat16, batch 32": ["--amp", "--batch-size", "32"],
}


def run(data: Path, folder: Path, epochs: int, options: list[str]) -> None:
    command = [sys.executable, "-m", "iugc", "baseline", "train", "--data", str(data), "--out", str(folder),
               "--epochs", str(epochs), *RECIPE, *[o.format(half=epochs // 2) for o in options]]
    if (folder / "last.pt").is_file():
        command.append("--resume")
    subprocess.run(command, cwd=ROOT, check=True)


def summary(folder: Path) -> dict:
    with open(folder / "log.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["psfhs_score"]]
    best = max(rows, key=lambda r: float(r["psfhs_score"]))
    return {"minutes": sum(float(r["seconds"]) for r in rows) / 60, "last": rows[-1], "best": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=None, help="Run only these settings (names as in the table).")
    args = parser.parse_args()
    names = args.only or list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    for name in names:
        run(args.data, args.work / name.replace(" ", "-").replace(",", ""), args.epochs, SETTINGS[name])
    print(f"| setting ({args.epochs} epochs) | minutes | Dice (last) | dAoP ellipse (last) | PSFHS score (last) | best epoch | PSFHS score (best) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        s = summary(args.work / name.replace(" ", "-").replace(",", ""))
        last, best = s["last"], s["best"]
        print(f"| {name} | {s['minutes']:.1f} | {float(last['dice']):.4f} | {float(last['aop_error_ellipse']):.2f} | "
              f"{float(last['psfhs_score']):.4f} | {best['epoch']} | {float(best['psfhs_score']):.4f} |")


if __name__ == "__main__":
    main()
