"""Read and write frames and label masks in the formats the platform accepts.

Masks: ``.png``, ``.mha``/``.mhd``, ``.nii``/``.nii.gz``; raw IUGC 7/8 labels are remapped
to the canonical 0/1/2. Images: the same formats; a 3-channel frame (channel-first as in the
PSFHS release, or channel-last) becomes grey.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from challenge.labels import LabelError, canonical_labels

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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def is_new_folder(path: str | Path) -> bool:
    """True when ``path`` does not exist or is an empty folder: a place a staged folder may go."""
    path = Path(path)
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def stage_folder(dest: str | Path) -> Path:
    """Make and return an empty hidden sibling of ``dest`` to fill; :func:`commit_folder` moves it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))


def commit_folder(staging: Path, dest: str | Path) -> None:
    """Rename the filled ``staging`` folder to ``dest`` (absent or empty): its files appear together."""
    dest = Path(dest)
    if dest.exists():
        dest.rmdir()  # OSError unless empty: a staged folder never replaces anything
    staging.rename(dest)


@contextlib.contextmanager
def staged_folder(dest: str | Path):
    """Yield an empty sibling folder of ``dest``; when the block ends it becomes ``dest``, and
    when the block raises (an error, Ctrl-C) it is removed, so ``dest`` is never half-written.

    >>> import tempfile
    >>> dest = Path(tempfile.mkdtemp()) / "report"
    >>> with staged_folder(dest) as folder:
    ...     _ = (folder / "a.txt").write_text("a")
    >>> sorted(p.name for p in dest.iterdir())
    ['a.txt']
    """
    staging = stage_folder(dest)
    try:
        yield staging
        commit_folder(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
