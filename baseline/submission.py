"""The baseline as a submission: reads ``/input``, writes ``/output`` (docs/submission.md).

This is the entry point of the ``iugc/baseline`` image and of ``--runner local``. It needs
only NumPy, OpenCV and ONNX Runtime (no PyTorch, no platform packages beyond the
baseline's pre/post-processing, the label schema and the AoP geometry). For a landmark
challenge (``"tasks": ["landmarks"]`` in ``cases.json``) it writes ``landmarks.json``, the
points its masks' AoP construction finds, instead of the masks:

    python -m iugc.baseline.submission --input /input --output /output [--model model.onnx]

The model is ``--model``, else ``$IUGC_MODEL``, else ``/opt/iugc/model.onnx`` (inside the
image), else an ONNX export of the committed default weights, made once and cached.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2

from iugc.challenge.outputs import LANDMARKS_FILE, PROBABILITIES_FILE

IMAGE_MODEL = Path("/opt/iugc/model.onnx")
BATCH = 8


def default_model() -> Path:
    if os.environ.get("IUGC_MODEL"):
        return Path(os.environ["IUGC_MODEL"])
    if IMAGE_MODEL.is_file():
        return IMAGE_MODEL
    from iugc.baseline.export import cached_default_onnx  # needs PyTorch: only outside the image

    return cached_default_onnx()


def run(input_dir: Path, output_dir: Path, model: Path, threads: int | None = None) -> int:
    from iugc.baseline.onnx_predict import OnnxPredictor

    from iugc.challenge.landmarks import landmarks_from_mask

    listing = json.loads((input_dir / "cases.json").read_text())
    wants_landmarks = "landmarks" in listing.get("tasks", ())  # IUGC 2025: landmarks.json instead of masks
    predictor = OnnxPredictor(model, threads=threads)
    answers, failed = {}, 0
    cases = listing["cases"]
    for start in range(0, len(cases), BATCH):
        batch, frames = [], []
        for case in cases[start:start + BATCH]:
            frame = cv2.imread(str(input_dir / case["image"]), cv2.IMREAD_GRAYSCALE)
            if frame is None:  # one unreadable frame must not stop the others
                print(f"case {case['case_id']}: frame unreadable, skipped", file=sys.stderr)
                failed += 1
                continue
            batch.append(case)
            frames.append(frame)
        if not frames:
            continue
        for case, (mask, p) in zip(batch, predictor.predict_batch(frames)):
            if wants_landmarks:  # the points the mask's AoP construction finds; none where it has no AoP
                points = landmarks_from_mask(mask)
                if points is not None:
                    answers[case["case_id"]] = {name: [round(x, 3), round(y, 3)] for name, (x, y) in points.items()}
            else:
                cv2.imwrite(str(output_dir / f"{case['case_id']}.png"), mask)
                answers[case["case_id"]] = {"p_standard_plane": round(p, 6)}
    (output_dir / (LANDMARKS_FILE if wants_landmarks else PROBABILITIES_FILE)).write_text(json.dumps(answers))
    print(f"predicted {len(answers)} of {len(cases)} cases")
    return 1 if failed and not answers else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path(os.environ.get("IUGC_INPUT", "/input")))
    parser.add_argument("--output", type=Path, default=Path(os.environ.get("IUGC_OUTPUT", "/output")))
    parser.add_argument("--model", type=Path, default=None)
    cpus = os.environ.get("IUGC_CPUS")  # the container's CPU limit, set by the runner
    parser.add_argument("--threads", type=int, default=max(1, round(float(cpus))) if cpus else None,
                        help="ONNX Runtime threads (default: $IUGC_CPUS, else all cores)")
    args = parser.parse_args(argv)
    return run(args.input, args.output, args.model or default_model(), args.threads)


if __name__ == "__main__":
    sys.exit(main())
