"""Why prediction smooths each frame (``baseline.frames.SMOOTH``), and how much.

    python benchmarks/smoothing.py [--weights default] [--sigmas 0,0.5,1,1.5,2]

Two parts, on the PSFHS frames:

1. Speckle grain per scanner: the lag, in pixels, at which the autocorrelation of a
   frame's fine texture (the frame minus a Gaussian blur of sigma 6, inside the scanned
   sector) falls to one half, across (x) and down (y); median over the frames. The
   validation block's second scanner (ids 04302-04401) against every 10th training frame
   (03744-04300, the first scanner), and the second scanner after the default smoothing.
2. The sweep the default was chosen on: for each Gaussian sigma (network pixels, as
   ``iugc baseline predict --smooth``), the mean and median ellipse dAoP (a frame without
   a measurable AoP counts 180 degrees, as in the evaluator), Dice PS and Dice all
   (``evaluator.scores``), on the first half of the validation block (04301-04351, where
   sigma 1 was chosen), on its second half (04352-04401, the check), and on every 5th
   training frame (the first scanner: smoothing should leave it alone).

Default post-processing throughout. Needs ../shared/data/psfhs; about 3 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PSFHS = ROOT.parent / "shared" / "data" / "psfhs"


def _half_width(correlation: np.ndarray) -> float:
    """First lag (linearly interpolated) at which a correlation profile falls below 0.5."""
    for lag in range(1, len(correlation)):
        if correlation[lag] < 0.5:
            before, after = correlation[lag - 1], correlation[lag]
            return float(lag - 1 + (before - 0.5) / (before - after))
    return float(len(correlation))


def speckle_grain(frame: np.ndarray) -> tuple[float, float]:
    """(across, down): half-widths in pixels of the autocorrelation of a grey frame's fine
    texture, inside the scanned sector (where the local mean is above 8 grey levels, less a
    6 px margin), normalised by the sector's own autocorrelation so its edges do not count.

    >>> rng = np.random.default_rng(0)
    >>> fine = cv2.GaussianBlur(rng.normal(128, 40, (128, 128)).astype(np.float32), (0, 0), 1.0)
    >>> coarse = cv2.GaussianBlur(rng.normal(128, 40, (128, 128)).astype(np.float32), (0, 0), 2.0)
    >>> bool(speckle_grain(fine)[0] < speckle_grain(coarse)[0])
    True
    """
    x = frame.astype(np.float32)
    local_mean = cv2.GaussianBlur(x, (0, 0), 6)
    sector = cv2.erode((local_mean > 8).astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool)
    texture = np.where(sector, x - local_mean, 0)
    texture[sector] -= texture[sector].mean()
    pad = (2 * x.shape[0], 2 * x.shape[1])

    def autocorrelation(values):
        spectrum = np.fft.fft2(values, s=pad)
        out = np.fft.ifft2(np.abs(spectrum) ** 2).real
        return out / out[0, 0]

    correlation = autocorrelation(texture) / np.maximum(autocorrelation(sector.astype(np.float32)), 1e-3)
    reach = min(20, x.shape[0] // 4, x.shape[1] // 4)
    return _half_width(correlation[0, :reach]), _half_width(correlation[:reach, 0])


def main() -> None:
    from tqdm import tqdm

    from baseline.frames import SMOOTH, to_network
    from baseline.predict import load_model, predict_frame
    from challenge.biometry import biometry
    from challenge.definition import load_challenge
    from data_manifest.io import read_image, read_mask
    from evaluator.scores import biometry_values, segmentation_values

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    parser.add_argument("--sigmas", default="0,0.5,1,1.5,2", help="comma-separated Gaussian sigmas (network pixels)")
    args = parser.parse_args()
    if not (PSFHS / "images").is_dir():
        raise SystemExit(f"{PSFHS}: the PSFHS frames are needed (see its README)")
    sigmas = [float(s) for s in args.sigmas.split(",")]
    torch.set_num_threads(1)  # figures, not speed

    def frame(i):
        return read_image(PSFHS / "images" / f"{i:05d}.png")

    print("1. speckle grain: autocorrelation half-width, pixels (median; 10th-90th percentile)")

    def as_smoothed(image):  # what the network sees, back in grey levels (PSFHS frames are square)
        return to_network(image, image.shape[0], SMOOTH) * 255

    for name, ids, smooth in (("first scanner, training every 10th", range(3744, 4301, 10), False),
                              ("second scanner, 04302-04401", range(4302, 4402), False),
                              (f"second scanner, smoothed sigma {SMOOTH:g}", range(4302, 4402), True)):
        grains = np.array([speckle_grain(as_smoothed(frame(i)) if smooth else frame(i)) for i in ids])
        across, down = (f"{np.median(g):.2f} ({np.percentile(g, 10):.2f}-{np.percentile(g, 90):.2f})" for g in grains.T)
        print(f"  {name:<40} across {across}  down {down}")

    model, size = load_model(args.weights)
    psfhs = load_challenge("psfhs2023")
    sets = (("validation 04301-04351 (chosen on)", range(4301, 4352)), ("validation 04352-04401 (check)", range(4352, 4402)),
            ("training, every 5th", range(3744, 4301, 5)))
    print(f"\n2. weights {args.weights}: mean dAoP (ellipse, degrees) / median / Dice PS / Dice all, per smoothing sigma")
    print(f"  {'frames':<36}" + "".join(f"{'sigma ' + format(s, 'g'):>30}" for s in sigmas))
    for name, ids in sets:
        cases = [(frame(i), read_mask(PSFHS / "masks" / f"{i:05d}.png")) for i in ids]
        truths = [biometry(truth, "ellipse") for _, truth in cases]
        cells = []
        for sigma in tqdm(sigmas, desc=name, leave=False):
            errors, dice_ps, dice_all = [], [], []
            for (image, truth), truth_fit in zip(cases, truths):
                pred, _ = predict_frame(model, size, image, smooth=sigma)
                errors.append(biometry_values(biometry(pred, "ellipse"), truth_fit, psfhs)["aop_error"])
                values = segmentation_values(pred, truth)
                dice_ps.append(values["dice_ps"])
                dice_all.append(values["dice_all"])
            errors = [e for e in errors if e is not None]  # None: the expert's masks give no AoP either
            cells.append(f"{np.mean(errors):.2f} / {np.median(errors):.2f} / {np.mean(dice_ps):.3f} / {np.mean(dice_all):.3f}")
        print(f"  {name:<36}" + "".join(f"{c:>30}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
