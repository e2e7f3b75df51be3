"""Landmark truth derived from masks: IUGC 2025's PS1, PS2 and FH1 of every case that has
a mask, by the contour construction (:func:`iugc.challenge.landmarks.landmarks_from_mask`), so
datasets with expert masks (PSFHS, IUGC 2024) can serve the landmark challenge. Derived
points are marked ``derived`` in the manifest; annotated ones are never replaced."""
from __future__ import annotations

from pathlib import Path

from iugc.challenge.landmarks import landmarks_from_mask
from iugc.data_manifest.io import read_mask
from iugc.data_manifest.manifest import AopLandmarks, load_manifest, write_manifest


class NoMasks(ValueError):
    """The dataset has no case with a mask to derive landmarks from."""


def derive_landmarks(dataset: Path, *, progress: bool = True) -> dict[str, list[str]]:
    """Add derived landmarks to ``dataset``'s manifest (one atomic write at the end).

    Returns the case ids ``{"derived": [...], "undefined": [...], "annotated": [...]}``:
    derived now, left without (a structure missing or no tangent point), kept as
    annotated. Raises NoMasks when no case has a mask (nothing is written).
    """
    from tqdm import tqdm

    dataset = Path(dataset)
    manifest = load_manifest(dataset)
    with_masks = [c for c in manifest.cases if c.mask]
    if not with_masks:
        raise NoMasks(f"{dataset}: no case has a mask to derive landmarks from; import a release with masks "
                      "(or, for IUGC 2025's own landmarks, `iugc data import --layout iugc2025`)")
    outcome: dict[str, list[str]] = {"derived": [], "undefined": [], "annotated": []}
    for case in tqdm(with_masks, desc="landmarks", unit="case", disable=not progress):
        if case.aop_landmarks is not None and not case.aop_landmarks.derived:
            outcome["annotated"].append(case.case_id)
            continue
        points = landmarks_from_mask(read_mask(dataset / case.mask))
        case.aop_landmarks = None if points is None else AopLandmarks(**points, derived=True)
        outcome["derived" if points is not None else "undefined"].append(case.case_id)
    write_manifest(dataset, manifest)
    return outcome
