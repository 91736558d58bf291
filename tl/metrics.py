"""Classification metrics computed from probabilities: AUC (binary / macro one-vs-rest), sens/spec."""
from __future__ import annotations

import numpy as np


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties get average ranks); NaN if one class only."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Binary AUC of class 1, or macro one-vs-rest AUC over classes present in ``labels``."""
    if probs.shape[1] == 2:
        return binary_auc(probs[:, 1], labels == 1)
    per_class = [binary_auc(probs[:, c], labels == c) for c in range(probs.shape[1])]
    per_class = [a for a in per_class if not np.isnan(a)]
    return float(np.mean(per_class)) if per_class else float("nan")


def classification_metrics(probs: np.ndarray, labels: np.ndarray, prefix: str) -> dict:
    """Accuracy, AUC and (2 classes) sensitivity/specificity with class 1 as positive."""
    pred = probs.argmax(1)
    out = {f"{prefix}_acc": float((pred == labels).mean()), f"{prefix}_auc": auc(probs, labels)}
    if probs.shape[1] == 2:
        pos, neg = labels == 1, labels == 0
        out[f"{prefix}_sensitivity"] = float((pred[pos] == 1).mean()) if pos.any() else float("nan")
        out[f"{prefix}_specificity"] = float((pred[neg] == 0).mean()) if neg.any() else float("nan")
    return out
