"""Straightforward reference implementations, written the way the official code is.

Slow on purpose: per-structure SimpleITK filters and pure-Python O(n^2) loops over
contour points, transcribed from the official evaluation semantics. They are the oracle
the tests compare the fast evaluator with, and the baseline the benchmark measures its
speed-up against. Nothing in the evaluation path calls them.
"""
from __future__ import annotations

import math

import numpy as np

from iugc.challenge.biometry import Biometry, ellipse_biometry, largest_contour
from iugc.challenge.labels import FH, PS, STRUCTURES, canonical_labels, structure_mask


def sitk_structure_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice, HD and ASD of one structure with SimpleITK, official semantics.

    ``pred`` and ``gt`` are boolean (H, W). An empty prediction scores Dice 0, HD 100,
    ASD 100; an empty truth scores HD 100, ASD 100; both empty score Dice 1, HD 0, ASD 0.
    """
    import SimpleITK as sitk

    pred = pred.astype(np.uint8)
    gt = gt.astype(np.uint8)
    if pred.sum() == 0 and gt.sum() == 0:
        return {"dice": 1.0, "hd": 0.0, "asd": 0.0}
    if pred.sum() == 0:
        return {"dice": 0.0, "hd": 100.0, "asd": 100.0}
    d = (2.0 * np.sum(pred * gt) + 1) / (np.sum(pred) + np.sum(gt) + 1)
    if gt.sum() == 0:
        return {"dice": float(d), "hd": 100.0, "asd": 100.0}
    pred_img = sitk.GetImageFromArray(pred)
    gt_img = sitk.GetImageFromArray(gt)
    hd_filter = sitk.HausdorffDistanceImageFilter()
    hd_filter.Execute(pred_img, gt_img)
    hd = hd_filter.GetHausdorffDistance()

    def distance_map(img):
        return sitk.GetArrayFromImage(
            sitk.SignedMaurerDistanceMap(img, squaredDistance=False, useImageSpacing=True)
        ).astype(np.float64)

    map_pred = distance_map(pred_img)
    map_gt = distance_map(gt_img)
    surf_pred = map_pred == 0
    surf_gt = map_gt == 0
    if not surf_pred.any() or not surf_gt.any():
        return {"dice": float(d), "hd": float(hd), "asd": 100.0}
    total = np.abs(map_pred[surf_gt]).sum() + np.abs(map_gt[surf_pred]).sum()
    asd = total / (surf_gt.sum() + surf_pred.sum())
    return {"dice": float(d), "hd": float(hd), "asd": float(asd)}


def sitk_segmentation_metrics(pred_labels: np.ndarray, gt_labels: np.ndarray) -> dict[str, float]:
    """``{"dice_ps", "hd_ps", "asd_ps", ...}`` for PS, FH and all, with SimpleITK."""
    out = {}
    pred_labels = canonical_labels(pred_labels)
    gt_labels = canonical_labels(gt_labels)
    for name in STRUCTURES:
        values = sitk_structure_metrics(structure_mask(pred_labels, name), structure_mask(gt_labels, name))
        for metric, value in values.items():
            out[f"{metric}_{name}"] = value
    return out


def loop_contour_biometry(mask: np.ndarray) -> Biometry:
    """The IUGC 2024 contour method as plain loops over contour points (row, col)."""
    mask = canonical_labels(mask)
    ps = largest_contour(mask == PS)
    fh = largest_contour(mask == FH)
    if ps is None or fh is None or len(ps) < 2:
        return Biometry(aop=None, hsd=None)
    ps = [tuple(int(v) for v in p) for p in ps]
    fh = [tuple(int(v) for v in p) for p in fh]
    best, pair = -1, None
    for i in range(len(ps)):
        for j in range(i + 1, len(ps)):
            d = (ps[i][0] - ps[j][0]) ** 2 + (ps[i][1] - ps[j][1]) ** 2
            if d > best:
                best, pair = d, (ps[i], ps[j])
    a, b = pair
    p, s = (a, b) if a[1] > b[1] else (b, a)
    hsd_point, hsd_best = None, None
    for q in fh:
        d = math.sqrt((q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2)
        if hsd_best is None or d < hsd_best:
            hsd_point, hsd_best = q, d
    ordered = sorted(fh, key=lambda q: -q[1])
    tangent, tangent_d = None, None
    for t in ordered:
        valid, extras = True, []
        for q in fh:
            if q == t:
                continue
            if t[1] == p[1]:
                if q[1] > t[1]:
                    valid = False
                    break
                if q[1] == t[1]:
                    extras.append(q)
                continue
            k = (p[0] - t[0]) / (p[1] - t[1])
            s_val = k * (q[1] - p[1]) + p[0] - q[0]
            if (s_val > 0 and k >= 0) or (s_val < 0 and k < 0):
                valid = False
                break
            if s_val == 0:
                extras.append(q)
        if not valid:
            continue
        if tangent is None:
            tangent, tangent_d = t, math.dist(p, t)
        for e in extras:
            if math.dist(p, e) < tangent_d:
                tangent, tangent_d = e, math.dist(p, e)
    aop = None
    if tangent is not None:
        la, lb, lc = math.dist(p, s), math.dist(p, tangent), math.dist(s, tangent)
        aop = math.degrees(math.acos(max(-1.0, min(1.0, (la**2 + lb**2 - lc**2) / (2 * la * lb)))))

    def xy(q):
        return (float(q[1]), float(q[0]))

    return Biometry(
        aop=aop,
        hsd=hsd_best,
        ps_endpoints=(xy(s), xy(p)),
        hsd_point=xy(hsd_point),
        tangent_point=None if tangent is None else xy(tangent),
    )


def reference_biometry(mask: np.ndarray, method: str) -> Biometry:
    """Reference biometry by method name; the ellipse method is closed-form already."""
    if method == "contour":
        return loop_contour_biometry(mask)
    if method == "ellipse":
        return ellipse_biometry(mask)
    raise ValueError(f"unknown AoP method {method!r}")


