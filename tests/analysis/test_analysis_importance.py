"""Hyperparameter importance: skip rules, the rebuilt Optuna study, the own fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import importance as imp


def _trials(n: int, *, status: str = "COMPLETED") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -1, n)
    frame = pd.DataFrame({
        "status": status, "lr": lr, "batch_size": rng.choice([32, 64], n),
        "backbone": rng.choice(["resnet18", "convmodel"], n), "augment": rng.choice([True, False], n),
        "epochs": 10,
    })
    frame["final_val_acc"] = 0.9 - 0.1 * np.abs(np.log10(lr) + 3)  # lr alone decides
    return frame


COLUMNS = ["lr", "batch_size", "backbone", "augment", "epochs"]


def test_too_few_completed_trials_is_skipped_with_note():
    trials = _trials(5)
    trials.loc[2:, "status"] = "STOPPED"
    result = imp.param_importances(trials, COLUMNS, "final_val_acc", "max")
    assert result.frame.empty and "2 completed" in result.note, result.note


def test_too_few_varying_params_is_skipped_with_note():
    trials = _trials(6)[["status", "lr", "epochs", "final_val_acc"]]
    result = imp.param_importances(trials, ["lr", "epochs"], "final_val_acc", "max")
    assert result.frame.empty and "1 hyperparameter" in result.note, result.note


def test_importances_from_rebuilt_study():
    result = imp.param_importances(_trials(20), COLUMNS, "final_val_acc", "max")
    assert result.note == "" and result.n_trials == 20, result
    assert set(result.frame["param"]) == {"lr", "batch_size", "backbone", "augment"}, \
        "only varying params; constant epochs left out"
    assert result.frame["importance"].sum() == pytest.approx(1.0), "normalized"
    assert result.method, "the evaluator must be named in the report"
    assert list(result.frame["importance"]) == sorted(result.frame["importance"], reverse=True)
    assert result.frame["param"].iloc[0] == "lr", f"lr alone decides the metric: {result.frame}"


def test_eta_squared_fallback_finds_the_deciding_param():
    trials = _trials(40)
    frame = imp.eta_squared_importances(trials, ["lr", "backbone", "batch_size"], "final_val_acc")
    assert frame["param"].iloc[0] == "lr", f"lr decides the metric: {frame}"
    assert frame["importance"].iloc[0] > 0.8, frame


def test_integer_choices_become_categorical():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    assert isinstance(imp._distribution(pd.Series([32, 64, 32])), CategoricalDistribution)
    lr = imp._distribution(pd.Series([1e-4, 1e-2]))
    assert isinstance(lr, FloatDistribution) and lr.log, "a range over decades is log-scaled"


def test_conditional_params_are_kept():
    trials = _trials(20)
    trials["freeze"] = np.where(np.arange(20) % 2 == 0, "partial", "none")
    trials["freeze_fraction"] = np.where(trials["freeze"] == "partial",
                                         np.linspace(0.5, 0.9, 20), np.nan)
    result = imp.param_importances(trials, COLUMNS + ["freeze", "freeze_fraction"],
                                   "final_val_acc", "max")
    assert "freeze_fraction" in set(result.frame["param"]), f"conditional param lost: {result}"
    assert result.frame["importance"].sum() == pytest.approx(1.0), "normalized"
