"""Mask post-processing the biometry needs: the largest connected component per
structure and filled holes, each switchable."""
from __future__ import annotations

import cv2
import numpy as np

from challenge.labels import FH, PS


def largest_component(mask: np.ndarray, label: int) -> np.ndarray:
    """Keep only the largest 8-connected component of ``label`` (others become background)."""
    structure = (mask == label).astype(np.uint8)
    count, components, stats, _ = cv2.connectedComponentsWithStats(structure, connectivity=8)
    if count <= 2:
        return mask
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    out = mask.copy()
    out[(components != keep) & (structure == 1)] = 0
    return out


def fill_holes(mask: np.ndarray, label: int) -> np.ndarray:
    """Fill background holes enclosed by ``label`` (holes touching the border stay)."""
    outside = (mask != label).astype(np.uint8)
    count, components = cv2.connectedComponents(outside, connectivity=4)
    border = set(np.unique(np.concatenate([components[0], components[-1], components[:, 0], components[:, -1]])).tolist())
    holes = (outside == 1) & ~np.isin(components, list(border))
    out = mask.copy()
    out[holes & (mask == 0)] = label
    return out


def postprocess(mask: np.ndarray, *, largest: bool = True, holes: bool = True) -> np.ndarray:
    """Apply the switched-on steps to PS and FH of a canonical (H, W) mask.

    >>> m = np.zeros((9, 9), np.uint8); m[1:4, 1:4] = 2; m[6, 6] = 2; m[2, 2] = 0
    >>> postprocess(m)[6, 6], postprocess(m)[2, 2]
    (0, 2)
    """
    for label in (PS, FH):
        if largest:
            mask = largest_component(mask, label)
        if holes:
            mask = fill_holes(mask, label)
    return mask
