import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PSFHS = ROOT.parent / "shared" / "data" / "psfhs"


def _require(path: Path, what: str) -> Path:
    if path.is_dir():
        return path
    message = f"{what} not found at {path} (it lives beside the checkout as ../shared/data/psfhs)"
    if os.environ.get("IUGC_REQUIRE_SHARED_DATA") == "1":
        pytest.fail(message + "; IUGC_REQUIRE_SHARED_DATA=1 makes this a failure")
    pytest.skip(message)


@pytest.fixture(scope="session")
def psfhs_dir() -> Path:
    return _require(PSFHS, "real PSFHS data")


def real_mask_paths(limit: int | None = None) -> list[Path]:
    paths = sorted((PSFHS / "masks").glob("*.png"))
    return paths[:limit] if limit else paths


def degrade(mask: np.ndarray, index: int) -> np.ndarray:
    """A deterministic imperfect prediction: shifts, erosion/dilation, a dropped structure."""
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    out = np.roll(mask, ((index % 5) - 2, (index % 7) - 3), axis=(0, 1))
    if index % 3 == 0:
        out = cv2.dilate(out, kernel, iterations=1 + index % 2)
    elif index % 3 == 1:
        out = cv2.erode(out, kernel, iterations=1 + index % 2)
    if index % 17 == 0:
        out[out == 1] = 0
    return out.astype(np.uint8)


def link_frames(target: Path, ids: list[str] | None = None, limit: int | None = None, psfhs: Path = PSFHS) -> Path:
    """``target/images`` and ``target/masks`` linking real frames (``ids``, else the first
    ``limit``), a PNG release for `iugc data import --layout png`; returns ``target``."""
    if ids is None:
        ids = [p.stem for p in real_mask_paths(limit)]
    for sub in ("images", "masks"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        for case_id in ids:
            (target / sub / f"{case_id}.png").symlink_to(psfhs / sub / f"{case_id}.png")
    return target
