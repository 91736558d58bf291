"""tl.core.metrics: AUC against brute force, with ties; macro one-vs-rest; sensitivity and specificity."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tl.core.metrics import auc, binary_auc, classification_metrics


def _pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), over every pair."""
    pos, neg = scores[positive], scores[~positive]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_auc_equals_pairwise_count_with_ties(seed: int):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 200) / 5.0  # six distinct values: many ties
    positive = rng.random(200) < 0.1 + 0.8 * scores  # informative but noisy
    got, want = binary_auc(scores, positive), _pairwise_auc(scores, positive)
    assert math.isclose(got, want, abs_tol=1e-12), f"rank AUC {got} vs pairwise {want}"
    assert 0.5 < want < 1.0, f"the example should be informative but imperfect, AUC {want}"


def test_binary_auc_perfect_inverted_and_constant_scores():
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.9])
    assert binary_auc(scores, labels) == 1.0
    assert binary_auc(-scores, labels) == 0.0
    assert binary_auc(np.full(6, 0.5), labels) == 0.5, "all ties: chance"
    assert math.isnan(binary_auc(scores, np.zeros(6))), "one class only: AUC undefined"


def test_auc_of_two_class_probs_uses_class_one():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 1])
    # positives score 0.6, 0.4; negatives 0.1, 0.7: pairs won 0.6>0.1, 0.4>0.1 -> 2 of 4.
    assert auc(probs, labels) == 0.5


def test_multiclass_auc_is_macro_one_vs_rest():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    per_class = [_pairwise_auc(probs[:, c], labels == c) for c in range(3)]
    assert math.isclose(auc(probs, labels), float(np.mean(per_class)), abs_tol=1e-12), per_class


def test_multiclass_auc_skips_classes_absent_from_labels():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.5, 0.2]])
    labels = np.array([0, 1, 0, 1])  # class 2 never occurs: its AUC is undefined and left out
    assert auc(probs, labels) == 1.0


def test_sensitivity_specificity_on_a_hand_made_example():
    # labels:       1    1    1    1    0    0    0
    # predicted:    1    1    1    0    0    1    0   -> sens 3/4, spec 2/3, acc 5/7
    p1 = np.array([0.9, 0.8, 0.6, 0.4, 0.2, 0.7, 0.1])
    probs = np.stack([1 - p1, p1], 1)
    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    m = classification_metrics(probs, labels, "test")
    assert set(m) == {"test_acc", "test_auc", "test_sensitivity", "test_specificity", "test_balanced_acc"}, m.keys()
    assert math.isclose(m["test_balanced_acc"], (0.75 + 2 / 3) / 2), m
    assert m["test_sensitivity"] == 0.75, m
    assert math.isclose(m["test_specificity"], 2 / 3), m
    assert math.isclose(m["test_acc"], 5 / 7), m
    assert math.isclose(m["test_auc"], 10 / 12), m  # positives beat negatives in 10 of 12 pairs


def test_multiclass_metrics_have_no_sensitivity():
    probs = np.eye(3)[[0, 1, 2, 1]]
    m = classification_metrics(probs, np.array([0, 1, 2, 2]), "val")
    assert set(m) == {"val_acc", "val_auc", "val_balanced_acc"} and m["val_acc"] == 0.75, m
    assert math.isclose(m["val_balanced_acc"], (1 + 1 + 0.5) / 3), m
