"""Which test figures lead, by task: what "expected on new images" says first.

Accuracy misleads where negatives dominate. A multilabel model near chance on several findings
still scores a label accuracy of 0.947 on NIH's table, because most labels are "no finding"; so
multilabel leads with the mean AUC, then per-finding AUCs with their positives counted, and shows
label accuracy only beside what predicting "no finding" everywhere gets. A binary task names its
class balance beside accuracy (BreastMNIST's pick: acc 0.821 with malignant sensitivity 0.43). An
ordinal task leads with quadratic weighted kappa and the mean absolute error in grades. Pure
Python and numpy.
"""
from __future__ import annotations

import math

import numpy as np

from tl.core.columns import HEADLINE, HEADLINE_TEST_METRICS, TEST_ACC, TEST_AUC, split_metric
from tl.core.metrics import known, label_accuracy, per_finding_auc
from tl.core.results.files import Predictions

TEST_QWK, TEST_MAE = split_metric("test", "qwk"), split_metric("test", "mae")
ORDINAL_TEST_METRICS = (TEST_QWK, TEST_MAE)  # bootstrapped for ordinal tasks beside the headline


def interval_text(figures: dict, name: str) -> str:
    """``0.931 [0.910, 0.952]``: a figure and its interval, as every summary line writes it."""
    return f"{figures[name]:.3f} [{figures[name + '_low']:.3f}, {figures[name + '_high']:.3f}]"


def no_finding_accuracy(test: Predictions) -> float:
    """Label accuracy of predicting "no finding" for every image (the negatives' share of the decided
    labels): what a multilabel label accuracy must be read against."""
    return label_accuracy(np.zeros(test.labels.shape), test.labels)


def finding_aucs_line(test: Predictions, names: list[str]) -> str:
    """Per finding: its test AUC and its positives (n/a where test has no positive or no negative)."""
    aucs = per_finding_auc(test.probs, test.labels)
    positives = [int((test.labels[known(test.labels[:, k]), k] == 1).sum()) for k in range(test.labels.shape[1])]
    cells = [f"{name} {'n/a' if math.isnan(a) else f'{a:.2f}'} ({p})"
             for name, a, p in zip(names, aucs, positives)]
    return "per finding, test AUC (positives): " + ", ".join(cells)


def headline_parts(task: str, figures: dict, test: Predictions | None = None, *,
                   class_names: list[str] | None = None, positive: int = 1) -> tuple[list[str], list[str]]:
    """(the figures of the "expected on new images" line, in the order the task reads them; further
    lines, such as the per-finding AUCs of a multilabel model).

    Args:
        figures: ``ensemble_figures`` of the model's test predictions (``test``, when the caller has them).
    """
    names = list(class_names or [])
    if task == "multilabel":
        accuracy = f"label accuracy {interval_text(figures, TEST_ACC)}"
        if test is not None:
            accuracy += f" (predicting no finding everywhere: {no_finding_accuracy(test):.3f})"
        extra = [finding_aucs_line(test, names or [str(k) for k in range(test.labels.shape[1])])] \
            if test is not None else []
        return [f"mean AUC {interval_text(figures, TEST_AUC)}", accuracy], extra
    if task == "ordinal" and TEST_QWK in figures:
        return [f"qwk {interval_text(figures, TEST_QWK)}", f"mae {interval_text(figures, TEST_MAE)} grades",
                f"acc {interval_text(figures, TEST_ACC)}", f"auc {interval_text(figures, TEST_AUC)}"], []
    parts = [f"{short} {interval_text(figures, name)}" for short, name in zip(HEADLINE, HEADLINE_TEST_METRICS)
             if name in figures]
    if task == "binary" and test is not None and parts:
        n, pos = len(test.labels), int((np.asarray(test.labels) == positive).sum())
        label = f"{names[positive]!r} " if positive < len(names) else ""
        parts[0] += f" (positive class {label}{pos} of {n}, {pos / max(n, 1):.0%})"
    return parts, []
