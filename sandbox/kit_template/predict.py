"""The submission's entry point: reads /input, writes /output, as the platform's contract says.

The platform runs this once per evaluation, as the image's non-root user, with no network,
a read-only filesystem except /output and /tmp, and the phase's time and memory limits:

    /input/cases.json              {"challenge": ..., "tasks": [...], "cases": [{"case_id": "03744",
                                     "image": "images/03744.png", "height": 256, "width": 256, ...}]}
    /input/images/<case_id>.png    8-bit grey frame
    /output/<case_id>.png          your mask: 8-bit, the frame's size, 0 background,
                                   1 pubic symphysis, 2 fetal head
    /output/predictions.json       {"<case_id>": {"p_standard_plane": 0.93}} (challenges
                                   that classify standard planes)
    /output/landmarks.json         {"<case_id>": {"PS1": [x, y], "PS2": [x, y], "FH1": [x, y]}}
                                   instead of masks, for landmark challenges (IUGC 2025), in
                                   the input frame's pixels

Put your model into ``predict`` (masks) or ``predict_landmarks`` (landmark challenges)
below; the rest reads and writes the files for you.
Try it without Docker:  IUGC_INPUT=some/input IUGC_OUTPUT=out python3 predict.py
"""
import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

# Written by `iugc kit new` from the challenge definition.
CHALLENGE = "{{CHALLENGE}}"
TASKS = "{{TASKS}}".split(",")


# =====================================================================================
# YOUR MODEL GOES HERE
# =====================================================================================
def predict(frame):
    """One frame in, its mask and p(standard plane) out.

    ``frame``: (H, W) uint8 grey image. Return ``(mask, p)``: ``mask`` (H, W) with 0
    background, 1 pubic symphysis, 2 fetal head; ``p`` in [0, 1], the probability that
    the frame is a standard plane (unused where the challenge does not classify).

    Load your weights once, at module level, from files the Dockerfile copies into the
    image (nothing can be downloaded when it runs). The stand-in below draws two fixed
    ellipses where the structures usually lie: a valid answer, not a useful one.

    >>> mask, p = predict(np.zeros((256, 256), np.uint8))
    >>> mask.shape, sorted(np.unique(mask).tolist()), p
    ((256, 256), [0, 1, 2], 0.5)
    """
    height, width = frame.shape
    mask = np.zeros((height, width), np.uint8)
    mask[_ellipse(frame.shape, (0.52 * width, 0.55 * height), (0.27 * width, 0.22 * height), 0)] = 2
    mask[_ellipse(frame.shape, (0.40 * width, 0.17 * height), (0.115 * width, 0.06 * height), -15)] = 1
    return mask, 0.5


def predict_landmarks(frame):
    """Landmark challenges (IUGC 2025): one frame in, its three landmarks out, as (x, y)
    pixels of the frame: PS1 and PS2, the upper and lower ends of the pubic symphysis'
    long axis, and FH1, where the line from PS2 touches the fetal head.

    The stand-in puts them where they usually lie: a valid answer, not a useful one.

    >>> predict_landmarks(np.zeros((256, 256), np.uint8))["PS2"]
    (133.12, 53.76)
    """
    height, width = frame.shape
    return {"PS1": (0.29 * width, 0.2 * height), "PS2": (0.52 * width, 0.21 * height), "FH1": (0.78 * width, 0.42 * height)}
# =====================================================================================


def _ellipse(shape, center, axes, angle_degrees):
    """Boolean (H, W) image of a filled ellipse (centre and half-axes in pixels, x first)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    theta = np.deg2rad(angle_degrees)
    x, y = xx - center[0], yy - center[1]
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1


def main():
    input_dir = Path(os.environ.get("IUGC_INPUT", "/input"))
    output_dir = Path(os.environ.get("IUGC_OUTPUT", "/output"))
    cases = json.loads((input_dir / "cases.json").read_text())["cases"]
    answers = {}
    for case in cases:
        case_id = case["case_id"]
        try:  # one failing case must not cost the others: it is scored as the worst case
            frame = np.asarray(Image.open(input_dir / case["image"]).convert("L"))
            if "landmarks" in TASKS:
                answers[case_id] = {name: [float(x), float(y)] for name, (x, y) in predict_landmarks(frame).items()}
            else:
                mask, p = predict(frame)
                Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(output_dir / f"{case_id}.png")
                answers[case_id] = {"p_standard_plane": float(p)}
        except Exception:
            print(f"case {case_id} failed:\n{traceback.format_exc()}", file=sys.stderr)
    if "landmarks" in TASKS:
        (output_dir / "landmarks.json").write_text(json.dumps(answers))
    elif "classification" in TASKS:
        (output_dir / "predictions.json").write_text(json.dumps(answers))
    print(f"predicted {len(answers)} of {len(cases)} cases")
    return 0 if answers or not cases else 1


if __name__ == "__main__":
    sys.exit(main())
