"""Check a dataset against its manifest: ``iugc data verify``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iugc.data_manifest.importers import structures_present
from iugc.common.files import sha256_file
from iugc.data_manifest.io import ReadError, read_image, read_mask
from iugc.data_manifest.manifest import ManifestError, load_manifest


def verify_dataset(dataset: str | Path, progress: bool = False) -> list[str]:
    """Every problem found, one message per bad file (empty when the dataset is sound).

    Checks checksums, that frames and masks decode, shapes against the manifest, mask
    labels within the canonical schema (0/1/2), the structures recorded, duplicate ids,
    and files on disk that the manifest does not list.
    """
    from tqdm import tqdm

    dataset = Path(dataset)
    try:
        manifest = load_manifest(dataset)
    except ManifestError as exc:
        return [str(exc)]
    problems: list[str] = []
    seen: set[str] = set()
    listed: set[str] = set()
    for case in tqdm(manifest.cases, desc="verifying", unit="case", disable=not progress):
        where = f"case {case.case_id}"
        if case.case_id in seen:
            problems.append(f"{where}: duplicate case id in the manifest")
        seen.add(case.case_id)
        for rel, digest, kind in ((case.image, case.image_sha256, "frame"), (case.mask, case.mask_sha256, "mask")):
            if rel is None:
                continue
            listed.add(rel)
            path = dataset / rel
            if not path.is_file():
                problems.append(f"{path}: {kind} listed in the manifest is missing")
                continue
            actual = sha256_file(path)
            if actual != digest:
                problems.append(f"{path}: sha256 {actual[:12]}... differs from the manifest's {str(digest)[:12]}...")
                continue
            try:
                array = read_image(path) if kind == "frame" else _read_canonical_mask(path)
            except ReadError as exc:
                problems.append(str(exc))
                continue
            if tuple(array.shape[:2]) != tuple(case.shape):
                problems.append(f"{path}: shape {array.shape[:2]} differs from the manifest's {tuple(case.shape)}")
            elif kind == "mask" and structures_present(array) != tuple(case.structures):
                problems.append(
                    f"{path}: structures {list(structures_present(array))} differ from the manifest's {list(case.structures)}"
                )
    for sub in ("images", "masks"):
        folder = dataset / sub
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if f"{sub}/{path.name}" not in listed:
                    problems.append(f"{path}: not listed in the manifest")
    return problems


def _read_canonical_mask(path: Path) -> np.ndarray:
    raw = read_image_raw_labels(path)
    bad = sorted(set(np.unique(raw).tolist()) - {0, 1, 2})
    if bad:
        raise ReadError(f"{path}: labels {bad} in a canonical dataset (allowed: 0 background, 1 PS, 2 FH)")
    return read_mask(path)


def read_image_raw_labels(path: Path) -> np.ndarray:
    import cv2

    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ReadError(f"{path}: not a decodable image file")
    return array
