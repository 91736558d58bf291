"""Metrics computed from probabilities, keyed by task (the one home of every metric function).

``split_metrics(probs, labels, prefix, task, positive)`` returns the flat ``{prefix}_*`` dict a
trial reports; its keys per task are ``tl.core.tasks.TASK_METRICS``. Binary: accuracy, AUC,
balanced accuracy, sensitivity and specificity of the task's positive class. Multiclass: accuracy,
macro one-vs-rest AUC, balanced accuracy. Ordinal: those plus MAE in grades and quadratic weighted
kappa. Multilabel (sigmoid probabilities (N, K), multi-hot labels): mean AUC over findings (a
finding without a positive or a negative in the split is left out), per-finding AUC, mean average
precision, MedMNIST's ACC (every label at 0.5) and exact-match accuracy. ``analysis`` imports these.
"""
from __future__ import annotations

import numpy as np

from tl.core.uncertain import UNCERTAIN


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties get average ranks); NaN if one class only."""
    positive = np.asarray(positive).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # average ranks over ties: runs of equal scores in the sorted order (np.unique would sort again)
    starts = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, len(scores)])
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision (area under the step precision-recall curve, as scikit-learn); NaN if no positive."""
    positive = np.asarray(positive).astype(bool)
    if not positive.any():
        return float("nan")
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, hit = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # one point per distinct threshold
    tp = np.cumsum(hit)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0, tp]) / positive.sum()
    return float((precision * recall_gain).sum())


def auc(probs: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """Binary AUC of class ``positive``, or macro one-vs-rest AUC over classes present in ``labels``."""
    if probs.shape[1] == 2:
        return binary_auc(probs[:, positive], labels == positive)
    per_class = [binary_auc(probs[:, c], labels == c) for c in range(probs.shape[1])]
    per_class = [a for a in per_class if not np.isnan(a)]
    return float(np.mean(per_class)) if per_class else float("nan")


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels``."""
    return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))


def quadratic_weighted_kappa(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Cohen's kappa with quadratic weights (i - j)^2 / (K - 1)^2: 1 perfect, 0 chance; NaN if undefined."""
    observed = np.zeros((n_classes, n_classes))
    np.add.at(observed, (labels, pred), 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    grades = np.arange(n_classes)
    weights = (grades[:, None] - grades[None, :]) ** 2 / max(n_classes - 1, 1) ** 2
    denom = (weights * expected).sum()
    return float(1 - (weights * observed).sum() / denom) if denom > 0 else float("nan")


def sensitivity_specificity(positive_probs: np.ndarray, labels: np.ndarray, threshold: float,
                            positive: int = 1) -> tuple[float, float]:
    """Sensitivity and specificity when ``p >= threshold`` is called positive (NaN if a class is absent)."""
    called = np.asarray(positive_probs) >= threshold
    truth = np.asarray(labels) == positive
    sens = called[truth].mean() if truth.any() else np.nan
    spec = (~called[~truth]).mean() if (~truth).any() else np.nan
    return float(sens), float(spec)


def known(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the decided labels: a multilabel ``UNCERTAIN`` (-1) label counts nowhere."""
    return np.asarray(labels) != UNCERTAIN


def per_finding_auc(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of each finding (column) over its decided labels; NaN where the split has no positive or
    no negative for it."""
    labels = np.asarray(labels)
    return np.array([binary_auc(probs[known(labels[:, k]), k], labels[known(labels[:, k]), k] == 1)
                     for k in range(labels.shape[1])])


def findings_left_out(labels: np.ndarray, names: list[str] | tuple[str, ...]) -> list[str]:
    """Findings with no positive or no negative (decided) label: left out of the mean AUC and mAP."""
    labels = np.asarray(labels)
    return [str(names[k]) for k in range(labels.shape[1])
            if not ((labels[:, k] == 1).any() and (labels[:, k] == 0).any())]


def correct_mask(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Boolean (N,): whether each image is right: argmax equals the label, or (multilabel: labels
    (N, K)) every decided finding is right at 0.5 (exact match; uncertain labels do not count)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return (((np.asarray(probs) >= 0.5) == (labels == 1)) | ~known(labels)).all(axis=1)
    return np.asarray(probs).argmax(axis=1) == labels


def label_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """The ``acc`` a split reports: argmax accuracy, or (multilabel) MedMNIST's ACC, the share of
    decided (image, finding) labels right at 0.5."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        mask = known(labels)
        return float(((np.asarray(probs) >= 0.5) == (labels == 1))[mask].mean()) if mask.any() else float("nan")
    return float(correct_mask(probs, labels).mean())


def task_auc(probs: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """The ``auc`` a split reports: the positive class's AUC for two classes, the macro one-vs-rest AUC
    over the classes present for more, and (multilabel) the mean AUC over findings that have both a
    positive and a negative in ``labels``."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        aucs = per_finding_auc(probs, labels)
        return float(np.nanmean(aucs)) if (~np.isnan(aucs)).any() else float("nan")
    return auc(probs, labels, positive)


def multilabel_metrics(probs: np.ndarray, labels: np.ndarray, prefix: str,
                       names: list[str] | tuple[str, ...] | None = None) -> dict:
    """Mean AUC, per-finding AUC (``{prefix}_auc_<name>``), mAP, MedMNIST ACC and exact match, each over
    the decided labels (an uncertain -1 label counts nowhere)."""
    labels = np.asarray(labels)
    names = names or [str(k) for k in range(labels.shape[1])]
    aucs = per_finding_auc(probs, labels)
    valid = ~np.isnan(aucs)
    aps = np.array([average_precision(probs[known(labels[:, k]), k], labels[known(labels[:, k]), k] == 1)
                    for k in range(labels.shape[1])])
    out = {f"{prefix}_auc": float(aucs[valid].mean()) if valid.any() else float("nan"),
           f"{prefix}_map": float(aps[valid].mean()) if valid.any() else float("nan"),
           f"{prefix}_acc": label_accuracy(probs, labels),
           f"{prefix}_exact_match": float(correct_mask(probs, labels).mean())}
    out.update({f"{prefix}_auc_{finding_key(n)}": float(a) for n, a in zip(names, aucs)})
    return out


def finding_key(name: str) -> str:
    """A finding's name as a metric-key suffix: ``pleural thickening`` -> ``pleural_thickening``."""
    return "".join(c if c.isalnum() else "_" for c in str(name).lower())


def split_metrics(probs: np.ndarray, labels: np.ndarray, prefix: str, task: str | None = None,
                  positive: int | None = 1, names: list[str] | tuple[str, ...] | None = None) -> dict:
    """The ``{prefix}_*`` metrics of one split for ``task`` (inferred from the shapes when None).

    Args:
        probs: softmax (N, C) or, multilabel, sigmoid (N, K) probabilities.
        labels: (N,) class indices or (N, K) multi-hot.
        positive: binary tasks: the index of the positive class (BreastMNIST: 0, malignant).
        names: class or finding names (multilabel: the per-finding AUC keys).
    """
    labels = np.asarray(labels)
    if task is None:
        task = "multilabel" if labels.ndim == 2 else ("binary" if probs.shape[1] == 2 else "multiclass")
    if task == "multilabel":
        return multilabel_metrics(probs, labels, prefix, names)
    positive = 1 if positive is None else positive
    pred = probs.argmax(1)
    out = {f"{prefix}_acc": label_accuracy(probs, labels), f"{prefix}_auc": auc(probs, labels, positive),
           f"{prefix}_balanced_acc": balanced_accuracy(pred, labels)}
    if task == "binary":
        pos, neg = labels == positive, labels != positive
        out[f"{prefix}_sensitivity"] = float((pred[pos] == positive).mean()) if pos.any() else float("nan")
        out[f"{prefix}_specificity"] = float((pred[neg] != positive).mean()) if neg.any() else float("nan")
    if task == "ordinal":
        out[f"{prefix}_mae"] = float(np.abs(pred - labels).mean())
        out[f"{prefix}_qwk"] = quadratic_weighted_kappa(pred, labels, probs.shape[1])
    return out


def classification_metrics(probs: np.ndarray, labels: np.ndarray, prefix: str, task: str | None = None,
                           positive: int | None = 1) -> dict:
    """Single-label metrics (kept name): ``split_metrics`` for a binary or multiclass task."""
    return split_metrics(probs, labels, prefix, task, positive)


def best_balanced_threshold(positive_probs: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """The threshold on the positive-class probability with the best balanced accuracy (fit on val).

    Candidates are the distinct scores; ties go to the threshold nearest 0.5.
    """
    scores = np.asarray(positive_probs, dtype=np.float64)
    truth = np.asarray(labels) == positive
    if truth.all() or not truth.any():
        return 0.5
    best, best_t = -1.0, 0.5
    for t in sorted(np.unique(scores), key=lambda v: abs(v - 0.5)):
        sens, spec = sensitivity_specificity(scores, truth.astype(int), t, 1)
        if (sens + spec) / 2 > best + 1e-12:
            best, best_t = (sens + spec) / 2, float(t)
    return best_t
