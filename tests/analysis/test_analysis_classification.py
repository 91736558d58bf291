"""ROC and confusion matrix from saved predictions, and number formatting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.classification import confusion_matrix, roc_curve, roc_curves
from analysis.formatting import format_frame, format_value, markdown_table
from tl.core.results import Predictions


def test_roc_auc_known_values():
    labels = np.array([0, 0, 1, 1])
    assert roc_curve(np.array([0.1, 0.2, 0.8, 0.9]), labels == 1).auc == pytest.approx(1.0)
    assert roc_curve(np.array([0.9, 0.8, 0.2, 0.1]), labels == 1).auc == pytest.approx(0.0)
    assert roc_curve(np.full(4, 0.5), labels == 1).auc == pytest.approx(0.5), "all ties"
    # Mann-Whitney: pairs (pos, neg) ordered right: (0.8>0.1, 0.8>0.7, 0.35>0.1, 0.35<0.7) = 3/4
    assert roc_curve(np.array([0.1, 0.7, 0.35, 0.8]), labels == 1).auc == pytest.approx(0.75)


def test_roc_curves_binary_and_multiclass():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    curves = roc_curves(Predictions(probs, np.array([0, 1, 1])), ["NORMAL", "PNEUMONIA"])
    assert len(curves) == 1 and curves[0].label == "PNEUMONIA", "binary: one curve for class 1"
    probs3 = np.eye(3)[[0, 1, 2, 2]]
    assert len(roc_curves(Predictions(probs3, np.array([0, 1, 2, 2])))) == 3, "one-vs-rest"


def test_confusion_matrix_counts():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    matrix = confusion_matrix(Predictions(probs, np.array([0, 1, 1, 0])))
    assert matrix.tolist() == [[1, 1], [1, 1]], f"rows true, columns predicted: {matrix}"


def test_formatting_rules():
    assert format_value("test_acc", 0.91234) == "0.912"
    assert format_value("p_value", 1.86e-9) == "1.86e-09"
    assert format_value("p_value", 0.0312) == "0.0312"
    assert format_value("trainable_params", 11_000_000.0) == "11,000,000"
    assert format_value("diff", 0.15) == "+0.150"
    assert format_value("epochs_run", 3.0) == "3"
    assert format_value("test_acc", float("nan")) == "-" and format_value("error", "") == "-"
    text = format_frame(pd.DataFrame({"best_val_loss_epoch": ["4/10"], "weights": ["a|b"]}))
    assert list(text.columns) == ["best val loss epoch", "weights"], "readable headers"
    assert "a\\|b" in markdown_table(text), "pipes escaped in Markdown"


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC by its definition: the share of (positive, negative) pairs ranked right, ties counting half."""
    pos, neg = scores[positive], scores[~positive]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


@pytest.mark.parametrize("n_classes", [2, 3])
def test_task_auc_is_the_positive_class_auc_or_the_macro_one_vs_rest_auc(n_classes: int):
    """The figure the report bootstraps and the trainable reports as test_auc, against its definition."""
    from tl.core.metrics import task_auc

    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, 300)
    logits = rng.normal(size=(300, n_classes)) + 1.5 * np.eye(n_classes)[labels]
    probs = np.round(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 2)  # rounding makes ties
    if n_classes == 2:  # binary: the positive class's AUC, for either choice of positive
        for positive in (0, 1):
            expected = _pairwise_auc(probs[:, positive], labels == positive)
            assert task_auc(probs, labels, positive) == pytest.approx(expected, abs=1e-12), positive
    else:
        expected = np.mean([_pairwise_auc(probs[:, c], labels == c) for c in range(n_classes)])
        assert task_auc(probs, labels) == pytest.approx(expected, abs=1e-12)


def test_multilabel_task_auc_averages_findings_with_both_classes_only():
    from tl.core.metrics import task_auc

    rng = np.random.default_rng(7)
    labels = (rng.random((200, 3)) < 0.3).astype(np.int64)
    labels[:, 2] = 0  # a finding with no positive: no AUC, left out of the mean (not counted as 0.5)
    probs = np.clip(0.6 * labels + rng.random((200, 3)) * 0.7, 0, 1)
    expected = np.mean([_pairwise_auc(probs[:, k], labels[:, k] == 1) for k in (0, 1)])
    assert task_auc(probs, labels) == pytest.approx(expected, abs=1e-12)
