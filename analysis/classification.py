"""ROC curves, confusion matrices and per-finding AUCs computed from saved test predictions.

The metric numbers come from ``tl.core.metrics`` (one home for every metric); this module adds the
curves and tables the report draws.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

import pandas as pd

from tl.core.metrics import findings_left_out, per_finding_auc
from tl.core.results import Predictions


class RocCurve(NamedTuple):
    """One ROC curve: false and true positive rates at every threshold, and its area."""

    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_curve(scores: np.ndarray, positives: np.ndarray, label: str = "") -> RocCurve:
    """Return the ROC curve of ``scores`` for the boolean ``positives`` (ties handled exactly).

    AUC is the trapezoid area, which equals the Mann-Whitney probability that a random
    positive outranks a random negative (ties count half). NaN AUC if one class is absent.
    """
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    scores, positives = scores[order], positives[order]
    # Keep the last index of each distinct score so tied scores move the curve together.
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(positives)[last]
    fp = np.cumsum(~positives)[last]
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return RocCurve(label, np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan"))
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    return RocCurve(label, fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)))


def roc_curves(pred: Predictions, class_names: Sequence[str] | None = None, positive: int = 1) -> list[RocCurve]:
    """Return the ROC of the positive class for two classes, one one-vs-rest curve per class for
    more, or (multilabel) one curve per finding."""
    n_classes = pred.probs.shape[1]
    names = list(class_names) if class_names and len(class_names) == n_classes else \
        [str(c) for c in range(n_classes)]
    if pred.multilabel:
        return [roc_curve(pred.probs[:, k], pred.labels[:, k] == 1, names[k]) for k in range(n_classes)]
    classes = [positive] if n_classes == 2 else range(n_classes)
    return [roc_curve(pred.probs[:, c], pred.labels == c, names[c]) for c in classes]


def finding_table(pred: Predictions, class_names: Sequence[str]) -> pd.DataFrame:
    """Multilabel: one row per finding with its test positives and AUC; a finding with no positive
    (or no negative) has no AUC and is named in ``note`` (left out of the mean AUC)."""
    aucs = per_finding_auc(pred.probs, pred.labels)
    out = set(findings_left_out(pred.labels, list(class_names)))
    return pd.DataFrame({"finding": list(class_names), "positives": pred.labels.sum(0).astype(int),
                         "auc": aucs, "note": ["no positive or no negative in test: left out of the mean"
                                               if n in out else "" for n in class_names]})


def confusion_matrix(pred: Predictions) -> np.ndarray:
    """Return counts (C, C): row = true class, column = argmax prediction (empty for multilabel)."""
    if pred.multilabel:
        return np.zeros((0, 0), dtype=np.int64)
    n = pred.probs.shape[1]
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (pred.labels, pred.probs.argmax(axis=1)), 1)
    return matrix
