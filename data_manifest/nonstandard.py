"""Non-standard planes made from real standard frames, for the classification task.

The IUGC rule: a frame is a *standard plane* when it shows both the pubic symphysis and
the fetal head. The real PSFHS frames are all standard planes, so non-standard ones are
made from them, reproducibly (seeded), in the ways a sonographer misses the plane:

* ``drop_ps`` / ``drop_fh`` / ``drop_both`` -- zoom, rotation and shift that push one or
  both structures out of the field of view (a random search over affine transforms,
  keeping the first that reaches its goal);
* ``shadow_ps`` / ``shadow_fh`` -- acoustic shadowing: a dark band from above a structure
  down to the bottom of the frame, along the beam;
* ``lift_off`` -- the probe lifted off the skin: mostly dark speckle, nothing visible.

Each generated frame is labelled from what remains visible, never from the intent: a
structure is *visible* when at least ``VISIBLE_THRESHOLD`` of its area (relative to the
source mask, scaled by the zoom) is inside the frame and not shadowed; the frame is
standard when both are visible. The returned mask keeps only the visible parts.
``MIX`` gives the fractions of each kind used by :func:`generate_nonstandard_dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from iugc.challenge.labels import FH, PS

VISIBLE_THRESHOLD = 0.5
MIX = {
    "drop_ps": 0.25,
    "drop_fh": 0.25,
    "drop_both": 0.1,
    "shadow_ps": 0.15,
    "shadow_fh": 0.1,
    "lift_off": 0.15,
}
"""Fractions of each way of missing the plane (sum 1)."""
KINDS = tuple(MIX)
_GOALS = {"drop_ps": {FH}, "drop_fh": {PS}, "drop_both": set()}
_SEARCH_TRIES = 200


@dataclass(frozen=True)
class GeneratedFrame:
    """A generated frame: uint8 (H, W) image and mask of what is visible, and its label."""

    image: np.ndarray
    mask: np.ndarray
    kind: str
    visible: dict[str, float]
    """Visible fraction of each structure ("ps", "fh"), relative to the source."""
    standard_plane: bool


def _label(visible: dict[str, float]) -> bool:
    return all(v >= VISIBLE_THRESHOLD for v in visible.values())


def _visible_mask(mask: np.ndarray, visible: dict[str, float]) -> np.ndarray:
    out = mask.copy()
    for name, label in (("ps", PS), ("fh", FH)):
        if visible[name] < VISIBLE_THRESHOLD:
            out[out == label] = 0  # too little left to annotate: not in the mask either
    return out


def _affine(rng: np.random.Generator, shape: tuple[int, int], severity: float) -> np.ndarray:
    h, w = shape
    zoom = rng.uniform(1.0, 1.0 + 1.5 * severity)
    angle = rng.uniform(-25, 25) * severity
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    matrix[:, 2] += rng.uniform(-0.6, 0.6, size=2) * np.array([w, h]) * severity
    return matrix


def _warp(image: np.ndarray, mask: np.ndarray, matrix: np.ndarray):
    h, w = mask.shape
    warped_image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    warped_mask = cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    return warped_image, warped_mask


def _fractions(source: np.ndarray, result: np.ndarray, area_scale: float) -> dict[str, float]:
    out = {}
    for name, label in (("ps", PS), ("fh", FH)):
        before = np.count_nonzero(source == label) * area_scale
        out[name] = min(1.0, np.count_nonzero(result == label) / before) if before else 0.0
    return out


def _drop(image, mask, rng, kind):
    keep = _GOALS[kind]
    best = None
    for attempt in range(_SEARCH_TRIES):
        severity = min(1.0, 0.4 + attempt / 40)
        matrix = _affine(rng, mask.shape, severity)
        warped_image, warped_mask = _warp(image, mask, matrix)
        visible = _fractions(mask, warped_mask, abs(np.linalg.det(matrix[:, :2])))
        reached = all((v >= VISIBLE_THRESHOLD) == (label in keep) for v, label in zip(visible.values(), (PS, FH)))
        best = (warped_image, warped_mask, visible)
        if reached:
            break
    return best


def _shadow(image, mask, rng, kind):
    label = PS if kind == "shadow_ps" else FH
    rows, cols = np.nonzero(mask == label)
    h, w = mask.shape
    margin = int(rng.integers(2, 8))
    c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin + 1, w)
    top = max(rows.min() - margin, 0)
    shadow = np.zeros((h, w), bool)
    shadow[top:, c0:c1] = True  # the beam runs down from the probe at the top
    darkness = rng.uniform(0.05, 0.2)
    noise = rng.rayleigh(0.3, size=(h, w))
    shaded = image.astype(np.float64)
    shaded[shadow] = shaded[shadow] * darkness * noise[shadow]
    hidden = mask.copy()
    hidden[shadow] = 0
    return np.clip(shaded, 0, 255).astype(np.uint8), hidden, _fractions(mask, hidden, 1.0)


def _lift_off(image, mask, rng):
    fov = np.zeros(image.shape, np.uint8)
    lit = cv2.findNonZero((image > 8).astype(np.uint8))
    if lit is not None:  # the field of view's outline, without any anatomy inside it
        cv2.fillConvexPoly(fov, cv2.convexHull(lit), 1)
    dark = rng.rayleigh(scale=rng.uniform(3, 10), size=image.shape) * fov
    empty = np.zeros_like(mask)
    return np.clip(dark, 0, 255).astype(np.uint8), empty, {"ps": 0.0, "fh": 0.0}


def make_nonstandard(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, kind: str) -> GeneratedFrame:
    """Make one non-standard frame of ``kind`` from a standard frame.

    Parameters
    ----------
    image : (H, W) uint8 grey frame showing both structures.
    mask : (H, W) uint8 canonical mask (0/1/2) with both structures.
    rng : the generator that makes it reproducible.
    kind : one of ``KINDS``.

    The label comes from what remains visible, so a transform that failed its goal yields
    a frame labelled standard.

    >>> img = np.full((64, 64), 90, np.uint8); m = np.zeros((64, 64), np.uint8)
    >>> m[5:10, 10:30] = 1; m[25:55, 15:50] = 2
    >>> make_nonstandard(img, m, np.random.default_rng(0), "lift_off").standard_plane
    False
    """
    if kind not in MIX:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if image.shape != mask.shape or image.ndim != 2:
        raise ValueError(f"image and mask must be 2-D of one shape, got {image.shape} vs {mask.shape}")
    if not (np.any(mask == PS) and np.any(mask == FH)):
        raise ValueError("the source frame must show both structures (a standard plane)")
    if kind in _GOALS:
        new_image, new_mask, visible = _drop(image, mask, rng, kind)
    elif kind.startswith("shadow"):
        new_image, new_mask, visible = _shadow(image, mask, rng, kind)
    else:
        new_image, new_mask, visible = _lift_off(image, mask, rng)
    return GeneratedFrame(new_image, _visible_mask(new_mask, visible), kind, visible, _label(visible))


def kinds_for(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` kinds in the proportions of ``MIX`` (rounded), shuffled."""
    counts = {k: int(round(f * n)) for k, f in MIX.items()}
    kinds = [k for k, c in counts.items() for _ in range(c)]
    while len(kinds) < n:
        kinds.append(KINDS[len(kinds) % len(KINDS)])
    kinds = kinds[:n]
    rng.shuffle(kinds)
    return kinds


def generate_nonstandard_dataset(source: Path, dest: Path, *, per_frame: float = 1.0, seed: int = 0, progress: bool = True):
    """A canonical dataset of the source's standard frames plus generated non-standard ones.

    Source cases keep their split and get ``standard_plane`` by the IUGC rule; each
    generated frame ``<id>_ns<k>`` inherits its source's split (no leak across splits).
    ``per_frame`` generated frames per source frame (e.g. 0.5: one for every other).
    """
    from tqdm import tqdm

    from iugc.data_manifest.importers import DatasetWriter, derived_label
    from iugc.data_manifest.io import read_image, read_mask
    from iugc.data_manifest.manifest import load_manifest

    manifest = load_manifest(source)
    rng = np.random.default_rng(seed)
    usable = [c for c in manifest.cases if c.mask and set(c.structures) == {"ps", "fh"}]
    n_new = int(round(per_frame * len(usable)))
    plan = kinds_for(n_new, rng)
    # Sources spread over the whole dataset (not its first ids), so every split gets its
    # share of non-standard frames.
    order = rng.permutation(len(usable)) if usable else np.zeros(0, int)
    writer = DatasetWriter(dest)
    try:
        for case in tqdm(manifest.cases, desc="copying", unit="case", disable=not progress):
            image = read_image(Path(source) / case.image)
            mask = read_mask(Path(source) / case.mask) if case.mask else None
            record = writer.add(case.case_id, image, mask, source=case.source, video=case.video,
                                frame_index=case.frame_index, landmarks=case.landmarks,
                                aop_landmarks=case.aop_landmarks and case.aop_landmarks.model_dump(), **derived_label(mask))
            record.split = case.split
        for k, kind in enumerate(tqdm(plan, desc="non-standard", unit="frame", disable=not progress)):
            case = usable[int(order[k % len(usable)])]
            frame = make_nonstandard(read_image(Path(source) / case.image), read_mask(Path(source) / case.mask), rng, kind)
            record = writer.add(f"{case.case_id}_ns{k // len(usable)}", frame.image, frame.mask,
                                source=f"nonstandard:{kind}:seed={seed} from {case.case_id}",
                                video=case.video, frame_index=case.frame_index, standard_plane=frame.standard_plane)
            record.derived_from = case.case_id  # so a later `iugc data split` keeps it beside its source
            record.split = case.split  # a generated frame stays on its source's side of the split
        result = writer.commit(Path(dest).name, manifest.source_layout, synthetic=manifest.synthetic,
                               description=f"{manifest.description}; plus generated non-standard frames (seed {seed})")
    except BaseException:
        writer.abort()
        raise
    return result
