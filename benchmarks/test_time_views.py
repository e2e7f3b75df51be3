"""What test-time changes do for the baseline on the validation block (a second scanner).

    python benchmarks/test_time_views.py [--weights default]

Side by side on the 101 real validation frames (PSFHS ids 04301-04401), one network, the
default smoothing and post-processing (as `iugc baseline predict`: each view is smoothed
after it is resized for the network), figures through the evaluator (psfhs2023, ellipse AoP):

- as trained;
- zoom about the probe: the network sees the top-centre 1/z of the frame (z > 1, closer)
  or the frame padded to 1/z (z < 1, farther), its probabilities mapped back, alone or
  averaged with the whole frame's where they overlap;
- shifted down by d px (so the symphysis lies deeper, as on the first scanner);
- AdaBN: BatchNorm statistics re-estimated on these frames (`--adapt-bn`).

p(standard plane) comes from the whole frame throughout. Needs ../shared/data/psfhs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PSFHS = ROOT.parent / "shared" / "data" / "psfhs"


def network_probs(model, size: int, image: np.ndarray) -> tuple[np.ndarray, float]:
    """Class probabilities (3, H, W) at the image's size and the standard-plane logit."""
    from baseline.frames import SMOOTH, to_network

    with torch.no_grad():
        logits, standard = model(torch.from_numpy(to_network(image, size, SMOOTH))[None, None])
    h, w = image.shape
    probs = logits.softmax(1)[0].numpy()
    return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in probs]), float(standard[0])


def zoomed(model, size: int, image: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (3, H, W) from the top-centre 1/zoom of the frame (or the frame padded
    to 1/zoom when zoom < 1), and where they cover the frame (H, W)."""
    h, w = image.shape
    ch, cw = int(round(h / zoom)), int(round(w / zoom))
    if zoom >= 1:
        left = (w - cw) // 2
        probs, _ = network_probs(model, size, image[:ch, left:left + cw])
        full = np.zeros((3, h, w), np.float32)
        full[0] = 1
        full[:, :ch, left:left + cw] = probs
        cover = np.zeros((h, w), np.float32)
        cover[:ch, left:left + cw] = 1
        return full, cover
    left = (cw - w) // 2
    padded = cv2.copyMakeBorder(image, 0, ch - h, left, cw - w - left, cv2.BORDER_CONSTANT, value=0)
    probs, _ = network_probs(model, size, padded)
    return probs[:, :h, left:left + w], np.ones((h, w), np.float32)


def shifted(model, size: int, image: np.ndarray, down: int) -> np.ndarray:
    """Probabilities (3, H, W) of the frame moved ``down`` px (black above), moved back."""
    h = image.shape[0]
    moved = cv2.copyMakeBorder(image, down, 0, 0, 0, cv2.BORDER_CONSTANT, value=0)[:h]
    probs, _ = network_probs(model, size, moved)
    out = np.zeros_like(probs)
    out[0] = 1
    out[:, :h - down] = probs[:, down:]
    return out


def main() -> None:
    from baseline.postprocess import finish
    from baseline.predict import adapt_batchnorm, load_model
    from challenge.biometry import biometry
    from challenge.definition import load_challenge
    from data_manifest.io import read_image, read_mask
    from evaluator.scores import CaseTable, aggregate, biometry_values, challenge_score, segmentation_values

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="default")
    args = parser.parse_args()
    if not (PSFHS / "images").is_dir():
        raise SystemExit(f"{PSFHS}: the PSFHS frames are needed (see its README)")
    torch.set_num_threads(1)  # figures, not speed: one thread leaves a core for other work
    challenge = load_challenge("psfhs2023")
    model, size = load_model(args.weights)
    cases = [(read_image(PSFHS / "images" / f"{i:05d}.png"), read_mask(PSFHS / "masks" / f"{i:05d}.png")) for i in range(4301, 4402)]
    truths = [biometry(truth, "ellipse") for _, truth in cases]
    wholes = [network_probs(model, size, image) for image, _ in cases]  # the whole frame, once: every view needs its logit

    def report(name: str, predict) -> None:
        table = {}
        for index, ((image, truth), truth_aop, whole) in enumerate(zip(cases, truths, wholes)):
            probs, logit = predict(image, whole)
            mask, _ = finish(probs, 1 / (1 + np.exp(-logit)), truth.shape)
            values = segmentation_values(mask, truth)
            values.update(biometry_values(biometry(mask, "ellipse"), truth_aop, challenge))
            table[str(index)] = values
        agg = aggregate(CaseTable.from_cases(table), challenge)
        median = np.median([v["aop_error"] for v in table.values()])
        print(f"{name:<34} {agg['dice_all']:.4f} {agg['dice_ps']:.4f} {agg['hd']:7.2f} {agg['aop_error']:7.2f} {median:7.2f} "
              f"{challenge_score(agg, challenge)[0]:.4f}", flush=True)

    def views(zooms):
        def predict(image, whole_and_logit):
            whole, logit = whole_and_logit
            total, cover = np.zeros_like(whole), np.zeros(image.shape, np.float32)
            for zoom in zooms:
                probs, where = (whole, np.ones(image.shape, np.float32)) if zoom == 1 else zoomed(model, size, image, zoom)
                total += probs * where
                cover += where
            probs = total / np.maximum(cover, 1)
            probs[0][cover == 0] = 1  # a crop alone does not see the frame's edges: background there
            return probs, logit
        return predict

    print(f"weights {args.weights}; 101 validation frames; Dice(all) Dice(PS) HD dAoP(mean) dAoP(median) PSFHS-score")
    for zooms in [(1.0,), (1.2,), (1.4,), (0.85,), (1.0, 1.2), (1.0, 1.2, 1.4), (0.85, 1.0, 1.2)]:
        report("zoom " + "+".join(f"{z:g}" for z in zooms), views(zooms))
    for down in (10, 20, 30):
        report(f"shifted down {down} px", lambda image, whole, d=down: (shifted(model, size, image, d), whole[1]))
    adapted = adapt_batchnorm(model, [image for image, _ in cases], size)
    report("AdaBN (these 101 frames)", lambda image, whole: network_probs(adapted, size, image))


if __name__ == "__main__":
    main()
