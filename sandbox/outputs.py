"""Validation of what a submission wrote to ``/output``, before anything is scored.

Only plain files directly in the output folder are read, never through a link; each
expected ``<case_id>.png`` must decode to a 2-D uint8 mask of the input frame's size with
labels in {0, 1, 2}; ``predictions.json`` must map known case ids to probabilities
finite in [0, 1]; a landmark challenge's ``landmarks.json`` must give each case's PS1,
PS2 and FH1 as finite points near its frame (:func:`iugc.challenge.landmarks.checked_landmarks`).
Valid files are copied into a clean folder for the evaluator; each bad
or missing case gets a participant-safe error and, when scored, the worst case.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from iugc.challenge.landmarks import checked_landmarks
from iugc.challenge.outputs import LANDMARKS_FILE, PROBABILITIES_FILE, valid_probability

MAX_MASK_BYTES = 64 << 20
MAX_JSON_BYTES = 16 << 20


@dataclass
class CollectedOutputs:
    errors: dict[str, str] = field(default_factory=dict)    # case id -> problem
    warnings: list[str] = field(default_factory=list)         # not a case's own
    valid_predictions: int = 0  # cases whose mask (or landmarks) passed the checks


def _shown(name: str) -> str:
    return ascii(name)[:100]


def _read_regular(path: Path, limit: int) -> bytes:
    """A plain file's bytes, refusing links and special files (O_NOFOLLOW)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{info.st_size} bytes, more than the {limit} allowed")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit + 1)
    finally:
        os.close(fd)


def check_mask(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Decode a PNG mask and check it against the contract; ValueError says what is wrong."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG file")
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise ValueError("PNG could not be decoded")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected a single-channel 8-bit mask, got shape {mask.shape} {mask.dtype}")
    if mask.shape != tuple(shape):
        raise ValueError(f"shape {mask.shape} differs from the input frame's {tuple(shape)}")
    labels = np.unique(mask)
    bad = labels[labels > 2]
    if bad.size:
        raise ValueError(f"labels {bad[:5].tolist()} outside the schema 0/1/2")
    return mask


def collect_outputs(output_dir: Path, shapes: dict[str, tuple[int, int]], dest: Path, *, tasks: tuple[str, ...]) -> CollectedOutputs:
    """Validate ``output_dir`` against the cases' input shapes and the challenge's ``tasks``;
    copy valid files to ``dest``.

    ``shapes`` maps each case id to its input (height, width). ``dest`` receives
    ``<case_id>.png`` for every valid mask and a clean ``predictions.json`` (classification),
    or a clean ``landmarks.json`` of the valid entries (a landmark challenge).
    """
    out = CollectedOutputs()
    dest.mkdir(parents=True, exist_ok=True)
    present: dict[str, os.DirEntry] = {}
    with os.scandir(output_dir) as entries:
        for entry in entries:
            present[entry.name] = entry
    if "landmarks" in tasks:
        _collect_landmarks(Path(output_dir), present, shapes, dest, out)
        return out
    for case_id, shape in shapes.items():
        name = f"{case_id}.png"
        if name not in present:
            out.errors[case_id] = f"missing output {name}"
            continue
        try:
            data = _read_regular(Path(output_dir) / name, MAX_MASK_BYTES)
            check_mask(data, shape)
        except (OSError, ValueError) as exc:
            reason = "a link (links are not followed)" if isinstance(exc, OSError) and exc.errno == 40 else exc
            out.errors[case_id] = f"invalid output {name}: {reason}"
            continue
        (dest / name).write_bytes(data)
        out.valid_predictions += 1
    expected = {f"{c}.png" for c in shapes} | {PROBABILITIES_FILE}
    unexpected = sorted(set(present) - expected)
    if unexpected:
        out.warnings.append(f"{len(unexpected)} unexpected files in /output ignored: " + ", ".join(_shown(n) for n in unexpected[:5]))
    if "classification" in tasks:
        probabilities = _collect_probabilities(Path(output_dir), present, shapes, out)
        (dest / PROBABILITIES_FILE).write_text(json.dumps({c: {"p_standard_plane": p} for c, p in probabilities.items()}))
    return out


def _collect_probabilities(output_dir: Path, present: dict, shapes: dict, out: CollectedOutputs) -> dict[str, float]:
    def note(case_id: str, problem: str) -> None:
        out.errors[case_id] = f"{out.errors[case_id]}; {problem}" if case_id in out.errors else problem

    if PROBABILITIES_FILE not in present:
        out.warnings.append(f"no {PROBABILITIES_FILE}: every p_standard_plane is missing (scored as worst case)")
        return {}
    try:
        data = json.loads(_read_regular(output_dir / PROBABILITIES_FILE, MAX_JSON_BYTES))
        if not isinstance(data, dict):
            raise ValueError("the top level must be an object {case_id: {\"p_standard_plane\": p}}")
    except (OSError, ValueError) as exc:
        out.warnings.append(f"{PROBABILITIES_FILE} unreadable ({exc}); every p_standard_plane is missing")
        return {}
    unknown = [k for k in data if k not in shapes]
    if unknown:
        out.warnings.append(f"{PROBABILITIES_FILE}: {len(unknown)} unknown case ids ignored: " + ", ".join(_shown(k) for k in unknown[:5]))
    probabilities = {}
    for case_id in shapes:
        entry = data.get(case_id)
        p = entry.get("p_standard_plane") if isinstance(entry, dict) else None
        if p is None:
            note(case_id, "missing p_standard_plane")
        elif valid_probability(p):
            probabilities[case_id] = float(p)
        else:
            note(case_id, f"p_standard_plane {_shown(str(p))} is not a finite number in [0, 1]")
    return probabilities


def _collect_landmarks(output_dir: Path, present: dict, shapes: dict, dest: Path, out: CollectedOutputs) -> None:
    unexpected = sorted(set(present) - {LANDMARKS_FILE})
    if unexpected:
        out.warnings.append(f"{len(unexpected)} unexpected files in /output ignored: " + ", ".join(_shown(n) for n in unexpected[:5]))
    if LANDMARKS_FILE not in present:
        out.errors.update({case_id: f"missing output {LANDMARKS_FILE}" for case_id in shapes})
        return
    try:
        data = json.loads(_read_regular(output_dir / LANDMARKS_FILE, MAX_JSON_BYTES))
        if not isinstance(data, dict):
            raise ValueError('the top level must be an object {case_id: {"PS1": [x, y], "PS2": [x, y], "FH1": [x, y]}}')
    except (OSError, ValueError) as exc:
        reason = "a link (links are not followed)" if isinstance(exc, OSError) and exc.errno == 40 else exc
        out.errors.update({case_id: f"invalid output {LANDMARKS_FILE}: {reason}" for case_id in shapes})
        return
    unknown = [k for k in data if k not in shapes]
    if unknown:
        out.warnings.append(f"{LANDMARKS_FILE}: {len(unknown)} unknown case ids ignored: " + ", ".join(_shown(k) for k in unknown[:5]))
    clean = {}
    for case_id, shape in shapes.items():
        if case_id not in data:
            out.errors[case_id] = f"missing output: no entry in {LANDMARKS_FILE}"
            continue
        try:
            clean[case_id] = {name: list(point) for name, point in checked_landmarks(data[case_id], shape).items()}
        except ValueError as exc:
            out.errors[case_id] = f"invalid output in {LANDMARKS_FILE}: {exc}"
    (dest / LANDMARKS_FILE).write_text(json.dumps(clean))
    out.valid_predictions = len(clean)
