"""IUGC 2025's three landmarks, the angle of progression they define, and radial errors.

A frame's landmarks are points ``(x, y)`` in its pixel space:

* ``PS1``, ``PS2``: the upper and lower ends of the pubic symphysis' long axis;
* ``FH1``: the point where the line from ``PS2`` touches the fetal head.

The AoP is the angle at ``PS2`` between the rays to ``PS1`` and to ``FH1`` (0-180
degrees). From a PSFHS-style mask the three points are the ones the IUGC 2024 contour
construction (:func:`iugc.challenge.biometry.contour_biometry`) measures its AoP from: the
symphysis' farthest contour pair and the tangent point on the head's contour, so
:func:`aop_from_landmarks` of :func:`landmarks_from_mask` equals that mask's contour AoP.
"""
from __future__ import annotations

import math

import numpy as np

from iugc.challenge.biometry import Biometry, Point, angle_at, contour_biometry

LANDMARKS = ("PS1", "PS2", "FH1")


def landmarks_from_mask(mask: np.ndarray) -> dict[str, Point] | None:
    """``{"PS1", "PS2", "FH1"}`` of a label mask (canonical 0/1/2 or raw 0/7/8), or None
    where the contour construction is undefined (a structure missing, no tangent point).

    >>> m = np.zeros((64, 64), np.uint8)
    >>> m[40:44, 10:30] = 1; m[10:30, 30:50] = 2
    >>> landmarks_from_mask(m)
    {'PS1': (10.0, 40.0), 'PS2': (29.0, 43.0), 'FH1': (49.0, 29.0)}
    """
    return landmarks_of(contour_biometry(mask))


def landmarks_of(contour: Biometry) -> dict[str, Point] | None:
    """The landmarks of a mask's contour-method biometry (:func:`landmarks_from_mask`
    without measuring it again), or None where its AoP is undefined."""
    construction = contour.aop_construction
    if construction is None:
        return None
    vertex, axis_end, tangent = construction
    return {"PS1": axis_end, "PS2": vertex, "FH1": tangent}


def aop_from_landmarks(points: dict) -> float | None:
    """The angle at PS2 between PS2->PS1 and PS2->FH1, in degrees; None when PS1 or FH1
    coincides with PS2 (no ray, no angle).

    >>> round(aop_from_landmarks({"PS1": (0, 0), "PS2": (10, 0), "FH1": (10, -10)}), 9)
    90.0
    """
    return angle_at(tuple(points["PS2"]), tuple(points["PS1"]), tuple(points["FH1"]))


def radial_errors(pred: dict, truth: dict) -> dict[str, float]:
    """Euclidean distance in pixels between each predicted landmark and its truth:
    ``{"re_ps1", "re_ps2", "re_fh1"}``, unreduced (their mean is the MRE).

    >>> radial_errors({"PS1": (3, 4), "PS2": (0, 0), "FH1": (1, 1)}, {"PS1": (0, 0), "PS2": (0, 0), "FH1": (1, 1)})
    {'re_ps1': 5.0, 're_ps2': 0.0, 're_fh1': 0.0}
    """
    return {f"re_{name.lower()}": math.dist(pred[name], truth[name]) for name in LANDMARKS}


MARGIN = 0.1
"""How far outside the frame a predicted point may lie, as a fraction of the frame's width
(x) or height (y): a landmark at the frame's edge may be placed just beyond it."""


def checked_landmarks(entry, shape: tuple[int, int]) -> dict[str, tuple[float, float]]:
    """A predicted landmarks entry (``{"PS1": [x, y], "PS2": [x, y], "FH1": [x, y]}``) for a
    frame of ``shape`` (H, W), as float points; ValueError saying what is wrong: not an
    object, a missing or extra key, a point that is not two finite numbers, or one farther
    outside the frame than :data:`MARGIN`.

    >>> checked_landmarks({"PS1": [1, 2], "PS2": [3, 4], "FH1": [5.5, 6]}, (64, 64))
    {'PS1': (1.0, 2.0), 'PS2': (3.0, 4.0), 'FH1': (5.5, 6.0)}
    >>> checked_landmarks({"PS1": [1, 2], "PS2": [3, 4]}, (64, 64))
    Traceback (most recent call last):
    ValueError: FH1 is missing; give PS1, PS2 and FH1 as [x, y]
    """
    if not isinstance(entry, dict):
        raise ValueError(f"expected an object with PS1, PS2 and FH1 as [x, y], got {type(entry).__name__}")
    missing = [name for name in LANDMARKS if name not in entry]
    if missing:
        raise ValueError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; give PS1, PS2 and FH1 as [x, y]")
    extra = sorted(str(k)[:20] for k in entry if k not in LANDMARKS)
    if extra:
        raise ValueError(f"unknown keys {extra}; give only PS1, PS2 and FH1")
    h, w = shape
    points = {}
    for name in LANDMARKS:
        value = entry[name]
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise ValueError(f"{name} must be [x, y], two finite numbers, got {str(value)[:40]}")
        x, y = float(value[0]), float(value[1])
        if not (-MARGIN * w <= x <= (1 + MARGIN) * w and -MARGIN * h <= y <= (1 + MARGIN) * h):
            raise ValueError(f"{name} ({x:g}, {y:g}) lies far outside the {w} x {h} frame; give pixel coordinates of the input frame")
        points[name] = (x, y)
    return points
