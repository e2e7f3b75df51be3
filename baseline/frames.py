"""Frame preprocessing shared by the PyTorch and ONNX Runtime paths (no PyTorch here)."""
from __future__ import annotations

import cv2
import numpy as np


def to_network(image: np.ndarray, size: int) -> np.ndarray:
    """Grey uint8 (H, W) -> float32 (size, size) in [0, 1]."""
    interpolation = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation).astype(np.float32) / 255.0


def to_input_size(small_mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A network-size label mask back to the frame's (H, W) with nearest neighbour."""
    return cv2.resize(small_mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
