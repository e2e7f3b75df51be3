"""Read and write frames and label masks in the formats the platform accepts.

Masks: ``.png``, ``.mha``/``.mhd``, ``.nii``/``.nii.gz``; raw IUGC 7/8 labels are remapped
to the canonical 0/1/2. Images: the same formats; a 3-channel frame (channel-first as in the
PSFHS release, or channel-last) becomes grey.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from iugc.challenge.labels import LabelError, canonical_labels

# Every unreadable file gets its own ReadError naming it; OpenCV's and FFmpeg's log lines
# ("[ WARN:0@0.1] global grfmt_png.cpp ...", "[mjpeg @ 0x..] overread") would only repeat
# it, unasked, on stderr. FFmpeg reads its level when the first clip is opened.
cv2.setLogLevel(0)  # silent
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

MASK_SUFFIXES = (".png", ".mha", ".mhd", ".nii.gz", ".nii")
IMAGE_SUFFIXES = MASK_SUFFIXES + (".jpg", ".jpeg", ".bmp")


class ReadError(ValueError):
    """A file could not be read as a frame or a mask; the message names the file and the reason."""


def case_id_of(path: Path) -> str | None:
    """The case id of a file named ``<case_id><suffix>`` with an accepted suffix, else None."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _read_array(path: Path) -> np.ndarray:
    path = Path(path)
    lower = path.name.lower()
    if not path.is_file():
        raise ReadError(f"{path}: no such file")
    if lower.endswith((".mha", ".mhd", ".nii", ".nii.gz")):
        import SimpleITK as sitk  # imported lazily: PNG-only runs start faster

        try:
            return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as exc:
            raise ReadError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    data = np.fromfile(path, dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        raise ReadError(f"{path}: not a decodable image file")
    return array


def _squeeze_2d(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise ReadError(f"{path}: a {what} must be a single 2-D frame, got shape {array.shape}")
    return squeezed


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as canonical uint8 (H, W) with values 0/1/2.

    Raises ReadError naming the file for an unreadable file, a wrong shape or labels
    outside the schema.
    """
    path = Path(path)
    array = _read_array(path)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and path.suffix.lower() == ".png":
        if not (np.all(array[..., 0] == array[..., 1]) and np.all(array[..., 0] == array[..., 2])):
            raise ReadError(f"{path}: a mask must be single-channel, got a colour PNG of shape {array.shape}")
        array = array[..., 0]
    array = _squeeze_2d(array, path, "mask")
    try:
        return canonical_labels(array)
    except LabelError as exc:
        raise ReadError(f"{path}: {exc}") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read a frame as grey uint8 (H, W). Channel-first (3, H, W) and colour frames become grey."""
    path = Path(path)
    array = _read_array(path)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if np.all(array[..., 0] == array[..., 1]) and np.all(array[..., 0] == array[..., 2]):
            array = array[..., 0]
        else:
            array = cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_BGR2GRAY)
    array = _squeeze_2d(array, path, "frame")
    if array.dtype != np.uint8:
        lo, hi = float(array.min()), float(array.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        array = np.clip((array - lo) * scale, 0, 255).round().astype(np.uint8)
    return array


def encode_png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise ValueError(f"could not encode an array of shape {array.shape} as PNG")
    return buf.tobytes()
