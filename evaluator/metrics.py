"""Segmentation metrics as pure functions on boolean masks, with the official semantics.

Each function takes one structure of a prediction and of the truth, as boolean (H, W)
arrays of equal shape, and returns one float. Reduction over structures and cases is
done elsewhere (:mod:`iugc.evaluator.scores`).

Semantics (the PSFHS 2023 / IUGC 2024 evaluation code, SimpleITK being the oracle):

* Dice = (2|P and G| + 1) / (|P| + |G| + 1).
* Hausdorff distance between the full foreground pixel sets (SimpleITK's
  ``HausdorffDistanceImageFilter``), in pixels.
* Average symmetric surface distance: a mask's *surface* is the set of pixels where
  SimpleITK's ``SignedMaurerDistanceMap`` is zero -- foreground pixels with a background
  pixel among their 8 neighbours, the image being extended by repeating its edge. ASD is
  (sum over G's surface of the distance to P's surface + the same from P to G) divided by
  the number of pixels of both surfaces. Each distance is rounded to float32 before the
  sum, as SimpleITK's float32 distance map does, so the numbers equal the official ones.

Empty-mask rule: an empty prediction of a structure that is in the truth scores the
worst case -- Dice 0, HD 100, ASD 100 (the official rule). Both empty -- the structure is
correctly predicted absent, which only happens on non-standard IUGC frames -- scores
Dice 1, HD 0, ASD 0 (the platform's choice; the official code never meets this case). An
empty truth with a non-empty prediction keeps its Dice by the formula and scores HD 100,
ASD 100. A mask covering the whole frame has no surface, and
SimpleITK's distance map is then meaningless (-1.8e19): its ASD is the worst case, 100.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import cv2
import numpy as np

try:  # the optional compiled kernel (setup.py); the NumPy/OpenCV path below is the fallback
    from iugc.evaluator import _fastmetrics
except ImportError:  # pragma: no cover - depends on the install
    _fastmetrics = None

WORST_HD = 100.0
WORST_ASD = 100.0
BACKEND = "c" if _fastmetrics is not None and not os.environ.get("IUGC_PURE_PYTHON") else "numpy"
"""Which implementation runs: "c" (compiled kernel) or "numpy". Both give the same numbers."""


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
    counts = _Counts(int(np.count_nonzero(pred)), int(np.count_nonzero(gt)), int(np.count_nonzero(pred & gt)))
    return _metrics(counts)["dice"]


_KERNEL = np.ones((3, 3), np.uint8)


def _surface_u8(mask_u8: np.ndarray) -> np.ndarray:
    """uint8 0/1 surface of a uint8 0/1 mask (see :func:`surface`)."""
    return cv2.subtract(mask_u8, cv2.erode(mask_u8, _KERNEL, borderType=cv2.BORDER_REPLICATE))


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean (H, W) surface of a mask: foreground pixels with a background 8-neighbour.

    The frame is extended by repeating its edge pixels, so foreground touching the
    border is not surface there (SimpleITK's ``SignedMaurerDistanceMap`` zero set).

    >>> bool(surface(np.ones((3, 3), bool)).any())
    False
    """
    mask = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    return _surface_u8(mask).view(bool)


def _distance_to(target_u8: np.ndarray) -> np.ndarray:
    """float32 Euclidean distance from every pixel to the nearest non-zero pixel of target.

    OpenCV's precise L2 transform is exact up to float32 rounding; squared pixel distances
    are integers, so rounding the square recovers them exactly.
    """
    return cv2.distanceTransform(cv2.compare(target_u8, 0, cv2.CMP_EQ), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


SEARCH_RADIUS = 8


def _offset_table(radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (dy, dx) with dy^2 + dx^2 <= radius^2, sorted by that squared distance k."""
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    dy, dx = dy.ravel(), dx.ravel()
    k = dy * dy + dx * dx
    keep = k <= radius * radius
    order = np.argsort(k[keep], kind="stable")
    return dy[keep][order], dx[keep][order], k[keep][order]


_DY, _DX, _K = _offset_table(SEARCH_RADIUS)
# Offsets are tried in batches (one gather each); most pixels resolve in the first.
_BATCHES = [np.flatnonzero((_K > lo) & (_K <= hi)) for lo, hi in ((-1, 2), (2, 10), (10, 30), (30, 64))]


def _points(mask_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 of the non-zero pixels."""
    found = cv2.findNonZero(mask_u8)
    if found is None:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    found = found.reshape(-1, 2).astype(np.int64)
    return found[:, 1], found[:, 0]


def _squared_distances(targets: list[np.ndarray], queries: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Exact squared distances (int64) from query pixels to the nearest pixel of a target.

    ``targets[t]`` is a uint8 (H, W) image (non-zero = target), ``queries[t]`` the (rows,
    cols) to measure from. All targets are laid side by side on one zero-padded canvas, and
    offsets are tried in order of increasing squared distance for every query pixel at
    once; the first offset landing on a target pixel gives the exact distance. Pixels
    farther than SEARCH_RADIUS fall back to OpenCV's exact distance transform. This costs
    a few gathers per case when prediction and truth are close, as they mostly are.
    """
    r = SEARCH_RADIUS
    height, width = targets[0].shape
    tile = width + 2 * r
    wide = np.zeros((height + 2 * r, tile * len(targets)), np.uint8)
    for t, target in enumerate(targets):
        wide[r : r + height, t * tile + r : t * tile + r + width] = target
    padded = wide.ravel().view(bool)
    stride = wide.shape[1]
    counts = [len(rows) for rows, _ in queries]
    rows = np.concatenate([q[0] for q in queries])
    cols = np.concatenate([q[1] + t * tile for t, q in enumerate(queries)])
    flat = (rows + r) * stride + (cols + r)
    offsets = _DY * stride + _DX
    result = np.full(len(flat), -1, dtype=np.int64)
    pending = np.arange(len(flat))
    for batch in _BATCHES:
        if not pending.size:
            break
        found = padded[flat[pending][:, None] + offsets[batch][None, :]]
        first = found.argmax(axis=1)  # offsets are sorted: the first hit is the nearest
        hit = found[np.arange(len(first)), first]
        result[pending[hit]] = _K[batch][first[hit]]
        pending = pending[~hit]
    ends = np.cumsum(counts)
    out = np.split(result, ends[:-1])
    if pending.size:
        owner = np.searchsorted(ends, pending, side="right")
        for t in np.unique(owner):
            local = pending[owner == t] - (ends[t] - counts[t])
            far = _distance_to(targets[t])[queries[t][0][local], queries[t][1][local]].astype(np.float64)
            out[t][local] = np.rint(far * far).astype(np.int64)
    return out


def _common_box(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[slice, slice] | None:
    """Bounding box of every mask's foreground plus a one-pixel margin, clipped to the frame.

    Distances between the sets and their surfaces are unchanged inside it: every pixel of
    every set stays inside, and the margin is background, so the surfaces are unchanged.
    """
    union = pairs[0][0].copy()
    for p, g in pairs:
        cv2.bitwise_or(union, p, dst=union)
        cv2.bitwise_or(union, g, dst=union)
    x, y, w, h = cv2.boundingRect(union)
    if w == 0:
        return None
    height, width = union.shape
    return slice(max(y - 1, 0), min(y + h + 1, height)), slice(max(x - 1, 0), min(x + w + 1, width))


def _as_sitk(squared: np.ndarray) -> np.ndarray:
    """Surface distances as SimpleITK's distance map holds them: float32 values.

    SimpleITK computes each distance in double and stores it as float32; summing those
    float32 values (in double) reproduces the official ASD to ~1e-12 instead of ~1e-6.
    """
    return np.sqrt(squared.astype(np.float64)).astype(np.float32).astype(np.float64)


class _Counts(NamedTuple):
    """What both implementations measure of one structure; :func:`_metrics` turns it into
    Dice/HD/ASD with the empty-mask rules (so the rules live in one place)."""

    n_pred: int
    n_gt: int
    n_both: int
    hd_squared: int = 0
    surface_total: float = 0.0
    n_surface_pred: int = 0
    n_surface_gt: int = 0


def _metrics(c: _Counts) -> dict[str, float]:
    """Dice, HD and ASD from counts, applying the module's empty-mask rules."""
    if c.n_pred == 0 and c.n_gt == 0:
        return {"dice": 1.0, "hd": 0.0, "asd": 0.0}  # correctly predicted absent
    dice_value = 0.0 if c.n_pred == 0 else (2 * c.n_both + 1) / (c.n_pred + c.n_gt + 1)
    if c.n_pred == 0 or c.n_gt == 0:
        return {"dice": dice_value, "hd": WORST_HD, "asd": WORST_ASD}
    n_surface = c.n_surface_pred + c.n_surface_gt
    asd = c.surface_total / n_surface if c.n_surface_pred and c.n_surface_gt else WORST_ASD
    return {"dice": dice_value, "hd": math.sqrt(c.hd_squared), "asd": asd}


def _counts_numpy(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[_Counts]:
    """:class:`_Counts` of (pred, gt) uint8 0/1 mask pairs of one shape, in one batch."""
    box = _common_box(pairs)
    if box is not None:
        pairs = [(np.ascontiguousarray(p[box]), np.ascontiguousarray(g[box])) for p, g in pairs]
    results: list[_Counts] = []
    targets, queries, plan = [], [], []
    for p, g in pairs:
        n_p, n_g = cv2.countNonZero(p), cv2.countNonZero(g)
        basic = _Counts(n_p, n_g, cv2.countNonZero(cv2.bitwise_and(p, g)))
        results.append(basic)
        if not (n_p and n_g):
            continue
        surf_p, surf_g = _surface_u8(p), _surface_u8(g)
        sp, sg = _points(surf_p), _points(surf_g)
        # Outside a set, the distance to the set equals the distance to its surface; a set
        # without surface fills the frame, so nothing lies outside it.
        only_p, only_g = _points(cv2.subtract(p, g)), _points(cv2.subtract(g, p))
        entry = {"n_sp": len(sp[0]), "n_sg": len(sg[0]), "to_g": None, "to_p": None}
        if entry["n_sg"]:
            entry["to_g"] = len(targets)
            targets.append(surf_g)
            queries.append((np.concatenate((sp[0], only_p[0])), np.concatenate((sp[1], only_p[1]))))
        if entry["n_sp"]:
            entry["to_p"] = len(targets)
            targets.append(surf_p)
            queries.append((np.concatenate((sg[0], only_g[0])), np.concatenate((sg[1], only_g[1]))))
        plan.append((len(results) - 1, entry))
    distances = _squared_distances(targets, queries) if targets else []
    empty = np.empty(0, np.int64)
    for index, entry in plan:
        to_g = empty if entry["to_g"] is None else distances[entry["to_g"]]
        to_p = empty if entry["to_p"] is None else distances[entry["to_p"]]
        # HD: only pixels outside the other set (surface pixels inside it are at distance 0)
        hd_sq = max(int(to_g[entry["n_sp"] :].max(initial=0)), int(to_p[entry["n_sg"] :].max(initial=0)))
        total = float(_as_sitk(to_p[: entry["n_sg"]]).sum() + _as_sitk(to_g[: entry["n_sp"]]).sum())
        results[index] = results[index]._replace(
            hd_squared=hd_sq, surface_total=total, n_surface_pred=entry["n_sp"], n_surface_gt=entry["n_sg"]
        )
    return results


def _counts(pred: np.ndarray, gt: np.ndarray, label_sets: list[tuple[int, ...]]) -> list[_Counts]:
    """:class:`_Counts` of each label set of two uint8 (H, W) label maps, with BACKEND."""
    if BACKEND == "c":
        bits = [sum(1 << label for label in labels) for labels in label_sets]
        h, w = pred.shape
        raw = _fastmetrics.structure_counts(
            np.ascontiguousarray(pred, dtype=np.uint8), np.ascontiguousarray(gt, dtype=np.uint8), h, w, bits, SEARCH_RADIUS
        )
        return [_Counts(*values) for values in raw]
    pairs = [(np.isin(pred, labels).view(np.uint8), np.isin(gt, labels).view(np.uint8)) for labels in label_sets]
    return _counts_numpy(pairs)


def surface_distances(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Hausdorff distance and ASD of one structure: ``{"hd": float, "asd": float}``.

    Both masks are boolean (H, W) of equal shape; the empty-mask rule is in the module
    docstring.

    >>> a = np.zeros((8, 8), bool); a[2:4, 2:4] = True
    >>> b = np.zeros((8, 8), bool); b[2:4, 5:7] = True
    >>> surface_distances(a, b)  # each square's near column is 2 px from the other, its far one 3
    {'hd': 3.0, 'asd': 2.5}
    """
    pred, gt = _check_pair(pred, gt)
    values = _metrics(_counts(pred.view(np.uint8), gt.view(np.uint8), [(1,)])[0])
    return {"hd": values["hd"], "asd": values["asd"]}


def structure_metrics(pred: np.ndarray, gt: np.ndarray, structures: dict[str, tuple[int, ...]]) -> dict[str, dict[str, float]]:
    """Dice, HD and ASD of several structures of two label maps at once.

    ``pred`` and ``gt`` are uint8 (H, W) label maps of equal shape; ``structures`` maps a
    name to the labels forming it (``iugc.challenge.labels.STRUCTURES``). Returns
    ``{name: {"dice", "hd", "asd"}}``, unreduced.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: {pred.shape} vs {gt.shape}")
    counts = _counts(pred, gt, list(structures.values()))
    return {name: _metrics(c) for name, c in zip(structures, counts)}


# ---- The catalogue for new challenges: HD95, NSD, sensitivity, precision ----
# Surfaces here follow medpy (the oracle of HD95): a foreground pixel is on the surface
# when one of its 4 neighbours is background, outside the frame counting as background
# (so a mask filling the frame has its border as surface, unlike SimpleITK's ASD above).

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
WORST_HD95 = 100.0


def _border_u8(mask_u8: np.ndarray) -> np.ndarray:
    return cv2.subtract(mask_u8, cv2.erode(mask_u8, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0))


def _border_distances(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (float64, exact) from each surface pixel of one mask to the other's surface:
    ``(pred surface -> gt surface, gt surface -> pred surface)``; both masks non-empty."""
    surfaces = [_border_u8(np.ascontiguousarray(m, dtype=np.uint8)) for m in (pred, gt)]

    def to(target: np.ndarray, source: np.ndarray) -> np.ndarray:
        d = _distance_to(target)[source.view(bool)].astype(np.float64)
        return np.sqrt(np.rint(d * d))  # squared pixel distances are integers: exact

    return to(surfaces[1], surfaces[0]), to(surfaces[0], surfaces[1])


def hd95(pred: np.ndarray, gt: np.ndarray) -> float:
    """95th percentile Hausdorff distance of two boolean (H, W) masks, in pixels.

    The 95th percentile (NumPy's linear interpolation) of the distances from every
    surface pixel of each mask to the other's surface, both directions pooled, as medpy's
    ``hd95``. Empty-mask rule: both empty 0.0 (correctly absent); one empty 100.0 (the
    worst case, as HD).

    >>> a = np.zeros((8, 8), bool); a[2:4, 2:4] = True
    >>> b = np.zeros((8, 8), bool); b[2:4, 5:7] = True
    >>> hd95(a, b), hd95(a, np.zeros_like(a)), hd95(a, a)
    (3.0, 100.0, 0.0)
    """
    pred, gt = _check_pair(pred, gt)
    n_pred, n_gt = np.count_nonzero(pred), np.count_nonzero(gt)
    if not (n_pred or n_gt):
        return 0.0
    if not (n_pred and n_gt):
        return WORST_HD95
    forward, backward = _border_distances(pred, gt)
    return float(np.percentile(np.concatenate((forward, backward)), 95))


def nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float) -> float:
    """Normalized surface distance (surface Dice) at ``tolerance`` pixels, in [0, 1].

    The fraction of both masks' surface pixels lying within ``tolerance`` (inclusive) of
    the other's surface: (|S_P near S_G| + |S_G near S_P|) / (|S_P| + |S_G|), Nikolov et
    al. (2021) counted on pixels, as Metrics Reloaded recommends beside Dice. Empty-mask
    rule: both empty 1.0; one empty 0.0.

    >>> a = np.zeros((8, 8), bool); a[2:4, 2:4] = True
    >>> b = np.zeros((8, 8), bool); b[2:4, 3:5] = True
    >>> nsd(a, b, 1.0), nsd(a, b, 0.5)
    (1.0, 0.5)
    """
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number of pixels >= 0, got {tolerance!r}")
    pred, gt = _check_pair(pred, gt)
    n_pred, n_gt = np.count_nonzero(pred), np.count_nonzero(gt)
    if not (n_pred or n_gt):
        return 1.0
    if not (n_pred and n_gt):
        return 0.0
    forward, backward = _border_distances(pred, gt)
    return float((np.count_nonzero(forward <= tolerance) + np.count_nonzero(backward <= tolerance)) / (len(forward) + len(backward)))


def sensitivity(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P and G| / |G| of two boolean (H, W) masks (recall). Empty-mask rule: an empty
    truth scores 1.0 when the prediction is empty too, else 0.0 (a structure predicted
    where there is none is penalised, as Dice does).

    >>> g = np.zeros((4, 4), bool); g[:2] = True
    >>> p = np.zeros((4, 4), bool); p[:1] = True
    >>> sensitivity(p, g), sensitivity(np.zeros_like(g), np.zeros_like(g))
    (0.5, 1.0)
    """
    pred, gt = _check_pair(pred, gt)
    n_gt = np.count_nonzero(gt)
    if n_gt == 0:
        return 0.0 if np.any(pred) else 1.0
    return float(np.count_nonzero(pred & gt) / n_gt)


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P and G| / |P| of two boolean (H, W) masks. Empty-mask rule: an empty prediction
    scores 1.0 when the truth is empty too, else 0.0 (a missed structure).

    >>> g = np.zeros((4, 4), bool); g[:1] = True
    >>> p = np.zeros((4, 4), bool); p[:2] = True
    >>> precision(p, g), precision(np.zeros_like(g), g)
    (0.5, 0.0)
    """
    return sensitivity(gt, pred)  # the same ratio and rule with the roles swapped
