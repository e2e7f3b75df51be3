"""Per-case values, their reduction to aggregates, and the challenge score.

Per case (pure functions): :func:`segmentation_values` (Dice/HD/ASD per structure),
:func:`biometry_values` (AoP/HSD of prediction and truth and their errors) and
:func:`worst_case_values` (a missing or invalid prediction). Reduction is separate:
:class:`CaseTable` holds the per-case values as arrays and :func:`aggregate` reduces any
subset of cases (the bootstrap reuses it), :func:`challenge_score` applies the formula.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iugc.challenge.biometry import Biometry
from iugc.challenge.definition import CASE_VALUE_METRICS, CATALOGUE_METRICS, SEGMENTATION_METRICS, ChallengeDefinition, ScoreTerm
from iugc.challenge.labels import STRUCTURES
from iugc.challenge.landmarks import LANDMARKS, aop_from_landmarks, radial_errors
from iugc.evaluator.classification import CLASSIFICATION_FUNCTIONS
from iugc.evaluator.metrics import hd95, nsd, precision, sensitivity, structure_metrics

SEGMENTATION_KEYS = tuple(f"{m}_{s}" for m in ("dice", "hd", "asd") for s in STRUCTURES)
BIOMETRY_KEYS = ("aop_pred", "aop_gt", "aop_error", "hsd_pred", "hsd_gt", "hsd_error")
RADIAL_KEYS = tuple(f"re_{name.lower()}" for name in LANDMARKS)
LANDMARK_KEYS = RADIAL_KEYS + ("mre",)
CASE_KEYS = SEGMENTATION_KEYS + BIOMETRY_KEYS + ("error",)
CATALOGUE_KEYS = tuple(f"{m}_{s}" for m in CATALOGUE_METRICS for s in STRUCTURES)
CLASSIFICATION_KEYS = ("standard_plane", "p_standard_plane")


def segmentation_values(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice, HD and ASD for PS, FH and all of canonical (H, W) label masks of equal shape.

    Returns ``{"dice_ps", "dice_fh", "dice_all", "hd_ps", ..., "asd_all"}``, unreduced.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    out = {}
    for name, values in structure_metrics(pred, gt, STRUCTURES).items():
        for metric, value in values.items():
            out[f"{metric}_{name}"] = value
    return out


def catalogue_values(pred: np.ndarray, gt: np.ndarray, challenge: ChallengeDefinition) -> dict[str, float]:
    """The catalogue metrics the challenge lists (hd95, nsd, sensitivity, precision) for PS,
    FH and all of canonical (H, W) label masks: ``{"hd95_ps", ..., "precision_all"}``,
    unreduced; empty when the challenge lists none. Empty-mask rules: evaluator/metrics.py.
    """
    wanted = [m for m in CATALOGUE_METRICS if m in challenge.metrics]
    if pred.shape != gt.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    functions = {"hd95": hd95, "sensitivity": sensitivity, "precision": precision,
                 "nsd": lambda p, g: nsd(p, g, challenge.nsd_tolerance_px)}
    out = {}
    for name, labels in STRUCTURES.items():
        p, g = np.isin(pred, labels), np.isin(gt, labels)
        for metric in wanted:
            out[f"{metric}_{name}"] = functions[metric](p, g)
    return out


def _error(pred: float | None, gt: float | None, worst: float, policy) -> tuple[float | None, float | None, float | None]:
    """``(pred, gt, error)`` after the challenge's undefined-value policy (see UndefinedPolicy)."""
    if gt is None and policy.ground_truth == "zero":
        gt = 0.0
    if pred is None and policy.prediction == "zero":
        pred = 0.0
    if gt is None:
        return pred, None, None  # truth undefined: excluded from the aggregate, counted
    if pred is None:
        return None, gt, worst  # prediction undefined: worst case
    return pred, gt, abs(pred - gt)


def biometry_values(pred: Biometry | None, gt: Biometry, challenge: ChallengeDefinition) -> dict:
    """AoP/HSD of prediction and truth and their absolute errors, with the undefined policy.

    ``pred`` None means no usable prediction. Undefined values become what the
    challenge's ``undefined_biometry`` says: with ``zero`` (PSFHS 2023) the reported value
    is 0.0 and the error is measured from it. HSD is only scored when the challenge has
    the ``hsd_error`` metric (the ellipse method defines no HSD).

    >>> from iugc.challenge.definition import load_challenge
    >>> v = biometry_values(None, Biometry(aop=110.0, hsd=None), load_challenge("psfhs2023"))
    >>> v["aop_pred"], v["aop_error"]
    (0.0, 110.0)
    >>> biometry_values(None, Biometry(aop=110.0, hsd=None), load_challenge("iugc2024"))["aop_error"]
    180.0
    """
    worst, policy = challenge.worst_case, challenge.undefined_biometry
    aop_pred, aop_gt, aop_error = _error(None if pred is None else pred.aop, gt.aop, worst.aop_error, policy)
    out = {"aop_pred": aop_pred, "aop_gt": aop_gt, "aop_error": aop_error,
           "hsd_pred": None if pred is None else pred.hsd, "hsd_gt": gt.hsd, "hsd_error": None}
    if "hsd_error" in challenge.metrics:
        out["hsd_pred"], out["hsd_gt"], out["hsd_error"] = _error(out["hsd_pred"], gt.hsd, worst.hsd_error, policy)
    return out


def worst_case_values(challenge: ChallengeDefinition, gt: Biometry | None) -> dict:
    """Values of a case whose prediction is missing or invalid (Metrics Reloaded practice)."""
    worst = challenge.worst_case
    out = {}
    families = ["dice", "hd", "asd"] + [m for m in CATALOGUE_METRICS if m in challenge.metrics]
    for name in STRUCTURES:
        for metric in families:
            out[f"{metric}_{name}"] = getattr(worst, metric)
    if gt is not None:
        out.update(biometry_values(None, gt, challenge))
    return out


def landmark_values(pred: dict | None, truth: dict, challenge: ChallengeDefinition) -> dict:
    """Radial error of each landmark (``re_ps1``, ``re_ps2``, ``re_fh1``, pixels), their
    mean ``mre``, and the AoP of prediction and truth from their points with its error,
    unreduced. ``pred`` None (missing or invalid) scores the challenge's worst case:
    ``worst_case.mre`` for every landmark and ``worst_case.aop_error``. An AoP the truth's
    points cannot define (PS1 or FH1 on PS2) follows ``undefined_biometry`` as for masks.

    >>> from iugc.challenge.definition import load_challenge
    >>> truth = {"PS1": (0, 0), "PS2": (10, 0), "FH1": (10, -10)}
    >>> v = landmark_values({"PS1": (0, 3), "PS2": (10, 0), "FH1": (10, -10)}, truth, load_challenge("iugc2025"))
    >>> v["re_ps1"], v["mre"], round(v["aop_error"], 2)
    (3.0, 1.0, 16.7)
    >>> landmark_values(None, truth, load_challenge("iugc2025"))["mre"]
    725.0
    """
    worst = challenge.worst_case
    gt_aop = aop_from_landmarks(truth)
    if pred is None:
        out = {key: worst.mre for key in LANDMARK_KEYS}
        pred_aop = None
    else:
        out = radial_errors(pred, truth)
        out["mre"] = float(np.mean(list(out.values())))
        pred_aop = aop_from_landmarks(pred)
    out["aop_pred"], out["aop_gt"], out["aop_error"] = _error(pred_aop, gt_aop, worst.aop_error, challenge.undefined_biometry)
    return out


def empty_case() -> dict:
    return {key: None for key in CASE_KEYS}


@dataclass
class CaseTable:
    """Per-case values as float arrays (NaN for null), one row per case."""

    case_ids: list[str]
    values: dict[str, np.ndarray]

    @classmethod
    def from_cases(cls, cases: dict[str, dict]) -> "CaseTable":
        ids = list(cases)
        keys = SEGMENTATION_KEYS + CATALOGUE_KEYS + ("aop_error", "hsd_error") + LANDMARK_KEYS + CLASSIFICATION_KEYS
        # numpy turns None into NaN in a float array, one row per case
        matrix = np.array([[case.get(key) for key in keys] for case in cases.values()], dtype=np.float64).reshape(len(ids), len(keys))
        values = {key: np.ascontiguousarray(matrix[:, k]) for k, key in enumerate(keys)}
        values["_segmented"] = ~np.isnan(values["dice_ps"])
        return cls(ids, values)

    def __len__(self) -> int:
        return len(self.case_ids)


def _mean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else None


def aggregate(table: CaseTable, challenge: ChallengeDefinition, index: np.ndarray | None = None) -> dict:
    """Reduce per-case values to aggregates over the cases in ``index`` (default: all).

    Returns per-structure means (``dice_ps`` ...), the m-terms over structures and cases
    (``dice``, ``hd``, ``asd``), ``aop_error``/``hsd_error`` means over cases whose truth
    is defined, classification metrics over cases with a label, and counts. A landmark
    challenge has the means of ``re_ps1``, ``re_ps2``, ``re_fh1``, ``mre`` and ``aop_error``
    instead of the segmentation ones.
    """
    v = table.values if index is None else {k: a[index] for k, a in table.values.items()}
    out: dict = {}
    mask_metrics = () if "landmarks" in challenge.tasks else ("dice", "hd", "asd")
    for metric in mask_metrics + tuple(m for m in CATALOGUE_METRICS if m in challenge.metrics):
        per_structure = [v[f"{metric}_{s}"] for s in STRUCTURES]
        for s, column in zip(STRUCTURES, per_structure):
            out[f"{metric}_{s}"] = _mean(column)
        out[metric] = _mean(np.concatenate(per_structure))
    segmented = v["_segmented"]
    for metric in ("aop_error",) + (() if "landmarks" in challenge.tasks else ("hsd_error",)):
        out[metric] = _mean(v[metric])
    out["n_cases"] = int(len(segmented))
    if "landmarks" in challenge.tasks:
        for key in LANDMARK_KEYS:
            out[key] = _mean(v[key])
        measured = ~np.isnan(v["mre"])  # the cases with landmark truth
        out["n_landmark_cases"] = int(measured.sum())
    else:
        measured = segmented
        out["n_segmentation_cases"] = int(segmented.sum())
    out["n_excluded_aop"] = int(np.count_nonzero(measured & np.isnan(v["aop_error"])))
    if "hsd_error" in challenge.metrics:
        out["n_excluded_hsd"] = int(np.count_nonzero(segmented & np.isnan(v["hsd_error"])))
    if "classification" in challenge.tasks:
        labelled = ~np.isnan(v["standard_plane"])
        y = v["standard_plane"][labelled].astype(np.int64)
        p = v["p_standard_plane"][labelled]
        for name, fn in CLASSIFICATION_FUNCTIONS.items():
            out[name] = fn(y, p) if len(y) else None
        out["n_classification_cases"] = int(labelled.sum())
    return out


def _term_value(term: ScoreTerm, mean: float) -> float:
    x = mean / term.scale
    if term.round is not None:
        x = round(x, term.round)
    value = 1 - x if term.transform == "one_minus" else x
    return min(max(value, 0.0), 1.0) if term.clip else value


def challenge_score(aggregates: dict, challenge: ChallengeDefinition) -> tuple[float | None, str | None]:
    """The challenge's score from aggregates: ``(score, None)`` or ``(None, reason)``."""
    total = 0.0
    for term in challenge.score.terms:
        mean = aggregates.get(term.metric)
        if mean is None:
            return None, f"score undefined: aggregate {term.metric!r} is undefined for these cases"
        total += term.weight * _term_value(term, mean)
    return total, None


def case_score(case: dict, challenge: ChallengeDefinition) -> float | None:
    """Per-case score for paired tests: the formula on one case's values.

    Terms with no per-case value (classification) are left out and the remaining weights
    renormalised; a term whose value is null (truth undefined) is left out likewise.
    """
    total, weight = 0.0, 0.0
    for term in challenge.score.terms:
        if term.metric in SEGMENTATION_METRICS:
            values = [case.get(f"{term.metric}_{s}") for s in STRUCTURES]
            if any(x is None for x in values):
                continue
            mean = sum(values) / len(values)
        elif term.metric in CASE_VALUE_METRICS:
            mean = case.get(term.metric)
            if mean is None:
                continue
        else:
            continue
        total += term.weight * _term_value(term, mean)
        weight += term.weight
    return total / weight if weight else None

