"""Angle of progression (AoP) and head-symphysis distance (HSD) from a label mask.

Two official methods, each reproducing its challenge's evaluation code:

* :func:`contour_biometry` -- IUGC 2024 (the method that produced the IUGC landmark
  ground truth): PS endpoints, HSD point and the FH tangent point are contour pixels.
* :func:`ellipse_biometry` -- PSFHS 2023: ellipses fitted to both structures, AoP from
  the PS axis endpoint and its tangent to the FH ellipse. It defines no HSD.

Points are returned as ``(x, y)`` = ``(col, row)`` pixel coordinates. A value that the
official code cannot produce (a structure missing, no tangent) is ``None`` here, never
an exception. Contour tracing and ellipse fitting are OpenCV's, as in the official code.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from iugc.challenge.labels import FH, PS, canonical_labels

Point = tuple[float, float]

PSFHS_DEG_TO_RAD = 0.01745
"""The PSFHS 2023 code converts the PS axis angle with 0.01745, not pi/180 (kept on purpose)."""


@dataclass(frozen=True)
class Biometry:
    """AoP in degrees, HSD in pixels, and the points they were measured from (x, y)."""

    aop: float | None
    hsd: float | None
    ps_endpoints: tuple[Point, Point] | None = None
    """(superior, inferior) for the contour method; (E1, E2) for the ellipse method."""
    hsd_point: Point | None = None
    tangent_point: Point | None = None

    @property
    def aop_construction(self) -> tuple[Point, Point, Point] | None:
        """``(vertex, axis_end, tangent_point)`` (x, y): the AoP is the angle at ``vertex``
        between the rays to the other two, for both methods. The vertex is the PS's
        inferior end (contour: P; ellipse: E2), ``axis_end`` its other end (S; E1) and
        the tangent point lies on the FH. These are the points the AoP was measured
        from, for drawing it; None where the AoP is undefined.

        >>> m = np.zeros((64, 64), np.uint8)
        >>> m[40:44, 10:30] = 1; m[10:30, 30:50] = 2
        >>> contour_biometry(m).aop_construction
        ((29.0, 43.0), (10.0, 40.0), (49.0, 29.0))
        >>> UNDEFINED.aop_construction is None
        True
        """
        if self.aop is None or self.ps_endpoints is None or self.tangent_point is None:
            return None
        axis_end, vertex = self.ps_endpoints
        return vertex, axis_end, self.tangent_point

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("ps_endpoints",):
            if out[key] is not None:
                out[key] = [list(p) for p in out[key]]
        for key in ("hsd_point", "tangent_point"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


UNDEFINED = Biometry(aop=None, hsd=None)


def largest_contour(structure: np.ndarray) -> np.ndarray | None:
    """The external OpenCV contour with the most points (first on ties), as (n, 2) (row, col).

    ``structure`` is a boolean or 0/1 (H, W) mask. Returns ``None`` when it is empty.
    """
    contours, _ = cv2.findContours(
        np.ascontiguousarray(structure, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    if not contours:
        return None
    best = max(range(len(contours)), key=lambda i: len(contours[i]))
    xy = contours[best].reshape(-1, 2).astype(np.int64)
    return xy[:, ::-1].copy()


def angle_at(vertex, a, b) -> float | None:
    """Angle a-vertex-b in degrees by the law of cosines; None when a side has zero length."""
    side_a = math.dist(vertex, a)
    side_b = math.dist(vertex, b)
    side_c = math.dist(a, b)
    if side_a == 0 or side_b == 0:
        return None
    cosine = (side_a**2 + side_b**2 - side_c**2) / (2 * side_a * side_b)
    return math.acos(min(1.0, max(-1.0, cosine))) * 180 / math.pi


def _xy(point_rc) -> Point:
    return (float(point_rc[1]), float(point_rc[0]))


def _hull_indices(points_rc: np.ndarray) -> np.ndarray:
    """Indices of the convex hull vertices of integer (row, col) points (OpenCV, exact)."""
    xy = points_rc[:, ::-1].astype(np.int32).reshape(-1, 1, 2)
    return cv2.convexHull(xy, returnPoints=False).ravel()


def _pairwise_d2(points: np.ndarray) -> np.ndarray:
    diff = points[:, None, :] - points[None, :, :]
    return (diff * diff).sum(-1)


def _ps_endpoints(ps: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(superior S, inferior P) as (row, col): the farthest pair, first in i<j scan order.

    A farthest pair is made of convex hull vertices, so only contour points sitting on
    those vertices are compared (all of them, duplicates included, in contour order).
    """
    n = len(ps)
    if n < 2:
        return None
    hull = ps[_hull_indices(ps)]
    d2 = _pairwise_d2(hull)
    involved = {tuple(v) for v in hull[np.any(d2 == d2.max(), axis=1)].tolist()}
    points = ps.tolist()
    candidates = [i for i, point in enumerate(points) if tuple(point) in involved]
    if len(candidates) < 2:  # all points coincide with one vertex: the first pair wins
        candidates = [0, 1]
    best, pair = -1, None
    for a, i in enumerate(candidates):
        ri, ci = points[i]
        for j in candidates[a + 1 :]:
            d = (ri - points[j][0]) ** 2 + (ci - points[j][1]) ** 2
            if d > best:  # strictly larger: the first maximal pair in scan order stays
                best, pair = d, (i, j)
    first, second = ps[pair[0]], ps[pair[1]]
    if first[1] > second[1]:
        return second, first
    return first, second


def _supporting(p_rc: np.ndarray, cand: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Exact validity (integer arithmetic) of non-vertical candidates against hull vertices.

    T is valid when no point Q lies strictly on the wrong side of the line P-T, the side
    being given by the sign of the slope K = (P.row - T.row) / (P.col - T.col). The side
    test is affine in Q, so checking the hull's vertices is enough.
    """
    pr, pc = int(p_rc[0]), int(p_rc[1])
    dc_t = pc - cand[:, 1]
    dr_t = pr - cand[:, 0]
    # s * (Pc - Tc) = (Pr - Tr)(Qc - Pc) + (Pr - Qr)(Pc - Tc)
    num = dr_t[:, None] * (hull[None, :, 1] - pc) + (pr - hull[None, :, 0]) * dc_t[:, None]
    s_sign = np.sign(num) * np.sign(dc_t)[:, None]
    k_nonneg = (np.sign(dr_t) * np.sign(dc_t)) >= 0
    return ~np.where(k_nonneg[:, None], s_sign > 0, s_sign < 0).any(axis=1)


def _tangent_point(p: np.ndarray, fh: np.ndarray) -> np.ndarray | None:
    """The FH contour point where the tangent from P touches, following the IUGC 2024 code.

    Candidates T are scanned by column, descending (stable). T is valid when no other
    point lies strictly on the wrong side of the line P-T (side chosen by the sign of its
    slope K, evaluated in floating point exactly as the official code does). The first
    valid T is the tangent point; every valid T's collinear extras (s == 0) that are
    closer to P than the current best replace it.

    A point valid in floating point is valid in exact arithmetic (a point off the line is
    at least 1/|P.col - T.col| from it, far beyond rounding), and an exactly valid T lies on
    a supporting line through P, which also passes through a valid hull vertex. So only
    points on the lines from P through valid hull vertices are candidates, and the
    floating-point test against every point runs on those few.
    """
    pr, pc = int(p[0]), int(p[1])
    fr, fc = fh[:, 0], fh[:, 1]
    hull = fh[_hull_indices(fh)]
    candidates = np.zeros(len(fh), dtype=bool)
    slanted = hull[hull[:, 1] != pc]
    for vr, vc in slanted[_supporting(p, slanted, hull)]:
        candidates |= (vr - pr) * (fc - pc) == (vc - pc) * (fr - pr)
    if pc >= fc.max():
        candidates |= fc == pc  # vertical line P-T: valid when no point lies further right
    scan = np.flatnonzero(candidates)
    scan = scan[np.argsort(-fc[scan], kind="stable")]  # by column, descending; ties in contour order

    best_point, best_d2 = None, None
    frf = fr.astype(np.float64)
    dcf = (fc - pc).astype(np.float64)
    for idx in scan.tolist():
        t_r, t_c = int(fr[idx]), int(fc[idx])
        if t_c == pc:
            others = (fr != t_r) | (fc != t_c)
            if np.any(others & (fc > t_c)):
                continue
            extras = others & (fc == t_c)
        else:
            k = (pr - t_r) / (pc - t_c)
            s = k * dcf + pr - frf
            bad = (s > 0) if k >= 0 else (s < 0)
            same = (fr == t_r) & (fc == t_c)  # the candidate itself (and its duplicates)
            if np.any(bad & ~same):
                continue
            extras = (s == 0) & ~same
        if best_point is None:
            best_point = (t_r, t_c)
            best_d2 = (t_r - pr) ** 2 + (t_c - pc) ** 2
        for e_r, e_c in zip(fr[extras].tolist(), fc[extras].tolist()):
            d2 = (e_r - pr) ** 2 + (e_c - pc) ** 2
            if d2 < best_d2:
                best_point, best_d2 = (e_r, e_c), d2
    return None if best_point is None else np.array(best_point)


def contour_biometry(mask: np.ndarray) -> Biometry:
    """AoP and HSD by the IUGC 2024 contour method.

    Parameters
    ----------
    mask : (H, W) label mask, canonical (0/1/2) or raw IUGC (0/7/8).

    Returns
    -------
    Biometry with AoP in degrees and HSD in pixels; ``aop``/``hsd`` are ``None`` where the
    official code could not measure them (a structure missing, no valid tangent point).

    Examples
    --------
    >>> m = np.zeros((64, 64), np.uint8)
    >>> m[40:44, 10:30] = 1                    # a horizontal PS
    >>> m[10:30, 30:50] = 2                    # the head, above and to the right
    >>> b = contour_biometry(m)
    >>> b.ps_endpoints, b.hsd_point            # (x, y): S, P (the PS's lower right corner); the head's nearest
    (((10.0, 40.0), (29.0, 43.0)), (30.0, 29.0))
    >>> round(b.hsd, 3)                        # from P to that point: sqrt(1 + 14 ** 2)
    14.036
    """
    mask = canonical_labels(mask)
    ps = largest_contour(mask == PS)
    fh = largest_contour(mask == FH)
    if ps is None or fh is None:
        return UNDEFINED
    ends = _ps_endpoints(ps)
    if ends is None:
        return UNDEFINED
    s, p = ends
    d2 = ((fh - p) ** 2).sum(axis=1)
    nearest = fh[int(np.argmin(d2))]
    hsd = math.sqrt(int(d2.min()))
    tangent = _tangent_point(p, fh)
    aop = None if tangent is None else angle_at(p, s, tangent)
    return Biometry(
        aop=aop,
        hsd=hsd,
        ps_endpoints=(_xy(s), _xy(p)),
        hsd_point=_xy(nearest),
        tangent_point=None if tangent is None else _xy(tangent),
    )


def _fit_ellipse(structure: np.ndarray):
    """OpenCV ellipse of the largest external contour simplified with epsilon 1; None when
    the structure is missing or its simplified contour has 5 points or fewer."""
    contour = largest_contour(structure)
    if contour is None:
        return None
    approx = cv2.approxPolyDP(contour[:, ::-1].astype(np.int32).reshape(-1, 1, 2), 1, True)
    if len(approx) <= 5:
        return None  # the official code fits no ellipse to 5 points or fewer
    return cv2.fitEllipse(approx)


def ellipse_biometry(mask: np.ndarray) -> Biometry:
    """AoP by the PSFHS 2023 ellipse method (no HSD: that challenge defines none).

    Parameters
    ----------
    mask : (H, W) label mask, canonical (0/1/2) or raw IUGC (0/7/8).

    Returns
    -------
    Biometry with AoP in degrees; ``aop`` is ``None`` when an ellipse cannot be fitted (a
    structure missing, or its simplified contour has 5 points or fewer) or the fit is
    degenerate. What an undefined AoP scores is the challenge's ``undefined_biometry``
    setting (PSFHS 2023: 0 degrees, as its official code starts every AoP at 0).

    Examples
    --------
    >>> yy, xx = np.mgrid[:128, :128]
    >>> m = np.zeros((128, 128), np.uint8)
    >>> m[((xx - 40) / 20.0) ** 2 + ((yy - 90) / 6.0) ** 2 <= 1] = 1
    >>> m[((xx - 80) / 30.0) ** 2 + ((yy - 50) / 25.0) ** 2 <= 1] = 2
    >>> 0 < ellipse_biometry(m).aop < 180
    True
    """
    mask = canonical_labels(mask)
    ps_fit = _fit_ellipse(mask == PS)
    fh_fit = _fit_ellipse(mask == FH)
    if ps_fit is None or fh_fit is None:
        return UNDEFINED
    (pcx, pcy), (_pw, ph), ptheta = ps_fit
    (fcx, fcy), (fw, fh_), ftheta = fh_fit
    # Each ellipse ((cx, cy), (w, h), theta) is used as ((cx, cy), (h, w), theta - 90).
    phi = (ptheta - 90) * PSFHS_DEG_TO_RAD
    half = ph / 2
    e1 = (pcx - half * math.cos(phi), pcy - half * math.sin(phi))
    e2 = (pcx + half * math.cos(phi), pcy + half * math.sin(phi))
    angle = 2 * math.pi * (ftheta - 90) / 360
    a, b = fh_ / 2, fw / 2
    if a == 0 or b == 0:
        return Biometry(aop=None, hsd=None, ps_endpoints=(e1, e2))
    x, y = e2[0] - fcx, e2[1] - fcy
    x0 = x * math.cos(angle) + y * math.sin(angle)
    y0 = -x * math.sin(angle) + y * math.cos(angle)
    if x0**2 - a**2 == 0:
        x0 += 1
    disc = b**2 * x0**2 + a**2 * y0**2 - a**2 * b**2
    k = (x0 * y0 - math.sqrt(disc)) / (x0**2 - a**2) if disc >= 0 else 0
    m = y0 - k * x0
    tx = (-2 * k * m / b**2) / (2 * (1 / a**2 + k**2 / b**2))
    ty = k * tx + m
    tangent = (tx * math.cos(angle) - ty * math.sin(angle) + fcx, tx * math.sin(angle) + ty * math.cos(angle) + fcy)
    aop = angle_at(e2, e1, tangent)
    if aop is not None and not math.isfinite(aop):
        aop = None
    return Biometry(aop=aop, hsd=None, ps_endpoints=(e1, e2), tangent_point=tangent)


METHODS = {"contour": contour_biometry, "ellipse": ellipse_biometry}


def biometry(mask: np.ndarray, method: str) -> Biometry:
    """Dispatch to :func:`contour_biometry` or :func:`ellipse_biometry` by name."""
    try:
        return METHODS[method](mask)
    except KeyError:
        raise ValueError(f"unknown AoP method {method!r}; expected one of {sorted(METHODS)}") from None
