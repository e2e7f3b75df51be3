"""Where the baseline's angle-of-progression error comes from.

    python benchmarks/angle_errors.py [--weights default] [--every 5]

For the validation block (PSFHS ids 04301-04401, the second scanner) and, for contrast,
every 5th training frame (03744-04300, seen in training), with the default
post-processing and the PSFHS ellipse AoP:

- dAoP from the predicted masks (mean, median);
- dAoP when one structure is swapped for the expert's: the true PS with the predicted FH
  (what is left is the head's share of the error) and the predicted PS with the true FH
  (the symphysis' share);
- the signed error (predicted minus true AoP: median, share of frames over-estimated);
- Dice of PS and the predicted PS area over the expert's (median);
- how far the predicted symphysis' axis (the major axis of its ellipse, the AoP's first
  arm) is turned from the expert's (signed median, degrees).

A frame whose AoP cannot be measured counts as the worst case (180 degrees) in the means,
as in the evaluator. A frame whose expert masks give no AoP (a structure missing from the
annotation) has nothing to compare with: it is left out and counted. Needs ../shared/data/psfhs.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PSFHS = ROOT.parent / "shared" / "data" / "psfhs"
WORST = 180.0


def swapped(pred: np.ndarray, truth: np.ndarray, label: int) -> np.ndarray:
    """``pred`` with structure ``label`` replaced by the expert's (the other one kept where it does not overlap)."""
    out = pred.copy()
    out[out == label] = 0
    out[truth == label] = label
    return out


def main() -> None:
    from tqdm import tqdm

    from baseline.predict import load_model, predict_frame
    from challenge.biometry import biometry
    from challenge.labels import FH, PS
    from data_manifest.io import read_image, read_mask

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--every", type=int, default=5, help="take every N-th training frame for the contrast row")
    args = parser.parse_args()
    if not (PSFHS / "images").is_dir():
        raise SystemExit(f"{PSFHS}: the PSFHS frames are needed (see its README)")
    torch.set_num_threads(1)  # figures, not speed: one thread leaves a core for other work
    model, size = load_model(args.weights)

    def ellipse(mask):
        return biometry(mask, "ellipse")

    def aop(fit):
        return None if fit.aop is None else float(fit.aop)

    def axis(fit):
        """Direction of the symphysis' ellipse axis, degrees (an axis: modulo 180), or None."""
        ends = fit.ps_endpoints
        return None if ends is None else math.degrees(math.atan2(ends[1][1] - ends[0][1], ends[1][0] - ends[0][0]))

    def turn(pred_fit, truth_fit):
        a, b = axis(pred_fit), axis(truth_fit)
        return np.nan if a is None or b is None else (a - b + 90) % 180 - 90

    def error(value, truth):
        return WORST if value is None else abs(value - truth)

    print(f"weights {args.weights}; ellipse AoP; degrees")
    print(f"{'frames':<26} {'n':>4} {'dAoP mean':>9} {'median':>7} {'true PS':>8} {'true FH':>8} "
          f"{'signed med':>10} {'over':>5} {'Dice PS':>7} {'PS area':>7} {'PS turn':>7}")
    blocks = [("validation 04301-04401", range(4301, 4402)), (f"training, every {args.every}th", range(3744, 4301, args.every))]
    for name, ids in blocks:
        rows, unmeasurable = [], 0
        for i in tqdm(ids, desc=name, leave=False):
            image, truth = read_image(PSFHS / "images" / f"{i:05d}.png"), read_mask(PSFHS / "masks" / f"{i:05d}.png")
            truth_fit = ellipse(truth)  # each mask's ellipses fitted once, for its AoP and its axis
            true_aop = aop(truth_fit)
            if true_aop is None:  # nothing to compare with: not worth a prediction
                unmeasurable += 1
                continue
            pred, _ = predict_frame(model, size, image)
            pred_fit = ellipse(pred)
            predicted = aop(pred_fit)
            ps_pred, ps_true = pred == PS, truth == PS
            rows.append((
                error(predicted, true_aop),
                error(aop(ellipse(swapped(pred, truth, PS))), true_aop),  # true PS, predicted FH
                error(aop(ellipse(swapped(pred, truth, FH))), true_aop),  # predicted PS, true FH
                np.nan if predicted is None else predicted - true_aop,
                2 * (ps_pred & ps_true).sum() / (ps_pred.sum() + ps_true.sum()),
                ps_pred.sum() / ps_true.sum(),
                turn(pred_fit, truth_fit),
            ))
        r = np.array(rows)
        signed = r[:, 3][~np.isnan(r[:, 3])]
        print(f"{name:<26} {len(r):>4} {r[:, 0].mean():>9.2f} {np.median(r[:, 0]):>7.2f} {r[:, 1].mean():>8.2f} "
              f"{r[:, 2].mean():>8.2f} {np.median(signed):>+10.2f} {(signed > 0).mean():>5.2f} {r[:, 4].mean():>7.3f} "
              f"{np.median(r[:, 5]):>7.2f} {np.nanmedian(r[:, 6]):>+7.2f}" + (f"  ({unmeasurable} left out: no expert AoP)" if unmeasurable else ""))
    print("true PS: dAoP mean with the expert's symphysis and the predicted head (the head's share); "
          "true FH: the predicted symphysis with the expert's head (the symphysis' share); "
          "over: share of frames whose AoP is over-estimated; PS area: predicted over expert (median); "
          "PS turn: the predicted symphysis axis minus the expert's (median, degrees)")


if __name__ == "__main__":
    main()
