"""Table 1 cells, best trial per group (by validation, never test) and repeated seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_builders import HEALTHY, OVERFIT

from analysis import AnalysisError
from tl.core.results import load_experiments
from analysis.tables import best_per_group, epochs_run_counts, seed_repeats
from tl.core.choice import rank_trials
from tl.core.results import rank_column, trial_table


@pytest.fixture
def table(diagnosis_experiment):
    return trial_table(load_experiments([diagnosis_experiment.path])).set_index("trial")


def test_best_val_loss_epoch_is_k_of_n(table):
    assert table.loc["aaaa0002", "best_val_loss_epoch"] == "4/10", \
        f"val loss bottoms at epoch 4 of 10, got {table.loc['aaaa0002', 'best_val_loss_epoch']}"
    assert table.loc["aaaa0002", "best_val_loss"] == pytest.approx(0.40), "best val loss value"
    assert table.loc["aaaa0006", "best_val_loss_epoch"] == "3/3", "N is epochs run, not planned"


def test_asha_stopped_trial_row(table):
    row = table.loc["aaaa0006"]
    assert row["stopped_early"] == "yes", f"3 of 10 epochs with done flag: got {row['stopped_early']}"
    assert row["status"] == "STOPPED", row["status"]
    assert row["epochs_run"] == 3 and row["epochs"] == 10, "epochs run vs planned"
    assert np.isnan(row["test_acc"]), "a stopped trial has no test accuracy"
    assert row["acc_per_s"] == pytest.approx(0.83 / 30.0), "falls back to final val acc / wall time"


def test_errored_trial_listed_with_status_error(table):
    row = table.loc["aaaa0007"]
    assert row["status"] == "ERROR" and row["stopped_early"] == "no", dict(row)
    assert row["epochs_run"] == 0 and "out of memory" in row["error"], dict(row)


def test_completed_trial_figures(table):
    row = table.loc["aaaa0001"]
    assert row["stopped_early"] == "no" and row["status"] == "COMPLETED", dict(row)
    expected = {"final_train_loss": 0.18, "best_train_acc": 0.94, "final_val_loss": 0.30,
                "best_val_acc": 0.90, "final_val_acc": 0.90, "test_acc": 0.89,
                "wall_time_s": 100.0, "acc_per_s": 0.0089, "test_sensitivity": 0.9,
                "trainable_params": 11_000_000, "test_epoch": 9}
    for column, value in expected.items():
        assert row[column] == pytest.approx(value), f"{column}: {row[column]} != {value}"


def test_best_per_group_uses_validation_not_test(builder):
    exp_dir = builder()
    # Same group; the higher-val trial has the lower test accuracy.
    exp_dir.trial("a4a40001", HEALTHY, test_acc=0.70)  # final val acc 0.90
    exp_dir.trial("a4a40002", OVERFIT, test_acc=0.95)  # final val acc 0.84
    exp_dir.trial("a4a40003", OVERFIT, test_acc=0.80, freeze="backbone")
    table = trial_table(load_experiments([exp_dir.path]))
    groups = best_per_group(table, ["backbone", "freeze"], "best_val_acc", "max")
    best = groups.set_index("freeze").loc["none"]
    assert best["trial"] == "a4a40001", f"picked {best['trial']}: must rank by val, not test"
    assert best["n_trials"] == 2 and best["n_completed"] == 2, dict(best)
    assert list(groups["freeze"]) == ["none", "backbone"], "groups sorted best first"


def test_rank_puts_missing_metric_last(table):
    ranked = rank_trials(table.reset_index(), "best_val_acc", "max")
    assert ranked["trial"].iloc[0] == "aaaa0005", "the 0.95-val shift trial ranks first by val"
    assert ranked["trial"].iloc[-1] == "aaaa0007", "errored trial (no metric) last"


def test_unknown_group_by_column_is_an_analysis_error(table):
    with pytest.raises(AnalysisError, match="colour.*available"):
        best_per_group(table.reset_index(), ["colour"], "best_val_acc", "max")


def test_seed_repeats_mean_and_std(builder):
    exp_dir = builder()
    for i, acc in enumerate([0.80, 0.84, 0.88]):
        exp_dir.trial(f"a5a5000{i}", HEALTHY, test_acc=acc, seed=i)
    exp_dir.trial("a5a50009", HEALTHY, test_acc=0.5, seed=0, lr=0.1)  # different config
    exp = load_experiments([exp_dir.path])
    seeds = seed_repeats(trial_table(exp), exp.config_columns, exp.trials)
    assert len(seeds) == 1, f"one repeated config expected, got {len(seeds)}"
    row = seeds.iloc[0]
    assert row["n_seeds"] == 3 and row["seeds"] == "0, 1, 2", dict(row)
    assert row["test_acc_mean"] == pytest.approx(0.84), row["test_acc_mean"]
    assert row["test_acc_std"] == pytest.approx(0.04), "sample std of 0.80, 0.84, 0.88"


def test_epochs_run_counts_by_status(table):
    counts = epochs_run_counts(table.reset_index())
    assert counts.loc[10, "COMPLETED"] == 5 and counts.loc[3, "STOPPED"] == 1, counts
    assert counts.loc[0, "ERROR"] == 1 and int(counts.to_numpy().sum()) == 7, counts


def test_trials_rank_by_best_validation_value(table):
    assert rank_column("val_acc") == "best_val_acc", "the best-by-val weights are the tested ones"
    row = table.loc["aaaa0002"]
    assert (row["best_val_acc"], row["final_val_acc"]) == (0.86, 0.84), "best vs final differ"


def test_rank_breaks_val_acc_ties_by_val_loss_then_trial_id():
    """Same rule as tl.search's printed trial; the trial id alone used to decide (v4 run: two 0.979s)."""
    tied = pd.DataFrame({"trial": ["aaaa0001", "bbbb0002", "cccc0003", "dddd0004"],
                         "best_val_acc": [0.979, 0.979, 0.979, 0.990],
                         "best_val_loss": [0.082, 0.062, 0.062, np.nan]})
    ranked = rank_trials(tied, "best_val_acc", "max")
    assert list(ranked["trial"]) == ["dddd0004", "bbbb0002", "cccc0003", "aaaa0001"]
    by_loss = rank_trials(tied, "best_val_loss", "min")
    assert list(by_loss["trial"]) == ["bbbb0002", "cccc0003", "aaaa0001", "dddd0004"]


def test_seed_repeats_with_a_config_value_missing_everywhere(builder):
    """Regression: ``--dataset PATH`` without ``--data-dir`` leaves data_dir null in every trial;
    pandas 3's ``astype(str)`` kept it NaN and the signature join raised TypeError."""
    exp_dir = builder()
    for i, acc in enumerate([0.80, 0.90]):
        exp_dir.trial(f"b6b6000{i}", HEALTHY, test_acc=acc, seed=i, data_dir=None)
    exp_dir.trial("b6b60009", HEALTHY, test_acc=0.5, seed=0, lr=0.1, data_dir=None)
    exp = load_experiments([exp_dir.path])
    seeds = seed_repeats(trial_table(exp), exp.config_columns, exp.trials)
    assert len(seeds) == 1 and seeds.iloc[0]["n_seeds"] == 2, seeds
    assert seeds.iloc[0]["test_acc_mean"] == pytest.approx(0.85)
