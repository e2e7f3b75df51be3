"""Mask post-processing the biometry needs: a missing structure completed from the
probabilities on standard planes, the largest connected component per structure, filled
holes, an elliptical symphysis and an elliptical fetal head, each switchable; and where
p(standard plane) comes from (the IUGC rule on the segmentation, the network's head, or
their mean)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iugc.baseline.frames import to_input_size
from iugc.challenge.labels import FH, PS

STANDARD = 0.5
"""p(standard plane) from which a frame must show both structures (the IUGC rule)."""
STANDARD_SOURCES = ("mean", "segmentation", "head")


@dataclass(frozen=True)
class Steps:
    """Which post-processing steps run (all by default) and where p(standard plane) comes
    from (``standard_from``, one of :data:`STANDARD_SOURCES`); see :func:`finish`."""

    complete: bool = True
    largest: bool = True
    holes: bool = True
    ellipse: bool = True
    ellipse_ps: bool = True
    standard_from: str = "head"

    def __post_init__(self):
        if self.standard_from not in STANDARD_SOURCES:
            raise ValueError(f"standard_from must be one of {STANDARD_SOURCES}: got {self.standard_from!r}")


def standard_probability(probs: np.ndarray, p_head: float, source: str = "head") -> float:
    """p(standard plane) of one frame, from the network's softmax ``probs`` (3, H, W) and
    its classification head's probability ``p_head`` (in [0, 1]).

    ``source``:

    - "segmentation": the IUGC rule (a standard plane shows both the pubic symphysis and
      the fetal head) applied to the segmentation: the lower of PS's and FH's highest
      probability in the frame. It reaches 0.5 only if the argmax shows both somewhere (a
      pixel where one class has probability >= 0.5 is that class's);
    - "head" (the default): ``p_head`` unchanged; with both scanners in training it is the
      most accurate of the three on the validation block (model card);
    - "mean": the mean of the two. On a scanner that training never saw the head calls
      many real standard planes non-standard while the masks still show both structures;
      on the training scanner the segmentation sees both structures in some frames that
      lack one; the mean is never the worst of the three (docs/baseline.md).

    >>> probs = np.zeros((3, 4, 4), np.float32); probs[0] = 1; probs[:, 0, 0] = (0.25, 0.5, 0.25)
    >>> [standard_probability(probs, 0.75, s) for s in ("segmentation", "head", "mean")]  # no head in view
    [0.25, 0.75, 0.5]
    """
    if probs.ndim != 3 or probs.shape[0] != 3:
        raise ValueError(f"probs must be a (3, H, W) softmax: got shape {probs.shape}")
    if source not in STANDARD_SOURCES:
        raise ValueError(f"source must be one of {STANDARD_SOURCES}: got {source!r}")
    segmentation = float(min(probs[PS].max(), probs[FH].max()))
    return {"segmentation": segmentation, "head": float(p_head), "mean": (segmentation + float(p_head)) / 2}[source]


def complete_structures(mask: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Give a structure that the argmax left out the region where it is most likely.

    ``mask`` is the (H, W) argmax of ``probs`` (3, H, W) (softmax over background/PS/FH).
    For PS and FH, each missing from ``mask``: the pixels whose probability of it is at
    least half its highest in the frame become that structure (over whatever they were),
    keeping the largest component. Call it only where the frame should show both (a
    standard plane: the AoP is undefined without either, which scores the worst case,
    180 degrees). A present structure is left alone; so is one whose highest probability
    is 0.

    >>> probs = np.zeros((3, 8, 8), np.float32); probs[0] = 0.8; probs[1] = 0.05; probs[1, 2:4, 2:4] = 0.3
    >>> probs[2, 5:, :] = 0.9; probs[0, 5:, :] = 0.05; mask = probs.argmax(0).astype(np.uint8)
    >>> int((mask == 1).sum()), int((complete_structures(mask, probs) == 1).sum())
    (0, 4)
    """
    if probs.ndim != 3 or probs.shape[0] != 3 or probs.shape[1:] != mask.shape:
        raise ValueError(f"probs must be (3, H, W) for a (H, W) mask: got {probs.shape} and {mask.shape}")
    out = mask
    for label in (PS, FH):
        peak = float(probs[label].max())
        if peak <= 0 or (out == label).any():
            continue
        region = largest_component((probs[label] >= peak / 2).astype(np.uint8), 1)
        out = out.copy()
        out[region == 1] = label
    return out


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


def ellipse_structure(mask: np.ndarray, label: int) -> np.ndarray:
    """Structure ``label`` replaced by the filled ellipse fitted to its convex outline (a shape prior).

    Both AoP methods read the angle off outlines: the PSFHS method fits ellipses to them,
    the IUGC one takes extreme and tangent points. A notched or ragged prediction (a faint
    stretch of skull, a symphysis cut short) tilts the fit. The outline of the largest
    component is made convex (a notch would pull the fit inwards), then OpenCV's
    least-squares ``fitEllipse`` (as in the PSFHS biometry) is fitted to it. The other
    structure's pixels stay; a frame without the structure, an outline of fewer than 5
    points or a degenerate fit is returned unchanged.

    >>> m = np.zeros((40, 40), np.uint8); _ = cv2.circle(m, (20, 20), 12, 2, -1); m[18:23, 8:14] = 0
    >>> int((ellipse_structure(m, FH) == 2).sum() - (m == 2).sum()) > 20  # the notch is filled
    True
    """
    structure = (mask == label).astype(np.uint8)
    contours, _ = cv2.findContours(structure, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return mask
    convex = np.zeros_like(structure)
    cv2.fillPoly(convex, [cv2.convexHull(max(contours, key=cv2.contourArea))], 1)
    outline = cv2.findContours(convex, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0]
    if len(outline) < 5:
        return mask
    (cx, cy), (width, height), angle = cv2.fitEllipse(outline)
    if not np.isfinite([cx, cy, width, height, angle]).all() or min(width, height) < 1:
        return mask
    filled = np.zeros_like(structure)
    cv2.ellipse(filled, ((cx, cy), (width, height), angle), 1, -1)
    out = mask.copy()
    out[out == label] = 0
    out[(filled == 1) & (out == 0)] = label
    return out


def ellipse_head(mask: np.ndarray) -> np.ndarray:
    """The fetal head as a fitted ellipse (:func:`ellipse_structure` for FH)."""
    return ellipse_structure(mask, FH)


def postprocess(mask: np.ndarray, *, largest: bool = True, holes: bool = True, ellipse: bool = True,
                ellipse_ps: bool = True) -> np.ndarray:
    """Apply the switched-on steps to PS and FH of a canonical (H, W) mask: largest
    component and hole filling per structure, then the symphysis (``ellipse_ps``) and the
    head (``ellipse``) as fitted ellipses.

    >>> m = np.zeros((9, 9), np.uint8); m[1:4, 1:4] = 2; m[6, 6] = 2; m[2, 2] = 0
    >>> int(postprocess(m)[6, 6]), int(postprocess(m)[2, 2])
    (0, 2)
    """
    for label in (PS, FH):
        if largest:
            mask = largest_component(mask, label)
        if holes:
            mask = fill_holes(mask, label)
    if ellipse_ps:
        mask = ellipse_structure(mask, PS)
    return ellipse_head(mask) if ellipse else mask


def finish(probs: np.ndarray, p_head: float, shape: tuple[int, ...], steps: Steps = Steps()) -> tuple[np.ndarray, float]:
    """The network's softmax (3, h, w) and its head's p(standard plane) -> the canonical
    uint8 mask at the frame's (H, W) and the reported p(standard plane).

    Argmax; on a frame the head judges standard (``p_head >= STANDARD``) a structure the
    argmax left out is completed from the probabilities (:func:`complete_structures`); the
    mask goes back to the frame's size with nearest neighbour; then :func:`postprocess`.
    The masks do not depend on ``steps.standard_from``; the reported probability is
    :func:`standard_probability` from that source. The PyTorch and ONNX Runtime paths and
    training's validation all end here.

    >>> probs = np.zeros((3, 4, 4), np.float32); probs[0] = 1
    >>> mask, p = finish(probs, 0.9, (8, 8)); mask.shape, p
    ((8, 8), 0.9)
    """
    p_standard = standard_probability(probs, p_head, steps.standard_from)
    mask = probs.argmax(0).astype(np.uint8)
    if steps.complete and p_head >= STANDARD:
        mask = complete_structures(mask, probs)
    mask = to_input_size(mask, shape)
    mask = postprocess(mask, largest=steps.largest, holes=steps.holes, ellipse=steps.ellipse, ellipse_ps=steps.ellipse_ps)
    return mask, p_standard
