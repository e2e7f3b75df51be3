"""Headline figures: what each benchmark reports to ``make bench`` (``benchmarks/run_all.py``).

A benchmark calls :func:`emit` for each headline figure with the reference it measured in
the same run (SimpleITK for the evaluator, PyTorch for ONNX Runtime, float32 for bfloat16,
a static file for the web pages ...). A figure with no natural reference is compared with
:func:`yardstick`: a fixed NumPy/OpenCV workload timed in the same process, which says how
fast the machine is right now. Ratios, not seconds, are what stay comparable between
sittings on a shared machine.

Outside ``make bench`` (no ``IUGC_BENCH_ROWS`` in the environment) :func:`emit` does nothing.
"""
from __future__ import annotations

import json
import os
import statistics
import time

ROWS_ENV = "IUGC_BENCH_ROWS"


def emit(key: str, part: str, value: float, unit: str, reference: str, reference_value: float,
         *, higher_is_better: bool = False) -> None:
    """Record one headline figure and its same-run reference for ``make bench``.

    ``key`` names the figure in ``benchmarks/headline.json`` (the ratios as last documented);
    the ratio is ``value / reference_value``.
    """
    path = os.environ.get(ROWS_ENV)
    if not path:
        return
    row = {"key": key, "part": part, "value": value, "unit": unit, "reference": reference,
           "reference_value": reference_value, "higher_is_better": higher_is_better}
    with open(path, "a") as rows:
        rows.write(json.dumps(row) + "\n")


def yardstick(repeats: int = 5) -> float:
    """Seconds (median) of a fixed CPU workload: 40 distance transforms and contour searches
    of a 512x512 ellipse mask, one thread. About 0.1 s on the 2-core CI machine."""
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    mask = np.zeros((512, 512), np.uint8)
    cv2.ellipse(mask, (256, 256), (180, 120), 30, 0, 360, 1, -1)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(40):
            cv2.distanceTransform(mask, cv2.DIST_L2, 5)
            cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            np.sort(mask, axis=None)
        times.append(time.perf_counter() - began)
    return statistics.median(times)
