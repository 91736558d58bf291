"""The chosen-model section's calibration, operating point and top-k ensemble (analysis.calibration)."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_builders import HEALTHY, OVERFIT

from analysis.summarize import main
from analysis.summary import build_summary


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated probabilities, reported 3x sharper (logits): overconfident."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    p = 1 / (1 + np.exp(-3 * logit))
    return np.c_[1 - p, p], labels


@pytest.fixture
def calibrated_experiment(builder):
    exp = builder("cal")
    test = _overconfident(400, 1)
    chosen = exp.trial("cccc0001", HEALTHY, test_acc=0.0, predictions=test)
    exp.trial("cccc0002", OVERFIT, test_acc=0.0, predictions=_overconfident(400, 1)[::1])
    exp.trial("cccc0003", OVERFIT, test_acc=0.0, predictions=(test[0][::-1].copy(), test[1]))
    val_probs, val_labels = _overconfident(600, 2)
    np.savez(chosen / "val_predictions.npz", probs=val_probs, labels=val_labels, val_fingerprint="v1")
    return exp


def test_temperature_fitted_on_val_lowers_test_ece_and_threshold_meets_val_target(calibrated_experiment):
    summary = build_summary([calibrated_experiment.path], n_resamples=200)
    cal = summary.calibration
    assert cal is not None and cal.trial == "cccc0001"
    figures = dict(zip(cal.figures["statistic"], cal.figures["value"]))
    assert figures["temperature"] == pytest.approx(3.0, rel=0.15)
    assert figures["ECE (15 bins), temperature-scaled"] < figures["ECE (15 bins), raw"] / 2
    sens = cal.figures[cal.figures["statistic"] == "sensitivity at that threshold"].iloc[0]
    assert sens["low"] <= sens["value"] <= sens["high"], "test sensitivity carries a bootstrap interval"
    assert cal.before.count.sum() == cal.after.count.sum() == 400


def test_ensemble_row_averages_the_top_trials_and_report_shows_everything(calibrated_experiment, tmp_path):
    summary = build_summary([calibrated_experiment.path], n_resamples=200, ensemble=2)
    row = summary.ensemble.iloc[0]
    assert row["trial"].startswith("ensemble of top 2") and row["acc_low"] <= row["test_acc"] <= row["acc_high"]
    assert main([str(calibrated_experiment.path), "--out", str(tmp_path / "out"), "--ensemble", "2"]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    for text in ("Calibration and operating point", "Top-k ensemble", "temperature-scaled",
                 "threshold for val sensitivity &gt;= 0.95", "Reliability of the chosen model"):
        assert text in html, text
    assert (tmp_path / "out" / "reliability.png").is_file()


def test_old_searches_without_val_predictions_get_a_sentence_not_an_error(builder, tmp_path):
    exp = builder("old")
    exp.trial("dddd0001", HEALTHY, test_acc=0.85)
    assert build_summary([exp.path], n_resamples=50).calibration is None
    assert main([str(exp.path), "--out", str(tmp_path / "out")]) == 0
    assert "saved no val_predictions.npz" in (tmp_path / "out" / "report.html").read_text()
