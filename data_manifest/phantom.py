"""Synthetic transperineal ultrasound phantoms (``iugc data phantom``).

Frames look ultrasound-like -- a fan-shaped field of view, multiplicative Rayleigh
speckle, depth attenuation -- with a bright elongated pubic symphysis and a fetal head
with a bright skull rim. Standard frames show both structures; non-standard frames miss
the PS, the FH, or both (probe lift-off: dark speckle). Every frame carries the word
SYNTHETIC burnt into a corner, every manifest says ``synthetic: true``: phantoms exist
for demos and tests where real data cannot go, never for reporting results.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np

from iugc.challenge.biometry import contour_biometry
from iugc.challenge.labels import FH, PS
from iugc.data_manifest.importers import SYNTHETIC_MARKER, DatasetWriter
from iugc.data_manifest.manifest import Manifest

KINDS = ("standard", "no_ps", "no_fh", "lift_off")
NONSTANDARD_KINDS = KINDS[1:]


def _fan(size: int) -> np.ndarray:
    """Boolean fan-shaped field of view, apex above the top edge."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    apex_x, apex_y = size / 2, -0.3 * size
    radius = np.hypot(xx - apex_x, yy - apex_y)
    angle = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    return (np.abs(angle) <= 50) & (radius >= 0.32 * size) & (radius <= 1.28 * size)


def _params(rng: np.random.Generator, size: int) -> dict:
    # Placement and sizes follow the real PSFHS frames (mean +- sd of fitted ellipses):
    # PS near the probe, upper left; the head large, below and to the right.
    return {
        "ps_center": (size * rng.normal(0.40, 0.03), size * rng.normal(0.17, 0.015)),
        "ps_axes": (size * rng.uniform(0.10, 0.13), size * rng.uniform(0.05, 0.07)),
        "ps_angle": rng.uniform(-25, -5),
        "fh_center": (size * rng.normal(0.52, 0.04), size * rng.normal(0.55, 0.03)),
        "fh_axes": (size * rng.uniform(0.25, 0.3), size * rng.uniform(0.2, 0.24)),
        "fh_angle": rng.uniform(-30, 30),
    }


def _draw(params: dict, size: int, kind: str) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    if kind in ("standard", "no_fh"):
        center = tuple(int(round(v)) for v in params["ps_center"])
        axes = tuple(int(round(v)) for v in params["ps_axes"])
        cv2.ellipse(mask, center, axes, params["ps_angle"], 0, 360, PS, -1)
    if kind in ("standard", "no_ps"):
        center = tuple(int(round(v)) for v in params["fh_center"])
        axes = tuple(int(round(v)) for v in params["fh_axes"])
        head = np.zeros_like(mask)
        cv2.ellipse(head, center, axes, params["fh_angle"], 0, 360, 1, -1)
        mask[(head == 1) & (mask == 0)] = FH
    return mask


def _render(mask: np.ndarray, fan: np.ndarray, rng: np.random.Generator, kind: str) -> np.ndarray:
    size = mask.shape[0]
    depth = np.linspace(1.0, 0.45, size)[:, None]
    tissue = 0.22 + 0.08 * cv2.GaussianBlur(rng.standard_normal((size, size)), (0, 0), 6)
    echo = np.full((size, size), 0.05 if kind == "lift_off" else 1.0) * tissue
    skull = (mask == FH).astype(np.uint8)
    rim = skull - cv2.erode(skull, np.ones((7, 7), np.uint8))
    echo[mask == FH] = 0.3
    echo[rim == 1] = 0.95
    echo[mask == PS] = 0.85
    speckle = rng.rayleigh(scale=0.8, size=(size, size))
    image = cv2.GaussianBlur(echo * depth * speckle, (0, 0), 0.8)
    image = np.clip(image * 255, 0, 255) * fan
    frame = image.astype(np.uint8)
    cv2.putText(frame, "SYNTHETIC", (4, size - 6), cv2.FONT_HERSHEY_SIMPLEX, size / 700, 200, 1, cv2.LINE_AA)
    return frame


def phantom_frame(rng: np.random.Generator, size: int = 256, kind: str = "standard", params: dict | None = None):
    """One synthetic (frame, mask) pair: uint8 (size, size) each, mask 0/1/2.

    ``kind`` is "standard" (PS and FH visible), "no_ps", "no_fh" or "lift_off" (neither).

    >>> frame, mask = phantom_frame(np.random.default_rng(0), 128)
    >>> sorted(np.unique(mask).tolist())
    [0, 1, 2]
    """
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {KINDS}")
    fan = _fan(size)
    params = params or _params(rng, size)
    mask = _draw(params, size, kind) * fan
    return _render(mask, fan, rng, kind), mask.astype(np.uint8)


def _kinds(rng: np.random.Generator, n: int, nonstandard_fraction: float) -> list[str]:
    n_non = int(round(n * nonstandard_fraction))
    kinds = ["standard"] * (n - n_non) + [NONSTANDARD_KINDS[i % 3] for i in range(n_non)]
    rng.shuffle(kinds)
    return kinds


def write_phantom_dataset(
    dest: Path, n_cases: int = 24, *, seed: int = 0, size: int = 256, nonstandard_fraction: float = 0.25
) -> Manifest:
    """A canonical dataset of synthetic frames with masks and standard-plane labels."""
    if n_cases < 1:
        raise ValueError(f"n_cases must be at least 1, got {n_cases}")
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(dest)
    try:
        for i, kind in enumerate(_kinds(rng, n_cases, nonstandard_fraction)):
            frame, mask = phantom_frame(rng, size, kind)
            writer.add(
                f"phantom{i:04d}", frame, mask, source=f"phantom:seed={seed}:{kind} (SYNTHETIC)",
                standard_plane=kind == "standard",
            )
        return writer.commit(
            Path(dest).name, "phantom", synthetic=True,
            description=f"SYNTHETIC phantom frames (seed {seed}); not real ultrasound",
        )
    except BaseException:
        writer.abort()
        raise


def write_phantom_iugc2024(
    dest: Path, n_videos: int = 2, frames_per_video: int = 8, *, seed: int = 0, size: int = 512
) -> None:
    """Synthetic clips in the raw IUGC 2024 layout (AVI, 7/8 masks, CSV, landmark.json).

    Used to test the IUGC 2024 importer end to end; every file is SYNTHETIC.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty; choose a new destination folder")
    rng = np.random.default_rng(seed)
    (dest / "videos").mkdir(parents=True, exist_ok=True)
    rows, landmarks = [], {}
    for v in range(n_videos):
        video = f"synthetic{v:02d}"
        params = _params(rng, size)
        kinds = ["standard"] * frames_per_video
        for j in rng.choice(frames_per_video, size=max(1, frames_per_video // 4), replace=False):
            kinds[int(j)] = NONSTANDARD_KINDS[int(j) % 3]
        writer = cv2.VideoWriter(str(dest / "videos" / f"{video}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size), False)
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write MJPG AVI files on this machine")
        seg = dest / "seg" / video
        seg.mkdir(parents=True, exist_ok=True)
        for index, kind in enumerate(kinds):
            params = dict(params, fh_center=(params["fh_center"][0] + rng.normal(0, 1), params["fh_center"][1] + 0.6))
            frame, mask = phantom_frame(rng, size, kind, params)
            writer.write(frame)
            raw = mask.copy()
            raw[mask == PS] = 7
            raw[mask == FH] = 8
            cv2.imwrite(str(seg / f"{index}.png"), raw)
            rows.append((video, index, int(kind == "standard")))
            if kind == "standard":
                b = contour_biometry(mask)
                landmarks[f"{video}_{index:04d}"] = {
                    "ps_points": [list(p) for p in b.ps_endpoints] if b.ps_endpoints else None,
                    "hsd_point": list(b.hsd_point) if b.hsd_point else None,
                    "aop_tangency": list(b.tangent_point) if b.tangent_point else None,
                    "aop": b.aop,
                    "hsd": b.hsd,
                }
        writer.release()
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(["video", "frame", "label"])
    out.writerows(rows)
    (dest / "classification.csv").write_text(buffer.getvalue())
    (dest / "landmark.json").write_text(json.dumps(landmarks, indent=1))
    (dest / SYNTHETIC_MARKER).write_text("Every file here is a SYNTHETIC phantom, not real ultrasound.\n")
