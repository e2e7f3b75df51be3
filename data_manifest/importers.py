"""Importers from the public release layouts into the canonical dataset layout.

Layouts (``iugc data import --layout``):

* ``psfhs`` -- the PSFHS release: ``image_mha/<id>.mha`` (3 x H x W, identical channels)
  and ``label_mha/<id>.mha`` (0/1/2).
* ``png`` -- ``images/<id>.png`` and ``masks/<id>.png`` (0/1/2 or raw 0/7/8); a frame with
  no mask is imported unlabelled.
* ``iugc2024`` -- the IUGC 2024 release as described in ``docs/challenge-definition.md``:
  ``videos/<video>.avi``, ``seg/<video>/<frame>.png`` masks with raw 7/8 labels,
  ``classification.csv`` (``video,frame,label``, 1 = standard plane) and
  ``landmark.json`` (``{"<video>_<frame>": {"ps_points", "hsd_point", "aop_tangency",
  "aop", "hsd"}}``).
* ``iugc2025`` -- the IUGC 2025 release: frames and one CSV with the columns ``Filename,
  PS1, PS2, FH1``, each point written ``[x, y]`` or ``(x, y)`` in the frame's pixel space
  (frames found beside the CSV or, by name, in a folder below it).

Every importer validates every file first and writes the dataset into a staging folder
renamed into place at the end: on any bad file, the error lists every problem (one line
per file) and nothing is left at the destination.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from iugc.challenge.labels import FH, PS
from iugc.common.files import commit_folder, is_new_folder, sha256_bytes, stage_folder
from iugc.data_manifest.io import ReadError, case_id_of, encode_png, read_image, read_mask
from iugc.data_manifest.manifest import CASE_ID, MANIFEST_NAME, CaseRecord, Manifest, ManifestError, load_manifest, write_manifest

LAYOUTS = ("psfhs", "png", "iugc2024", "iugc2025")


class ImportProblems(ValueError):
    """The source has bad files; ``problems`` has one message per file."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the source; nothing was written:\n" + "\n".join(problems))


def structures_present(mask: np.ndarray) -> tuple[str, ...]:
    present = []
    if np.any(mask == PS):
        present.append("ps")
    if np.any(mask == FH):
        present.append("fh")
    return tuple(present)


class DatasetWriter:
    """Writes a canonical dataset into a staging folder; :meth:`commit` moves it into place."""

    def __init__(self, dest: Path):
        self.dest = Path(dest)
        if not is_new_folder(self.dest):
            raise FileExistsError(f"{self.dest} exists and is not empty; choose a new destination folder")
        self.staging = stage_folder(self.dest)
        (self.staging / "images").mkdir()
        (self.staging / "masks").mkdir()
        self.cases: list[CaseRecord] = []

    def add(
        self,
        case_id: str,
        image: np.ndarray,
        mask: np.ndarray | None,
        *,
        source: str,
        video: str | None = None,
        frame_index: int | None = None,
        standard_plane: bool | None = None,
        standard_plane_derived: bool = False,
        landmarks: dict | None = None,
        aop_landmarks: dict | None = None,
    ) -> CaseRecord:
        if mask is not None and mask.shape != image.shape[:2]:
            raise ReadError(f"{source}: mask shape {mask.shape} differs from the frame's {image.shape[:2]}")
        image_png = encode_png(image)
        (self.staging / "images" / f"{case_id}.png").write_bytes(image_png)
        record = CaseRecord(
            case_id=case_id,
            source=source,
            video=video,
            frame_index=frame_index,
            image=f"images/{case_id}.png",
            image_sha256=sha256_bytes(image_png),
            shape=image.shape[:2],
            standard_plane=standard_plane,
            standard_plane_derived=standard_plane_derived,
            landmarks=landmarks,
            aop_landmarks=aop_landmarks,
        )
        if mask is not None:
            mask_png = encode_png(mask)
            (self.staging / "masks" / f"{case_id}.png").write_bytes(mask_png)
            record.mask = f"masks/{case_id}.png"
            record.mask_sha256 = sha256_bytes(mask_png)
            record.structures = structures_present(mask)
        self.cases.append(record)
        return record

    def commit(self, name: str, layout: str, *, synthetic: bool = False, description: str = "") -> Manifest:
        manifest = Manifest(
            name=name, source_layout=layout, synthetic=synthetic, description=description, cases=self.cases
        )
        write_manifest(self.staging, manifest)
        commit_folder(self.staging, self.dest)
        return manifest

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _pairs(images: dict[str, Path], masks: dict[str, Path], problems: list[str], need_mask: bool):
    for case_id in sorted(set(masks) - set(images)):
        problems.append(f"{masks[case_id]}: a mask with no frame")
    for case_id in sorted(images):
        if need_mask and case_id not in masks:
            problems.append(f"{images[case_id]}: a frame with no mask")
            continue
        yield case_id, images[case_id], masks.get(case_id)


def _by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        raise ImportProblems([f"{folder}: folder missing"])
    found = {}
    for path in sorted(folder.iterdir()):
        for suffix in suffixes:
            if path.name.lower().endswith(suffix):
                found[path.name[: -len(suffix)]] = path
    return found


def derived_label(mask: np.ndarray | None) -> dict:
    """``standard_plane`` by the IUGC rule (both PS and FH visible) for a release that has
    no labels, marked derived; nothing for an unlabelled frame.

    >>> derived_label(np.array([[0, 1], [2, 2]], np.uint8))
    {'standard_plane': True, 'standard_plane_derived': True}
    >>> derived_label(None)
    {}
    """
    if mask is None:
        return {}
    return {"standard_plane": set(structures_present(mask)) == {"ps", "fh"}, "standard_plane_derived": True}


def _read_pair(image_path: Path, mask_path: Path | None, problems: list[str]):
    try:
        image = read_image(image_path)
        mask = read_mask(mask_path) if mask_path is not None else None
    except ReadError as exc:
        problems.append(str(exc))
        return None
    if mask is not None and mask.shape != image.shape:
        problems.append(f"{mask_path}: mask shape {mask.shape} differs from its frame's {image.shape}")
        return None
    return image, mask


def _frame_cases_psfhs(source: Path, problems: list[str]) -> Iterator[tuple]:
    images = _by_stem(source / "image_mha", (".mha",))
    masks = _by_stem(source / "label_mha", (".mha",))
    for case_id, image_path, mask_path in _pairs(images, masks, problems, need_mask=True):
        pair = _read_pair(image_path, mask_path, problems)
        if pair:
            yield case_id, pair[0], pair[1], {"source": f"psfhs:{image_path.name}", **derived_label(pair[1])}


def _source_manifest(source: Path, problems: list[str]):
    """The manifest of a source that is itself a canonical dataset (labels, ``synthetic``), or None."""
    if not (source / MANIFEST_NAME).is_file():
        return None
    try:
        return load_manifest(source)
    except ManifestError as exc:
        problems.append(str(exc))
        return None


def _frame_cases_png(source: Path, problems: list[str]) -> Iterator[tuple]:
    images = _by_stem(source / "images", (".png",))
    masks = _by_stem(source / "masks", (".png",)) if (source / "masks").is_dir() else {}
    own = _source_manifest(source, problems)
    records = own.by_id() if own is not None else {}
    for case_id, image_path, mask_path in _pairs(images, masks, problems, need_mask=False):
        pair = _read_pair(image_path, mask_path, problems)
        if pair:
            record = records.get(case_id)
            label = (derived_label(pair[1]) if record is None or record.standard_plane is None else
                     {"standard_plane": record.standard_plane, "standard_plane_derived": record.standard_plane_derived})
            yield case_id, pair[0], pair[1], {"source": f"png:{image_path.name}", **label}


def _read_classification_csv(path: Path, problems: list[str]) -> dict[tuple[str, int], bool]:
    labels: dict[tuple[str, int], bool] = {}
    if not path.is_file():
        return labels
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"video", "frame", "label"} - set(reader.fieldnames or ())
        if missing:
            problems.append(f"{path}: missing columns {sorted(missing)} (expected video,frame,label)")
            return labels
        for line, row in enumerate(reader, start=2):
            try:
                frame, label = int(row["frame"]), int(row["label"])
                if label not in (0, 1):
                    raise ValueError("label must be 0 or 1")
            except ValueError as exc:
                problems.append(f"{path}:{line}: {exc}")
                continue
            labels[(row["video"], frame)] = bool(label)
    return labels


def _video_frames(path: Path, wanted: set[int], problems: list[str]) -> dict[int, np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        problems.append(f"{path}: not a readable video")
        return {}
    frames, index = {}, 0
    try:
        while wanted - frames.keys():
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                frames[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
            index += 1
    finally:
        capture.release()
    for missing in sorted(wanted - frames.keys()):
        problems.append(f"{path}: frame {missing} is past the end of the video ({index} frames)")
    return frames


def _frame_cases_iugc2024(source: Path, problems: list[str]) -> Iterator[tuple]:
    videos = _by_stem(source / "videos", (".avi",))
    labels = _read_classification_csv(source / "classification.csv", problems)
    landmarks: dict = {}
    landmark_path = source / "landmark.json"
    if landmark_path.is_file():
        try:
            landmarks = json.loads(landmark_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            problems.append(f"{landmark_path}: not valid JSON ({exc})")
    seg_root = source / "seg"
    for video, video_path in videos.items():
        seg = _by_stem(seg_root / video, (".png",)) if (seg_root / video).is_dir() else {}
        seg_frames: dict[int, Path] = {}
        for stem, path in seg.items():
            if stem.isdigit():
                seg_frames[int(stem)] = path
            else:
                problems.append(f"{path}: mask names must be frame numbers (<frame>.png)")
        wanted = set(seg_frames) | {frame for (v, frame) in labels if v == video}
        frames = _video_frames(video_path, wanted, problems)
        for index in sorted(frames):
            case_id = f"{video}_{index:04d}"
            mask = None
            if index in seg_frames:
                try:
                    mask = read_mask(seg_frames[index])
                except ReadError as exc:
                    problems.append(str(exc))
                    continue
                if mask.shape != frames[index].shape:
                    problems.append(f"{seg_frames[index]}: mask shape {mask.shape} differs from the frame's {frames[index].shape}")
                    continue
            yield case_id, frames[index], mask, {
                "source": f"iugc2024:{video_path.name}#{index}",
                "video": video,
                "frame_index": index,
                "standard_plane": labels.get((video, index)),
                "landmarks": landmarks.get(case_id),
            }
    for video in sorted({v for v, _ in labels} - set(videos)):
        problems.append(f"{source / 'classification.csv'}: video {video!r} has no videos/{video}.avi")


LANDMARK_COLUMNS = ("Filename", "PS1", "PS2", "FH1")


def parse_point(text: str) -> tuple[float, float]:
    """A point written ``[x, y]`` or ``(x, y)`` (IUGC 2025's CSV) as finite floats; ValueError
    saying what is wrong otherwise.

    >>> parse_point("[12.5, 40]"), parse_point(" (3, 4) ")
    ((12.5, 40.0), (3.0, 4.0))
    """
    inner = text.strip()
    if len(inner) < 2 or (inner[0], inner[-1]) not in (("[", "]"), ("(", ")")):
        raise ValueError(f"{text.strip()[:40]!r} is not a point; write it [x, y] or (x, y)")
    parts = inner[1:-1].split(",")
    try:
        x, y = (float(part) for part in parts)
    except ValueError:
        raise ValueError(f"{text.strip()[:40]!r} is not a point; write it [x, y] or (x, y) with two numbers") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"{text.strip()[:40]!r} has a coordinate that is not a finite number")
    return x, y


def _landmark_csv(source: Path, problems: list[str]) -> Path | None:
    found = sorted(source.glob("*.csv"))
    if len(found) != 1:
        problems.append(f"{source}: expected one CSV of landmarks ({', '.join(LANDMARK_COLUMNS)}) in the folder, "
                        f"found {len(found)}" + (f": {', '.join(p.name for p in found)}" if found else ""))
        return None
    return found[0]


def _frame_cases_iugc2025(source: Path, problems: list[str]) -> Iterator[tuple]:
    path = _landmark_csv(source, problems)
    if path is None:
        return
    by_name: dict[str, list[Path]] = {}
    for frame in source.rglob("*"):
        if frame.is_file() and case_id_of(frame) is not None:
            by_name.setdefault(frame.name, []).append(frame)
    seen: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LANDMARK_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            problems.append(f"{path}: missing columns {missing} (expected {', '.join(LANDMARK_COLUMNS)})")
            return
        for line, row in enumerate(reader, start=2):
            name = (row["Filename"] or "").strip()
            case_id = case_id_of(Path(name)) or ""
            if not re.fullmatch(CASE_ID, case_id):
                problems.append(f"{path}:{line}: Filename {name[:80]!r} is not a frame file named <case id>.png|.jpg|... "
                                "(a case id: letters, digits, '_', '-', '.')")
                continue
            if case_id in seen:
                problems.append(f"{path}:{line}: {name} again (first on line {seen[case_id]})")
                continue
            seen[case_id] = line
            try:
                points = {key: parse_point(row[key] or "") for key in LANDMARK_COLUMNS[1:]}
            except ValueError as exc:
                problems.append(f"{path}:{line}: {exc}")
                continue
            candidates = [source / name] if (source / name).is_file() else by_name.get(Path(name).name, [])
            if len(candidates) != 1:
                problems.append(f"{path}:{line}: frame {name} " + ("not found in the folder" if not candidates else
                                f"found {len(candidates)} times ({', '.join(str(c) for c in candidates[:3])})"))
                continue
            try:
                image = read_image(candidates[0])
            except ReadError as exc:
                problems.append(str(exc))
                continue
            h, w = image.shape
            outside = [k for k, (x, y) in points.items() if not (-1 <= x <= w and -1 <= y <= h)]
            if outside:
                problems.append(f"{path}:{line}: {', '.join(outside)} of {name} lie outside its {w} x {h} frame")
                continue
            yield case_id, image, None, {"source": f"iugc2025:{candidates[0].relative_to(source)}",
                                         "aop_landmarks": points}


SYNTHETIC_MARKER = "SYNTHETIC.txt"  # the file `iugc data phantom` writes into the raw layouts it makes


def is_synthetic(source: Path) -> bool:
    """Whether a source folder holds synthetic data: its own manifest says so (a phantom
    dataset) or it carries the phantom's ``SYNTHETIC`` marker file (raw phantom clips)."""
    source = Path(source)
    if (source / SYNTHETIC_MARKER).is_file():
        return True
    try:
        return (source / MANIFEST_NAME).is_file() and load_manifest(source).synthetic
    except ManifestError:
        return False


READERS: dict[str, Callable[[Path, list[str]], Iterator[tuple]]] = {
    "psfhs": _frame_cases_psfhs,
    "png": _frame_cases_png,
    "iugc2024": _frame_cases_iugc2024,
    "iugc2025": _frame_cases_iugc2025,
}


def import_dataset(layout: str, source: Path, dest: Path, *, name: str | None = None, progress: bool = True) -> Manifest:
    """Import ``source`` in ``layout`` into a new canonical dataset at ``dest``.

    Raises ImportProblems (every bad file listed) with nothing written at ``dest``.
    """
    from tqdm import tqdm

    if layout not in READERS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {list(READERS)}")
    source = Path(source)
    if not source.is_dir():
        raise ImportProblems([f"{source}: source folder does not exist"])
    problems: list[str] = []
    writer = DatasetWriter(dest)
    try:
        for case_id, image, mask, meta in tqdm(
            READERS[layout](source, problems), desc=f"importing {layout}", unit="case", disable=not progress
        ):
            writer.add(case_id, image, mask, **meta)
        if not writer.cases and not problems:
            problems.append(f"{source}: no cases found for layout {layout!r}")
        if problems:
            raise ImportProblems(problems)
        synthetic = is_synthetic(source)
        return writer.commit(name or Path(dest).name, layout, synthetic=synthetic,
                             description=("SYNTHETIC " if synthetic else "") + f"imported from {source}")
    except BaseException:
        writer.abort()
        raise
