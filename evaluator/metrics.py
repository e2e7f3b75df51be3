"""Segmentation metrics as pure functions on boolean masks, with the official semantics.

Each function takes one structure of a prediction and of the truth, as boolean (H, W)
arrays of equal shape, and returns one float. Reduction over structures and cases is
done elsewhere (:mod:`evaluator.scores`).

Semantics (the PSFHS 2023 / IUGC 2024 evaluation code, SimpleITK being the oracle):

* Dice = (2|P and G| + 1) / (|P| + |G| + 1).
* Hausdorff distance between the full foreground pixel sets (SimpleITK's
  ``HausdorffDistanceImageFilter``), in pixels.
* Average symmetric surface distance: a mask's *surface* is the set of pixels where
  SimpleITK's ``SignedMaurerDistanceMap`` is zero -- foreground pixels with a background
  pixel among their 8 neighbours, the image being extended by repeating its edge. ASD is
  (sum over G's surface of the distance to P's surface + the same from P to G) divided by
  the number of pixels of both surfaces.

Empty-mask rule: an empty prediction scores the worst case -- Dice 0, HD 100, ASD 100 --
whatever the truth. An empty truth with a non-empty prediction keeps its Dice by the
formula and scores HD 100, ASD 100. A mask covering the whole frame has no surface, and
SimpleITK's distance map is then meaningless (-1.8e19): its ASD is the worst case, 100.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

WORST_HD = 100.0
WORST_ASD = 100.0


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {gt.shape}")
    if pred.ndim != 2:
        raise ValueError(f"masks must be 2-D (H, W), got shape {pred.shape}")
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Smoothed Dice of two boolean (H, W) masks; 0.0 for an empty prediction.

    >>> dice(np.ones((2, 2), bool), np.ones((2, 2), bool))
    1.0
    """
    pred, gt = _check_pair(pred, gt)
    n_pred = int(np.count_nonzero(pred))
    if n_pred == 0:
        return 0.0
    inter = int(np.count_nonzero(pred & gt))
    return (2 * inter + 1) / (n_pred + int(np.count_nonzero(gt)) + 1)


_KERNEL = np.ones((3, 3), np.uint8)


def _surface_u8(mask_u8: np.ndarray) -> np.ndarray:
    """uint8 0/1 surface of a uint8 0/1 mask (see :func:`surface`)."""
    return cv2.subtract(mask_u8, cv2.erode(mask_u8, _KERNEL, borderType=cv2.BORDER_REPLICATE))


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean (H, W) surface of a mask: foreground pixels with a background 8-neighbour.

    The frame is extended by repeating its edge pixels, so foreground touching the
    border is not surface there (SimpleITK's ``SignedMaurerDistanceMap`` zero set).

    >>> surface(np.ones((3, 3), bool)).any()
    False
    """
    mask = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    return _surface_u8(mask).view(bool)


def _distance_to(target_u8: np.ndarray) -> np.ndarray:
    """float32 Euclidean distance from every pixel to the nearest non-zero pixel of target.

    OpenCV's precise L2 transform is exact up to float32 rounding; :func:`_exact` recovers
    the exact float64 value of the few entries that are used.
    """
    return cv2.distanceTransform(cv2.compare(target_u8, 0, cv2.CMP_EQ), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _exact(values: np.ndarray) -> np.ndarray:
    """Exact float64 distances from float32 ones: squared pixel distances are integers."""
    values = values.astype(np.float64)
    return np.sqrt(np.rint(values * values))


def _crop_box(either: np.ndarray) -> tuple[slice, slice]:
    """Bounding box of a non-empty mask plus a one-pixel margin, clipped to the frame.

    Distances between the sets and their surfaces are unchanged inside it: every pixel of
    both sets stays inside, and the margin is background, so the surface is unchanged too.
    """
    rows = np.flatnonzero(either.any(axis=1))
    cols = np.flatnonzero(either.any(axis=0))
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, either.shape[0])),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, either.shape[1])),
    )


def surface_distances(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Hausdorff distance and ASD of one structure: ``{"hd": float, "asd": float}``.

    Both masks are boolean (H, W) of equal shape; the empty-mask rule is in the module
    docstring.

    >>> a = np.zeros((8, 8), bool); a[2:4, 2:4] = True
    >>> b = np.zeros((8, 8), bool); b[2:4, 5:7] = True
    >>> surface_distances(a, b)
    {'hd': 3.0, 'asd': 3.0}
    """
    pred, gt = _check_pair(pred, gt)
    if not pred.any() or not gt.any():
        return {"hd": WORST_HD, "asd": WORST_ASD}
    box = _crop_box(pred | gt)
    p = np.ascontiguousarray(pred[box]).view(np.uint8)
    g = np.ascontiguousarray(gt[box]).view(np.uint8)
    surf_p, surf_g = _surface_u8(p), _surface_u8(g)
    has_p, has_g = cv2.countNonZero(surf_p) > 0, cv2.countNonZero(surf_g) > 0
    to_g = _distance_to(surf_g) if has_g else None
    to_p = _distance_to(surf_p) if has_p else None
    # Outside a set, the distance to the set equals the distance to its surface; a set
    # without surface fills the frame, so nothing lies outside it.
    hd = 0.0
    for inside, other, to_other in ((p, g, to_g), (g, p, to_p)):
        outside = cv2.subtract(inside, other)
        if cv2.countNonZero(outside):
            hd = max(hd, cv2.minMaxLoc(to_other, mask=outside)[1])
    hd = float(_exact(np.array([hd]))[0])
    if not (has_p and has_g):
        return {"hd": hd, "asd": WORST_ASD}
    sp, sg = surf_p.view(bool), surf_g.view(bool)
    total = _exact(to_p[sg]).sum() + _exact(to_g[sp]).sum()
    return {"hd": hd, "asd": float(total / (np.count_nonzero(sg) + np.count_nonzero(sp)))}
