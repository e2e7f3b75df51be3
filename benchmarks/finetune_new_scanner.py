"""What fine-tuning buys on a new scanner: the shipped weights (trained on PSFHS ids
03744-04300, all from one scanner) fine-tuned on the first clips of the second scanner
(ids 04302-04343) and measured on its later clips (04344-04401), before and after,
beside AdaBN (`--adapt-bn`: no labels, BatchNorm statistics of the later clips' frames) and
without the default smoothing (`--smooth 0`),
through `iugc baseline finetune` + `iugc baseline predict` + `iugc evaluate`.

    python benchmarks/finetune_new_scanner.py [--weights default] [--epochs 10] [--lr 1e-4 3e-4 1e-3]

Each --lr is a fine-tune of its own (with `iugc baseline finetune`'s default warm-up);
the first is the CLI's default.

The two scanners are told apart by the grey-scale bar the first one draws at the left edge
of every frame (`scanner_of`): ids 03744-04301 show it, 04302-04401 do not (and have a
narrower sector with smaller anatomy); the script prints the count per block. The cut at
04343/04344 is a clip boundary (the correlation of neighbouring frames drops
to 0.35 there), so no clip straddles it. Needs ../shared/data/psfhs; about 5 minutes on
2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from baseline_card import PSFHS, ROOT, iugc, make_dataset, split_subsets

from baseline.cli import FINETUNE_LR


def scanner_of(image) -> str:
    """"A" when the grey-scale bar of the first scanner is at the left edge, else "B"."""
    return "A" if image[5:60, 3:12].mean() > 60 else "B"


def scanner_counts() -> dict:
    import cv2

    counts = {}
    for name, first, last in (("training block", 3744, 4300), ("validation block", 4301, 4401)):
        kinds = [scanner_of(cv2.imread(str(PSFHS / "images" / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE)) for i in range(first, last + 1)]
        counts[name] = {k: kinds.count(k) for k in ("A", "B")}
    return counts


KEYS = ("dice_ps", "dice_fh", "dice_all", "hd", "asd", "aop_error", "score")


def measure(weights: str, data: Path, work: Path, *flags: str) -> dict:
    preds = work / "preds"
    shutil.rmtree(preds, ignore_errors=True)
    iugc("baseline", "predict", "--input", str(data / "images"), "--output", str(preds), "--weights", weights, *flags)
    iugc("evaluate", "--predictions", str(preds), "--ground-truth", str(data), "--challenge", "psfhs2023",
         "--out", str(work / "r.json"), "--quiet", "--no-cache")
    result = json.loads((work / "r.json").read_text())
    agg = result["aggregates"]
    return {**{k: agg[k] for k in KEYS[:-1]}, "score": result["score"], "n_cases": agg["n_cases"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--epochs", default="10")
    parser.add_argument("--lr", nargs="+", default=[str(FINETUNE_LR)], help="Peak learning rates, one fine-tune each.")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "scanner")
    args = parser.parse_args()
    print("frames per scanner:", scanner_counts(), flush=True)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dataset = make_dataset(work, "train=04302-04343,validation=04344-04401", subset=True)
    held_out, _ = split_subsets(dataset, work, "validation")
    before = measure(args.weights, held_out, work)
    before_plain = measure(args.weights, held_out, work, "--smooth", "0")
    adapted = measure(args.weights, held_out, work, "--adapt-bn")  # no labels: BatchNorm statistics of the held-out frames
    rows = [("before fine-tuning", before), ("before, --smooth 0", before_plain), ("AdaBN, no labels", adapted)]
    for lr in args.lr:
        run = work / f"run-lr{lr}"
        iugc("baseline", "finetune", "--from", args.weights, "--data", str(dataset), "--out", str(run),
             "--epochs", args.epochs, "--lr", lr, "--seed", "0")
        # last.pt, not best.pt: best.pt is chosen on the validation split, which is the held-out block here
        rows.append((f"after, lr {lr}", measure(str(run / "last.pt"), held_out, work)))
        # fine-tuning trains on unsmoothed frames, as training does; prediction smooths by default (baseline.frames.SMOOTH)
        rows.append((f"after, lr {lr}, --smooth 0", measure(str(run / "last.pt"), held_out, work, "--smooth", "0")))
    print(f"second scanner, held-out ids 04344-04401 ({before['n_cases']} frames); "
          f"fine-tuned on ids 04302-04343 (+ generated non-standard frames) for {args.epochs} epochs, last epoch kept")
    print(f"{'':<30}" + " ".join(f"{k:>10}" for k in KEYS))
    for name, figures in rows:
        print(f"{name:<30}" + " ".join(f"{figures[k]:>10.4f}" for k in KEYS))


if __name__ == "__main__":
    main()
