"""ROC curves and confusion matrices computed from saved test predictions (numpy only)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from analysis.load import Predictions


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


def roc_curves(pred: Predictions, class_names: Sequence[str] | None = None) -> list[RocCurve]:
    """Return the ROC of class 1 for two classes, else one one-vs-rest curve per class."""
    n_classes = pred.probs.shape[1]
    names = list(class_names) if class_names and len(class_names) == n_classes else \
        [str(c) for c in range(n_classes)]
    classes = [1] if n_classes == 2 else range(n_classes)
    return [roc_curve(pred.probs[:, c], pred.labels == c, names[c]) for c in classes]


def macro_auc(pred: Predictions) -> float:
    """AUC of class 1 for two classes, else the mean one-vs-rest AUC over the classes present:
    the trainable's ``test_auc``, recomputed so it can be bootstrapped."""
    aucs = [c.auc for c in roc_curves(pred) if not np.isnan(c.auc)]
    return float(np.mean(aucs)) if aucs else float("nan")


def confusion_matrix(pred: Predictions) -> np.ndarray:
    """Return counts (C, C): row = true class, column = argmax prediction."""
    n = pred.probs.shape[1]
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (pred.labels, pred.probs.argmax(axis=1)), 1)
    return matrix
