"""Frame preprocessing shared by the PyTorch and ONNX Runtime paths (no PyTorch here)."""
from __future__ import annotations

import cv2
import numpy as np

SMOOTH = 1.0
"""Default Gaussian sigma, in network pixels, with which prediction smooths each frame.

Training does not smooth every frame (its augmentation blurs 30% of them, sigma 0.5-1.5,
so the network knows smoothed frames). On the scanner it was not trained on (the PSFHS
validation block) the speckle is finer from top to bottom, and the network outlines only
the bright streaks inside the pubic symphysis, too small a structure, which over-estimates
the angle; a light low-pass before the network makes the symphysis whole again (its
area 0.81 -> 0.95 of the expert's; model card), and leaves the training scanner's frames
as they were (the smoothing study in docs/baseline.md)."""


def to_network(image: np.ndarray, size: int, smooth: float = 0.0) -> np.ndarray:
    """Grey uint8 (H, W) -> float32 (size, size) in [0, 1].

    ``smooth`` >= 0 is the sigma, in pixels of the resized frame, of a Gaussian low-pass
    applied after resizing (0: none; prediction uses :data:`SMOOTH`).

    >>> frame = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)  # a checkerboard
    >>> float(to_network(frame, 64).std()) > 0.49, float(to_network(frame, 64, smooth=1.0).std()) < 0.01
    (True, True)
    """
    if not smooth >= 0:
        raise ValueError(f"smooth must be a sigma >= 0 (network pixels), got {smooth}")
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    x = cv2.resize(image, (size, size), interpolation=interpolation).astype(np.float32) / 255.0
    return cv2.GaussianBlur(x, (0, 0), smooth, borderType=cv2.BORDER_REFLECT) if smooth else x


def to_input_size(small_mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A network-size label mask back to the frame's (H, W) with nearest neighbour."""
    return cv2.resize(small_mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
