"""The recommended model's calibration and operating point, and the top-k ensemble row (analysis.recommended)."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_builders import HEALTHY, OVERFIT

from analysis.summarize import main
from analysis.report_data import build_report_data


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
    # A second, different model of the same test images: its errors differ from the first's.
    rng = np.random.default_rng(5)
    other = np.clip(test[0][:, 1] + rng.normal(0, 0.3, len(test[1])), 0.01, 0.99)
    exp.trial("cccc0002", OVERFIT, test_acc=0.0, predictions=(np.c_[1 - other, other], test[1]))
    exp.trial("cccc0003", OVERFIT, test_acc=0.0, predictions=(test[0][::-1].copy(), test[1]))
    val_probs, val_labels = _overconfident(600, 2)
    np.savez(chosen / "val_predictions.npz", probs=val_probs, labels=val_labels, val_fingerprint="v1")
    return exp


def test_temperature_fitted_on_val_lowers_test_ece_and_threshold_meets_val_target(calibrated_experiment):
    data = build_report_data([calibrated_experiment.path], n_resamples=200)
    assert data.recommended.recommendation.trials == ("cccc0001",)
    cal = data.recommended.calibration
    assert cal is not None
    figures = dict(zip(cal.figures["statistic"], cal.figures["value"]))
    assert figures["temperature"] == pytest.approx(3.0, rel=0.15)
    assert figures["ECE (15 bins), temperature-scaled"] < figures["ECE (15 bins), raw"] / 2
    sens = cal.figures[cal.figures["statistic"] == "sensitivity at that threshold"].iloc[0]
    assert sens["low"] <= sens["value"] <= sens["high"], "test sensitivity carries a bootstrap interval"
    assert cal.before.count.sum() == cal.after.count.sum() == 400


def test_top_k_row_averages_two_different_models(calibrated_experiment, tmp_path):
    data = build_report_data([calibrated_experiment.path], n_resamples=200, ensemble=2)
    row = data.top_k.iloc[0]
    members = row["trials"].split(", ")
    assert sorted(members) == ["cccc0001", "cccc0002"], "the two best tested trials by val"
    first, second = (next(calibrated_experiment.path.glob(f"*_{t}_*")) for t in ("cccc0001", "cccc0002"))
    with np.load(first / "test_predictions.npz") as a, np.load(second / "test_predictions.npz") as b:
        mean = (a["probs"] + b["probs"]) / 2
        expected = float((mean.argmax(1) == a["labels"]).mean())
        single = float((a["probs"].argmax(1) == a["labels"]).mean())
    assert row["test_acc"] == pytest.approx(expected, abs=1e-12), "accuracy of the mean probabilities"
    assert expected != single, "the fixture's second model must differ, or the test proves nothing"
    assert row["test_acc_low"] <= row["test_acc"] <= row["test_acc_high"]
    assert main([str(calibrated_experiment.path), "--out", str(tmp_path / "out"), "--ensemble", "2"]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    for text in ("Calibration, operating point and Grad-CAM of the recommended model", "top 2 search trials as one ensemble",
                 "temperature-scaled", "threshold for val sensitivity &gt;= 0.95", "Reliability of the recommended model"):
        assert text in html, text
    assert (tmp_path / "out" / "reliability.png").is_file()


def test_old_searches_without_val_predictions_get_a_sentence_not_an_error(builder, tmp_path):
    exp = builder("old")
    exp.trial("dddd0001", HEALTHY, test_acc=0.85)
    assert build_report_data([exp.path], n_resamples=50).recommended.calibration is None
    assert main([str(exp.path), "--out", str(tmp_path / "out")]) == 0
    assert "saved no val_predictions.npz" in (tmp_path / "out" / "report.html").read_text()
