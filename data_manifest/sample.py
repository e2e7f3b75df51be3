"""Public sample cases for teams (``iugc data sample``): what ``iugc kit check`` runs on.

An organizer makes a small dataset teams may have, in the canonical layout (frames, masks,
manifest): from real frames where the release allows publishing some (``source``), or
SYNTHETIC phantoms otherwise (the manifest says ``synthetic: true``, every frame carries
the word). Real cases are picked evenly spread over the sorted ids (neighbouring ids are
frames of one clip, so a block would show one clip), within each standard-plane label in
proportion to it, so a source with both labels yields both. A case whose source has no
label but a mask is labelled by the IUGC rule (standard when both structures are
visible), as ``iugc data nonstandard`` labels its frames.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from iugc.data_manifest.importers import DatasetWriter
from iugc.data_manifest.io import read_image, read_mask
from iugc.data_manifest.manifest import CaseRecord, Manifest, load_manifest
from iugc.data_manifest.phantom import write_phantom_dataset


def spread(n_items: int, n: int) -> list[int]:
    """``n`` indices evenly spread over ``range(n_items)``, first and last included.

    >>> spread(10, 3), spread(10, 1), spread(3, 5)
    ([0, 4, 9], [0], [0, 1, 2])
    """
    if n_items < 1 or n < 1:
        raise ValueError(f"need at least one item and one pick, got {n_items} items, {n} picks")
    if n >= n_items:
        return list(range(n_items))
    if n == 1:
        return [0]
    return sorted({int(i) for i in np.round(np.linspace(0, n_items - 1, n))})


def pick_cases(cases: list[CaseRecord], n: int) -> list[CaseRecord]:
    """``n`` cases evenly spread over the sorted ids, each standard-plane label (True,
    False, None) in proportion to its share (at least one of each present label when
    ``n`` allows). Returned in id order."""
    groups: dict[object, list[CaseRecord]] = {}
    for case in sorted(cases, key=lambda c: c.case_id):
        groups.setdefault(_label(case), []).append(case)
    n = min(n, len(cases))
    shares = {k: max(1, round(n * len(g) / len(cases))) if n >= len(groups) else 0 for k, g in groups.items()}
    while sum(shares.values()) > n:  # rounding up the small groups overshot: trim the largest
        largest = max(shares, key=lambda k: shares[k])
        shares[largest] -= 1
    while sum(shares.values()) < n:
        roomiest = max(groups, key=lambda k: len(groups[k]) - shares[k])
        shares[roomiest] += 1
    picked = [groups[k][i] for k, count in shares.items() if count for i in spread(len(groups[k]), count)]
    return sorted(picked, key=lambda c: c.case_id)


def _label(case: CaseRecord) -> bool | None:
    if case.standard_plane is not None or case.mask is None:
        return case.standard_plane
    return set(case.structures) == {"ps", "fh"}


def write_sample(dest: Path, n_cases: int, *, source: Path | None = None, seed: int = 0) -> Manifest:
    """Write ``n_cases`` public sample cases to the new folder ``dest``.

    From the canonical dataset ``source`` (its frames, masks, clips and labels), or
    SYNTHETIC phantoms (seeded) when ``source`` is None. Nothing is left at ``dest`` on
    failure. Raises ManifestError for a bad source, FileExistsError for a non-empty
    ``dest``, ValueError for ``n_cases`` < 1.

    >>> import tempfile
    >>> sample = write_sample(Path(tempfile.mkdtemp()) / "public", 3)
    >>> sample.synthetic, len(sample.cases)
    (True, 3)
    """
    if n_cases < 1:
        raise ValueError(f"--cases must be at least 1, got {n_cases}")
    if source is None:
        return write_phantom_dataset(dest, n_cases, seed=seed, nonstandard_fraction=0.25)
    manifest = load_manifest(Path(source))
    chosen = pick_cases(manifest.cases, n_cases)
    kind = "SYNTHETIC phantom" if manifest.synthetic else "real"
    return write_subset(dest, Path(source), chosen, name=f"{manifest.name}-sample",
                        description=f"public sample: {len(chosen)} {kind} cases of {manifest.name}, evenly spread over its ids")


def write_subset(dest: Path, source: Path, chosen: list[CaseRecord], *, name: str, description: str) -> Manifest:
    """Write the cases ``chosen`` of the canonical dataset ``source`` (their frames, masks,
    clips and labels) to the new folder ``dest`` as a dataset of its own; nothing is left at
    ``dest`` on failure."""
    manifest = load_manifest(source)
    writer = DatasetWriter(dest)
    try:
        for case in chosen:
            mask = read_mask(source / case.mask) if case.mask else None
            writer.add(case.case_id, read_image(source / case.image), mask, source=case.source, video=case.video,
                       frame_index=case.frame_index, standard_plane=_label(case), landmarks=case.landmarks,
                                aop_landmarks=case.aop_landmarks and case.aop_landmarks.model_dump())
            clip = source / "videos" / f"{case.video}.avi" if case.video else None
            if clip is not None and clip.is_file() and not (writer.staging / "videos" / clip.name).exists():
                (writer.staging / "videos").mkdir(exist_ok=True)
                shutil.copyfile(clip, writer.staging / "videos" / clip.name)
        return writer.commit(name, manifest.source_layout, synthetic=manifest.synthetic, description=description)
    except BaseException:
        writer.abort()
        raise
