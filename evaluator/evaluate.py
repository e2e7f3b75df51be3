"""Score a folder of predicted masks against ground truth: ``iugc evaluate``.

Ground truth is either a dataset imported by ``iugc data import`` (a folder with
``manifest.json``; classification labels come from it) or a plain folder of
``<case_id>.png|.mha|.nii.gz`` masks. Predictions are ``<case_id>.png|.mha|.nii.gz``
masks, plus an optional ``predictions.json`` mapping case ids to
``{"p_standard_plane": p}`` for challenges with a classification task. A landmark
challenge (IUGC 2025) reads ``landmarks.json`` instead of masks and its truth points from
the manifest.

One bad case never aborts the run: it gets worst-case values and an ``error``. Truth
biometry is cached by the truth file's sha256 (it is fixed across submissions), and the
cases are spread over the available cores.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iugc.challenge.biometry import Biometry, biometry
from iugc.challenge.definition import ChallengeDefinition
from iugc.challenge.landmarks import checked_landmarks
from iugc.challenge.outputs import LANDMARKS_FILE, PROBABILITIES_FILE, valid_probability
from iugc.common.files import sha256_bytes, sha256_file
from iugc.data_manifest.io import MASK_SUFFIXES, ReadError, case_id_of, read_mask
from iugc.data_manifest.manifest import MANIFEST_NAME, load_manifest
from iugc.evaluator.provenance import provenance
from iugc.evaluator.scores import (
    CaseTable,
    aggregate,
    biometry_values,
    catalogue_values,
    challenge_score,
    empty_case,
    segmentation_values,
    landmark_values,
    worst_case_values,
)

CACHE_VERSION = "3"  # 3: the ellipse method leaves AoP undefined (not 0) at 5 points or fewer


class EvaluationInputError(ValueError):
    """The run cannot start (a folder missing, no ground truth); the message says what to do."""


@dataclass(frozen=True)
class TruthCase:
    case_id: str
    mask_path: str | None
    standard_plane: bool | None
    mask_sha256: str | None = None   # from the manifest; None: computed from the file when needed
    split: str | None = None         # from the manifest; None for a plain folder of masks
    landmarks: dict | None = None    # IUGC 2025's points, from the manifest
    shape: tuple[int, int] | None = None


@dataclass(frozen=True)
class TruthSet:
    """The truth cases of a ground-truth folder, with what identifies the dataset."""

    folder: Path
    cases: list[TruthCase]
    manifest_sha256: str | None = None   # of manifest.json; None for a plain folder of masks
    synthetic: bool = False

    def select(self, *, split: str | None = None, case_ids=None) -> "TruthSet":
        """The cases of one split and/or of a list of ids; EvaluationInputError names what
        is wrong (no manifest for a split, an empty split, ids not in the truth)."""
        cases = self.cases
        if split is not None:
            if self.manifest_sha256 is None:
                raise EvaluationInputError(f"--split needs a dataset with manifest.json (from `iugc data import`); {self.folder} is a plain folder of masks")
            cases = [c for c in cases if c.split == split]
            if not cases:
                counts: dict[str, int] = {}
                for c in self.cases:
                    counts[c.split] = counts.get(c.split, 0) + 1
                shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                raise EvaluationInputError(f"no case of {self.folder} is in split {split!r} (its splits: {shown}); assign splits with `iugc data split`")
        if case_ids is not None:
            wanted = list(dict.fromkeys(case_ids))
            known = {c.case_id for c in cases}
            unknown = [i for i in wanted if i not in known]
            if unknown:
                where = f"split {split!r} of {self.folder}" if split is not None else str(self.folder)
                shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
                raise EvaluationInputError(f"{len(unknown)} of the {len(wanted)} selected case ids are not in {where}: {shown}")
            if not wanted:
                raise EvaluationInputError("the case list selects no case; give one case id per line")
            chosen = set(wanted)
            cases = [c for c in cases if c.case_id in chosen]
        return TruthSet(self.folder, cases, self.manifest_sha256, self.synthetic)

    def with_landmarks(self) -> "TruthSet":
        """The cases with landmark truth (a landmark challenge scores only those);
        EvaluationInputError when there is none."""
        cases = [c for c in self.cases if c.landmarks is not None]
        if not cases:
            raise EvaluationInputError(
                f"no case of {self.folder} has landmark truth (PS1, PS2, FH1); import an IUGC 2025 release with "
                f"`iugc data import --layout iugc2025`, or derive the points from masks with `iugc data landmarks {self.folder}`")
        return TruthSet(self.folder, cases, self.manifest_sha256, self.synthetic)

    def provenance_entries(self) -> list[tuple[str, str | None, bool | None]]:
        """``(case_id, truth mask sha256, standard_plane)`` per case, for the provenance hash."""
        return [(c.case_id, c.mask_sha256 if c.mask_sha256 or c.mask_path is None else sha256_file(c.mask_path), c.standard_plane)
                for c in self.cases]


def read_case_list(path: Path) -> list[str]:
    """Case ids from a text file, one per line; blank lines and ``#`` comments are skipped.

    Raises EvaluationInputError when the file cannot be read or lists no id.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationInputError(f"--cases {path}: cannot read the case list ({exc.__class__.__name__}: {exc})") from None
    ids = [line.split("#", 1)[0].strip() for line in lines]
    ids = [i for i in ids if i]
    if not ids:
        raise EvaluationInputError(f"--cases {path}: no case id in the file; give one case id per line")
    return ids


def default_cache_dir() -> Path:
    root = os.environ.get("IUGC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "iugc"
    )
    return Path(root) / "truth-biometry"


def _folder_problem(path: Path, what: str) -> str | None:
    if not path.exists():
        return f"{what} {path} does not exist"
    if not path.is_dir():
        return f"{what} {path} is a file, not a folder"
    return None


def discover_truth(gt_dir: Path) -> TruthSet:
    """The truth cases of a dataset folder (with manifest) or of a plain folder of masks."""
    gt_dir = Path(gt_dir)
    problem = _folder_problem(gt_dir, "ground truth folder")
    if problem:
        raise EvaluationInputError(problem)
    if (gt_dir / MANIFEST_NAME).is_file():
        manifest = load_manifest(gt_dir)
        cases = [
            TruthCase(c.case_id, str(gt_dir / c.mask) if c.mask else None, c.standard_plane, c.mask_sha256, c.split,
                      c.aop_landmarks.points() if c.aop_landmarks else None, tuple(c.shape))
            for c in manifest.cases
        ]
        return TruthSet(gt_dir, cases, sha256_file(gt_dir / MANIFEST_NAME), manifest.synthetic)
    cases = []
    for path in sorted(gt_dir.iterdir()):
        case_id = case_id_of(path)
        if case_id is not None and path.name.lower().endswith(MASK_SUFFIXES):
            cases.append(TruthCase(case_id, str(path), None))
    if not cases:
        raise EvaluationInputError(
            f"no ground truth in {gt_dir}: expected manifest.json (from `iugc data import`) "
            "or <case_id>.png|.mha|.nii.gz masks"
        )
    return TruthSet(gt_dir, cases)


def discover_predictions(pred_dir: Path) -> tuple[dict[str, str], dict[str, float], list[str]]:
    """Mask paths by case id, probabilities by case id, and problems found on the way."""
    pred_dir = Path(pred_dir)
    problem = _folder_problem(pred_dir, "predictions folder")
    if problem:
        raise EvaluationInputError(problem)
    masks: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(pred_dir.iterdir()):
        if path.name == PROBABILITIES_FILE:
            continue
        case_id = case_id_of(path)
        if case_id is None or not path.name.lower().endswith(MASK_SUFFIXES):
            problems.append(f"{path.name}: ignored (not a <case_id>.png|.mha|.nii.gz mask)")
        elif case_id in masks:
            problems.append(f"{path.name}: ignored (case {case_id} has a mask already)")
        else:
            masks[case_id] = str(path)
    probabilities: dict[str, float] = {}
    prob_path = pred_dir / PROBABILITIES_FILE
    if prob_path.is_file():
        try:
            data = json.loads(prob_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level must be an object {case_id: {...}}")
        except ValueError as exc:
            problems.append(f"{PROBABILITIES_FILE}: unreadable ({exc}); all probabilities count as missing")
            data = {}
        for case_id, entry in data.items():
            p = entry.get("p_standard_plane") if isinstance(entry, dict) else None
            if valid_probability(p):
                probabilities[case_id] = float(p)
            else:
                problems.append(f"{PROBABILITIES_FILE}: case {case_id}: p_standard_plane must be a number in [0, 1]")
    return masks, probabilities, problems


def discover_landmarks(pred_dir: Path, shapes: dict[str, tuple[int, int]]) -> tuple[dict[str, dict], dict[str, str], list[str]]:
    """Checked points by case id from ``pred_dir/landmarks.json``, each bad entry's problem
    by case id (:func:`iugc.challenge.landmarks.checked_landmarks`), and warnings (an unreadable
    file, entries for no truth case)."""
    pred_dir = Path(pred_dir)
    problem = _folder_problem(pred_dir, "predictions folder")
    if problem:
        raise EvaluationInputError(problem)
    path = pred_dir / LANDMARKS_FILE
    if not path.is_file():
        return {}, {}, [f"no {LANDMARKS_FILE} in {pred_dir}: every case scores the worst case"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the top level must be an object {case_id: {PS1, PS2, FH1}}")
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, {}, [f"{LANDMARKS_FILE}: unreadable ({str(exc)[:200]}); every case scores the worst case"]
    points, bad, warnings = {}, {}, []
    for case_id, entry in data.items():
        if case_id not in shapes:
            continue
        try:
            points[case_id] = checked_landmarks(entry, shapes[case_id])
        except ValueError as exc:
            bad[case_id] = str(exc)
    stray = sorted(set(data) - set(shapes))
    if stray:
        shown = ", ".join(str(s)[:40] for s in stray[:5]) + (" ..." if len(stray) > 5 else "")
        warnings.append(f"{LANDMARKS_FILE}: {len(stray)} entries match no ground-truth case and were ignored: {shown}")
    return points, bad, warnings


def evaluate_landmark_case(truth: TruthCase, points: dict | None, problem: str | None, challenge: ChallengeDefinition) -> dict:
    """One case of a landmark challenge: radial errors, MRE and AoP error, or the worst
    case with the reason when the prediction is missing or invalid."""
    case = {**landmark_values(points, truth.landmarks, challenge), "error": None}
    if points is None:
        case["error"] = (f"invalid prediction: {problem} (scored as worst case)" if problem else
                         f"missing prediction: no entry in {LANDMARKS_FILE} (scored as worst case)")
    return case


class TruthCache:
    """Decoded truth masks and their biometry, by (truth sha256, AoP method).

    One file per entry: a JSON header line (biometry, shape) then the zlib-compressed
    mask, so a cached case costs a hash and a small read instead of a PNG decode and the
    biometry. Entries are written atomically; an unreadable entry is recomputed.
    """

    def __init__(self, directory: Path | None):
        self.directory = None if directory is None else Path(directory)

    def _path(self, digest: str, method: str) -> Path:
        return self.directory / f"v{CACHE_VERSION}-{method}" / digest[:2] / f"{digest}.bin"

    def get(self, digest: str, method: str) -> tuple[np.ndarray, Biometry] | None:
        if self.directory is None:
            return None
        try:
            header, _, payload = self._path(digest, method).read_bytes().partition(b"\n")
            meta = json.loads(header)
            mask = np.frombuffer(zlib.decompress(payload), dtype=np.uint8).reshape(meta["shape"])
            return mask, _biometry_from_dict(meta["biometry"])
        except (OSError, ValueError, KeyError, TypeError, zlib.error):
            return None

    def put(self, digest: str, method: str, mask: np.ndarray, value: Biometry) -> None:
        if self.directory is None:
            return
        path = self._path(digest, method)
        header = json.dumps({"shape": list(mask.shape), "biometry": value.to_dict()}).encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(header + b"\n" + zlib.compress(np.ascontiguousarray(mask).tobytes(), 1))
            os.replace(tmp, path)
        except OSError as exc:  # a read-only cache slows the run down but never fails it
            print(f"warning: could not write the truth cache at {path}: {exc}", file=sys.stderr)


def _biometry_from_dict(data: dict) -> Biometry:
    def point(p):
        return None if p is None else (float(p[0]), float(p[1]))

    ends = data.get("ps_endpoints")
    return Biometry(
        aop=data["aop"],
        hsd=data["hsd"],
        ps_endpoints=None if ends is None else (point(ends[0]), point(ends[1])),
        hsd_point=point(data.get("hsd_point")),
        tangent_point=point(data.get("tangent_point")),
    )


def _load_truth(path: str, method: str, cache: TruthCache) -> tuple[np.ndarray, Biometry]:
    """The truth mask and its biometry, from the cache when its checksum is known."""
    data = Path(path).read_bytes()
    digest = sha256_bytes(data)
    cached = cache.get(digest, method)
    if cached is not None:
        return cached
    mask = read_mask(path)
    value = biometry(mask, method)
    cache.put(digest, method, mask, value)
    return mask, value


def evaluate_case(
    truth: TruthCase,
    pred_path: str | None,
    challenge: ChallengeDefinition,
    cache: TruthCache,
) -> dict:
    """Evaluate one case; never raises for bad input (it becomes the case's ``error``)."""
    case = empty_case()
    if truth.mask_path is None:
        return case  # classification-only case (a non-standard frame)
    method = challenge.aop_method
    try:
        gt, gt_bio = _load_truth(truth.mask_path, method, cache)
    except (ReadError, OSError) as exc:
        case["error"] = f"ground truth unreadable: {exc}"
        return case
    if pred_path is None:
        case.update(worst_case_values(challenge, gt_bio))
        case["error"] = "missing prediction: no mask for this case (scored as worst case)"
        return case
    try:
        pred = read_mask(pred_path)
        if pred.shape != gt.shape:
            raise ReadError(
                f"{Path(pred_path).name}: shape {pred.shape} differs from the ground truth's {gt.shape}"
            )
        case.update(segmentation_values(pred, gt))
        case.update(catalogue_values(pred, gt, challenge))
        case.update(biometry_values(biometry(pred, method), gt_bio, challenge))
    except (ReadError, OSError, ValueError) as exc:
        case.update(worst_case_values(challenge, gt_bio))
        case["error"] = f"invalid prediction: {exc} (scored as worst case)"
    return case


# Worker-process state, set once per process by _init_worker (fork shares it for free).
_WORKER: dict = {}


def _init_worker(challenge: ChallengeDefinition, cache_dir: Path | None) -> None:
    import cv2

    cv2.setNumThreads(1)
    _WORKER["challenge"] = challenge
    _WORKER["cache"] = TruthCache(cache_dir)


def _init_pool_worker(challenge: ChallengeDefinition, cache_dir: Path | None) -> None:
    """A forked pool worker's set-up: :func:`iugc.common.signals.pool_worker_signals`, then the state."""
    from iugc.common.signals import pool_worker_signals

    pool_worker_signals()
    _init_worker(challenge, cache_dir)


def _work(item: tuple[TruthCase, str | None]) -> dict:
    truth, pred_path = item
    try:
        return evaluate_case(truth, pred_path, _WORKER["challenge"], _WORKER["cache"])
    except Exception as exc:  # noqa: BLE001 - one case must never abort a long run
        case = empty_case()
        case["error"] = f"internal error while scoring: {type(exc).__name__}: {exc}"
        return case


def evaluate_folder(
    predictions: Path,
    ground_truth: Path,
    challenge: ChallengeDefinition,
    *,
    jobs: int | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    split: str | None = None,
    case_ids=None,
) -> dict:
    """Evaluate every truth case; returns the result document (see ``docs/submission.md``).

    ``split`` (a manifest split name) and ``case_ids`` (an iterable of ids) select the
    cases scored; None: all. ``jobs`` defaults to the number of usable cores;
    ``cache_dir`` None disables the truth cache. Problems that are not a case's own
    (stray files) are listed in ``warnings``.
    """
    available = discover_truth(Path(ground_truth))
    if "landmarks" in challenge.tasks:
        available = available.with_landmarks()
    selected = available.select(split=split, case_ids=case_ids)
    truths = selected.cases
    if "landmarks" in challenge.tasks:
        points, bad, warnings = discover_landmarks(Path(predictions), {t.case_id: t.shape for t in truths})
        results = [evaluate_landmark_case(t, points.get(t.case_id), bad.get(t.case_id), challenge) for t in truths]
        return _result(challenge, selected, split, dict(zip((t.case_id for t in truths), results)), warnings)
    masks, probabilities, warnings = discover_predictions(Path(predictions))
    if len(truths) < len(available.cases):  # a subset: masks of the other truth cases are not stray, only unscored
        unselected = {c.case_id for c in available.cases} - {t.case_id for t in truths}
        masks = {k: v for k, v in masks.items() if k not in unselected}
    truth_ids = {t.case_id for t in truths}
    stray = sorted(set(masks) - truth_ids)
    if stray:
        shown = ", ".join(stray[:5]) + (" ..." if len(stray) > 5 else "")
        warnings.append(f"{len(stray)} predicted masks match no ground-truth case and were ignored: {shown}")
    items = [(t, masks.get(t.case_id)) for t in truths]
    jobs = max(1, min(jobs or len(os.sched_getaffinity(0)), len(items)))
    results = _run(items, challenge, cache_dir, jobs, progress)
    cases: dict[str, dict] = {}
    for truth, case in zip(truths, results):
        if "classification" in challenge.tasks and truth.standard_plane is not None:
            label = int(truth.standard_plane)
            p = probabilities.get(truth.case_id)
            if p is None:
                p = float(1 - label)  # missing probability: the worst case
                note = "missing p_standard_plane (scored as worst case)"
                case["error"] = note if case["error"] is None else f"{case['error']}; {note}"
            case["standard_plane"] = label
            case["p_standard_plane"] = p
        cases[truth.case_id] = case
    return _result(challenge, selected, split, cases, warnings)


def _result(challenge: ChallengeDefinition, selected: TruthSet, split: str | None, cases: dict[str, dict], warnings: list[str]) -> dict:
    """The result document of scored ``cases``: aggregates, score, provenance, warnings."""
    table = CaseTable.from_cases(cases)
    aggregates = aggregate(table, challenge)
    aggregates["n_errors"] = sum(1 for c in cases.values() if c["error"])
    score, note = challenge_score(aggregates, challenge)
    return {
        "challenge": challenge.name,
        "aop_method": challenge.aop_method,
        "provenance": truth_provenance(selected, challenge, split),
        "cases": cases,
        "aggregates": aggregates,
        "score": score,
        "score_note": note,
        "warnings": warnings,
    }


def truth_provenance(truth: TruthSet, challenge: ChallengeDefinition, split: str | None = None, image_digest: str | None = None) -> dict:
    """The result's ``provenance`` block (see :mod:`iugc.evaluator.provenance`) for these truth cases."""
    return provenance(challenge, truth.provenance_entries(), split=split, dataset_manifest_sha256=truth.manifest_sha256,
                      synthetic_truth=truth.synthetic, image_digest=image_digest)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _run(items, challenge, cache_dir, jobs, progress) -> list[dict]:
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="evaluating", unit="case", file=sys.stderr)
    else:
        bar = _NoBar()  # tqdm's import costs start-up time on every quiet run
    try:
        if jobs == 1:
            _init_worker(challenge, cache_dir)
            out = []
            for item in items:
                out.append(_work(item))
                bar.update()
            return out
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        chunk = max(1, min(16, len(items) // (jobs * 8) or 1))
        with context.Pool(jobs, initializer=_init_pool_worker, initargs=(challenge, cache_dir)) as pool:
            out = []
            for case in pool.imap(_work, items, chunksize=chunk):
                out.append(case)
                bar.update()
            pool.close()  # let the workers finish on their own; the with-block's terminate is for errors
            pool.join()
            return out
    finally:
        bar.close()
