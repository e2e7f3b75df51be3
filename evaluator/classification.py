"""Standard-plane classification metrics (scikit-learn is the oracle in the tests).

Inputs are ``y_true`` (n,) with 1 = standard plane, 0 = not, and ``p`` (n,) the predicted
probability of a standard plane in [0, 1]. The predicted label is ``p >= 0.5``. The
positive class of F1 is the standard plane. A metric that is undefined returns ``None``:
AUC with a single class present, any metric on zero cases. F1 and MCC with a zero
denominator are 0.0, as in scikit-learn.
"""
from __future__ import annotations

import math

import numpy as np

THRESHOLD = 0.5


def _check(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y_true.shape != p.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and p must be 1-D of equal length, got shapes {y_true.shape} vs {p.shape}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"y_true must hold 0/1 labels, got values {sorted(set(y_true.tolist()))}")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("p must be finite probabilities in [0, 1]")
    return y_true, p


def _confusion(y_true: np.ndarray, p: np.ndarray) -> tuple[int, int, int, int]:
    pred = p >= THRESHOLD
    truth = y_true == 1
    tp = int(np.count_nonzero(pred & truth))
    tn = int(np.count_nonzero(~pred & ~truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return tp, tn, fp, fn


def accuracy(y_true, p) -> float | None:
    """Fraction of frames whose thresholded prediction equals the label.

    >>> accuracy([1, 0, 1], [0.9, 0.2, 0.4])
    0.6666666666666666
    """
    y_true, p = _check(y_true, p)
    if len(y_true) == 0:
        return None
    tp, tn, _, _ = _confusion(y_true, p)
    return (tp + tn) / len(y_true)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(values)]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2
    return ranks


def auc(y_true, p) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied scores counting one half).

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y_true, p = _check(y_true, p)
    n_pos = int(np.count_nonzero(y_true == 1))
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(p)
    u = ranks[y_true == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def f1(y_true, p) -> float | None:
    """F1 of the standard-plane class; 0.0 when there is no positive prediction nor label."""
    y_true, p = _check(y_true, p)
    if len(y_true) == 0:
        return None
    tp, _, fp, fn = _confusion(y_true, p)
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def mcc(y_true, p) -> float | None:
    """Matthews correlation coefficient; 0.0 when a margin of the confusion matrix is empty."""
    y_true, p = _check(y_true, p)
    if len(y_true) == 0:
        return None
    tp, tn, fp, fn = _confusion(y_true, p)
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


CLASSIFICATION_FUNCTIONS = {"accuracy": accuracy, "auc": auc, "f1": f1, "mcc": mcc}

