"""tl.core.calibration: temperature scaling, ECE and the val-chosen sensitivity threshold on known cases."""
from __future__ import annotations

import numpy as np
import pytest

from tl.core.calibration import (
    apply_temperature, expected_calibration_error, fit_operating_point, fit_temperature, reliability,
    sensitivity_specificity, threshold_for_sensitivity,
)


def _overconfident(n: int, seed: int, sharpen: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated probabilities p, reported as p sharpened by ``sharpen``."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    p = 1 / (1 + np.exp(-sharpen * logit))
    return np.c_[1 - p, p], labels


def test_temperature_recovers_the_sharpening_and_lowers_ece_on_held_out_data():
    val_probs, val_labels = _overconfident(4000, 0)
    test_probs, test_labels = _overconfident(4000, 1)
    t = fit_temperature(val_probs, val_labels)
    assert t == pytest.approx(3.0, rel=0.1), t
    before = expected_calibration_error(test_probs, test_labels)
    after = expected_calibration_error(apply_temperature(test_probs, t), test_labels)
    assert after < before / 2, (before, after)


def test_ece_is_zero_when_confidence_equals_accuracy_and_reliability_counts_every_image():
    probs = np.array([[0.25, 0.75]] * 4)
    labels = np.array([1, 1, 1, 0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    assert expected_calibration_error(probs, np.array([1, 1, 0, 0])) == pytest.approx(0.25)
    assert reliability(*_overconfident(500, 2)).count.sum() == 500


def test_threshold_reaches_the_target_sensitivity_and_no_more_than_needed():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)
    t = threshold_for_sensitivity(scores, labels, 0.95)
    sens, spec = sensitivity_specificity(scores, labels, t)
    assert sens >= 0.95, sens
    above = np.sort(scores[labels == 1])
    higher = above[above > t]
    if len(higher):  # the next higher cut would miss the target: t is the highest that reaches it
        assert sensitivity_specificity(scores, labels, higher[0])[0] < 0.95
    with pytest.raises(ValueError):
        threshold_for_sensitivity(scores, np.zeros_like(labels), 0.95)


def test_operating_point_is_binary_only():
    probs = np.full((6, 3), 1 / 3)
    point = fit_operating_point(probs, np.array([0, 1, 2, 0, 1, 2]))
    assert point.threshold is None and point.positive_class is None
