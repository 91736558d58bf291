"""Verdicts on curves with known behaviour, and the precedence between them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_builders import HEALTHY

from analysis import diagnostics as dg
from tl.core.results import load_experiments
from tl.core.results import trial_table


@pytest.fixture
def verdicts(diagnosis_experiment):
    exp = load_experiments([diagnosis_experiment.path])
    return dg.diagnose_trials(exp, trial_table(exp)).set_index("trial")


@pytest.mark.parametrize("trial, verdict", [
    ("aaaa0001", "healthy"), ("aaaa0002", "overfitting"), ("aaaa0003", "underfitting"),
    ("aaaa0004", "unstable"), ("aaaa0005", "shift"), ("aaaa0006", "healthy"), ("aaaa0007", "n/a"),
])
def test_verdict_of_known_curves(verdicts, trial, verdict):
    row = verdicts.loc[trial]
    assert row["verdict"] == verdict, f"{trial}: expected {verdict}, got {row['verdict']} ({dict(row)})"


def test_overfitting_figures(verdicts):
    row = verdicts.loc["aaaa0002"]
    assert row["best_val_loss_epoch"] == 4 and row["epochs_since_best_val_loss"] == 6, dict(row)
    assert row["val_loss_rise"] == pytest.approx((0.82 - 0.40) / 0.40), "relative rise since best"
    assert row["gap"] == pytest.approx(1.00 - 0.84), "train - val acc at the end"


def test_shift_and_instability_figures(verdicts):
    assert verdicts.loc["aaaa0005", "val_test_gap"] == pytest.approx(0.95 - 0.75), "best val - test"
    std = np.std([0.91, 0.79, 0.90], ddof=1)
    assert verdicts.loc["aaaa0004", "val_acc_std_last"] == pytest.approx(std), "std of last 3"


def test_underfit_threshold_uses_majority_rate():
    assert dg.underfit_threshold(0.6) == pytest.approx(0.65), "majority 0.6 + margin 0.05"
    assert dg.underfit_threshold(0.9) == pytest.approx(0.95), "imbalanced: above majority"
    assert dg.underfit_threshold(None) == dg.UNDERFIT_MIN_TRAIN_ACC, "unknown rate: floor"
    assert dg.majority_rate(np.array([0, 1, 1, 1])) == pytest.approx(0.75)


def _curve(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"epoch": np.arange(1, n + 1), **columns})


def test_underfitting_takes_precedence_over_rising_val_loss():
    curve = _curve(train_acc=[0.5, 0.52, 0.5, 0.51, 0.5], val_acc=[0.5] * 5,
                   val_loss=[0.7, 0.6, 0.8, 0.9, 1.0])
    diag = dg.diagnose_curve(curve, majority_rate=0.5)
    assert diag.flags == "underfitting+overfitting", diag.flags
    assert diag.verdict == "underfitting", "divergence on an unfit model is not overfitting"


def test_steadily_rising_accuracy_is_not_unstable():
    curve = _curve(train_acc=[0.7, 0.8, 0.9], val_acc=[0.70, 0.78, 0.86], val_loss=[0.6, 0.5, 0.4])
    diag = dg.diagnose_curve(curve)
    assert diag.val_acc_std_last > dg.UNSTABLE_VAL_ACC_STD, "large std, but it is learning"
    assert diag.verdict == "healthy", diag


def test_small_val_loss_uptick_is_not_overfitting():
    val_loss = list(HEALTHY["val_loss"][:8]) + [0.32, 0.33]  # +6 % over the minimum
    curve = _curve(train_acc=HEALTHY["train_acc"], val_acc=HEALTHY["val_acc"], val_loss=val_loss)
    assert dg.diagnose_curve(curve, test_acc=0.89).verdict == "healthy", "below OVERFIT_VAL_LOSS_RISE"


def test_large_gap_alone_is_overfitting():
    curve = _curve(train_acc=[0.9, 1.0, 1.0], val_acc=[0.80, 0.82, 0.82], val_loss=[0.5, 0.45, 0.44])
    assert dg.diagnose_curve(curve).verdict == "overfitting", "gap 0.18 >= OVERFIT_GAP"


def test_thresholds_table_lists_every_constant():
    table = dg.thresholds_frame()
    constants = [n for n in dir(dg) if n.isupper() and n.split("_")[0] in
                 ("OVERFIT", "UNDERFIT", "UNSTABLE", "SHIFT")]
    missing = set(constants) - set(table["constant"])
    assert set(table["constant"]) == set(constants), f"report misses {missing}"
    for name in constants:
        value = table.set_index("constant").loc[name, "value"]
        assert value == getattr(dg, name), f"{name}: report says {value}"
    assert "underfitting > overfitting > unstable > shift" in dg.precedence_text()
