"""Per-trial table (Table 1), best trial per group, and repeated-seed summaries.

Trials are ranked by :func:`tl.choice.rank_trials`, the rule ``tl.search`` picks its trial by:
tested trials first, then the best value of the experiment's metric (``tl_search.json``:
``metric``/``mode``) over their reported epochs (the trainable tests the best-by-val weights, so
that is the model the test figures describe), then the lower val loss, then the trial id. Test
metrics never rank anything; whether a trial was tested only says it ran to the end.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import STOPPED, UNKNOWN, Experiment
from tl.choice import rank_trials  # the one rule of choice, shared with tl.search

__all__ = ["rank_trials", "trial_table", "best_per_group", "seed_repeats", "rank_column",
           "final_column", "check_group_by", "group_members", "epochs_run_counts", "curves_by_trial"]

GROUP_COLUMNS = ("backbone", "freeze", "weights")
KEY_HYPERPARAMETERS = ("lr", "batch_size", "weight_decay", "image_size", "epochs")
TEST_COLUMNS = ("test_acc", "test_loss", "test_auc", "test_n")
BINARY_TEST_COLUMNS = ("test_sensitivity", "test_specificity")
# Reported by some tasks only (tl.tasks.TASK_METRICS): shown in Table 1 when the results have them.
TASK_TEST_COLUMNS = ("test_balanced_acc", "test_balanced_acc_at_val_threshold", "test_map", "test_exact_match",
                     "test_mae", "test_qwk")
SEED_COLUMN = "seed"


def rank_column(metric: str) -> str:
    """Return the Table 1 column that ranks trials for ``metric`` (its best value over epochs)."""
    return f"best_{metric}"


def final_column(metric: str) -> str:
    """Return the Table 1 column with ``metric`` at the last reported epoch."""
    return f"final_{metric}"


def _last(curve: pd.DataFrame, column: str) -> float:
    if column not in curve.columns:
        return np.nan
    values = pd.to_numeric(curve[column], errors="coerce").dropna()
    return float(values.iloc[-1]) if len(values) else np.nan


def _best(curve: pd.DataFrame, column: str, mode: str) -> tuple[float, int | None]:
    if column not in curve.columns:
        return np.nan, None
    values = pd.to_numeric(curve[column], errors="coerce")
    if values.isna().all():
        return np.nan, None
    where = values.idxmax() if mode == "max" else values.idxmin()  # first occurrence
    return float(values[where]), int(curve.loc[where, "epoch"])


def curves_by_trial(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Return each trial's rows of the tidy frame, sorted by epoch, index reset, by trial key."""
    return {str(trial): rows.sort_values("epoch").reset_index(drop=True)
            for trial, rows in frame.groupby("trial", sort=False)}


def _stopped_early(status: str) -> str:
    return "yes" if status == STOPPED else "?" if status == UNKNOWN else "no"


def _trial_row(info: pd.Series, curve: pd.DataFrame, metric: str, mode: str, binary: bool,
               test_epoch: bool, extra: tuple = ()) -> dict:
    n = len(curve)
    best_val_loss, best_val_loss_epoch = _best(curve, "val_loss", "min")
    row = {
        "epochs_run": n,
        "stopped_early": _stopped_early(info["status"]),
        "status": info["status"],
        "final_train_loss": _last(curve, "train_loss"),
        "best_train_acc": _best(curve, "train_acc", "max")[0],
        "final_val_loss": _last(curve, "val_loss"),
        "final_val_acc": _last(curve, "val_acc"),
        "best_val_acc": _best(curve, "val_acc", "max")[0],
        "best_val_loss": best_val_loss,
        "best_val_loss_epoch": "" if best_val_loss_epoch is None else f"{best_val_loss_epoch}/{n}",
    }
    row[final_column(metric)] = _last(curve, metric)
    row[rank_column(metric)] = _best(curve, metric, mode)[0]
    row.update({c: _last(curve, c) for c in TEST_COLUMNS + (BINARY_TEST_COLUMNS if binary else ()) + extra})
    if test_epoch:  # the trainable reports which epoch's weights it tested as best_epoch
        row["test_epoch"] = _last(curve, "best_epoch")
    row["wall_time_s"] = _last(curve, "time_total_s")
    acc = row["test_acc"] if not np.isnan(row["test_acc"]) else row["best_val_acc"]
    row["acc_per_s"] = acc / row["wall_time_s"] if row["wall_time_s"] > 0 else np.nan
    row["trainable_params"] = _last(curve, "trainable_params")
    row["total_params"] = _last(curve, "total_params")
    row["error"] = info["error"] if isinstance(info["error"], str) else ""
    return row


def trial_table(exp: Experiment) -> pd.DataFrame:
    """Return Table 1: one row per trial (errored and never-started ones included).

    Columns: trial (and experiment if several), backbone, freeze, weights, key
    hyperparameters, epochs_run, stopped_early (yes/no/?), status, final/best train and val
    figures, ``best_val_loss_epoch`` as "k/N", ``final_<metric>`` and ``best_<metric>`` (the
    ranking column), test metrics (sensitivity and specificity for two classes; ``test_epoch``
    when the trainable reports ``best_epoch``), wall_time_s, acc_per_s (test acc, else best val
    acc, per second of wall time), trainable/total params, error.
    """
    metric, mode = exp.meta["metric"], exp.meta["mode"]
    test_epoch = "best_epoch" in exp.frame.columns
    binary = exp.meta.get("dataset", {}).get("num_classes") == 2 or any(
        c in exp.frame.columns for c in BINARY_TEST_COLUMNS)
    extra = tuple(c for c in TASK_TEST_COLUMNS if c in exp.frame.columns)
    config = [c for c in GROUP_COLUMNS + KEY_HYPERPARAMETERS if c in exp.trials.columns]
    curves = curves_by_trial(exp.frame)
    empty = exp.frame.iloc[:0]
    rows = []
    for _, info in exp.trials.iterrows():
        curve = curves.get(info["trial"], empty)
        head = {"trial": info["trial"], "experiment": info["experiment"]}
        head.update({c: info[c] for c in config})
        rows.append({**head, **_trial_row(info, curve, metric, mode, binary, test_epoch, extra)})
    table = pd.DataFrame(rows)
    if table["experiment"].nunique() == 1:
        table = table.drop(columns="experiment")
    return table


def check_group_by(table: pd.DataFrame, group_by: Sequence[str]) -> list[str]:
    """Return ``group_by`` as a list after checking every column exists in ``table``.

    Raises:
        AnalysisError: a column is unknown; the message lists the valid ones.
    """
    missing = [c for c in group_by if c not in table.columns]
    if missing:
        raise AnalysisError(f"--group-by column(s) {', '.join(missing)} not found; "
                            f"available: {', '.join(map(str, table.columns))}")
    return list(group_by)


def best_per_group(table: pd.DataFrame, group_by: Sequence[str], column: str,
                   mode: str) -> pd.DataFrame:
    """Return the best trial of each group by ``column`` (a validation figure, never test).

    Returns:
        One row per group: the group columns, n_trials, n_completed, then the best trial's
        trial id, status, epochs_run, ``column``, best_val_acc and test_acc (empty trial if no
        trial of the group reported the metric).
    """
    group_by = check_group_by(table, group_by)
    rows = []
    for keys, group in table.groupby(group_by, dropna=False, sort=True):
        ranked = rank_trials(group, column, mode)
        best = ranked.iloc[0]
        has_value = not pd.isna(best[column])
        row = dict(zip(group_by, keys if isinstance(keys, tuple) else (keys,)))
        row.update(n_trials=len(group), n_completed=int((group["status"] == "COMPLETED").sum()))
        for c in ("trial", "status", "epochs_run", column, "best_val_acc", "test_acc"):
            row[c] = best[c] if has_value else (np.nan if c != "trial" else "")
        rows.append(row)
    return rank_trials(pd.DataFrame(rows), column, mode)


def seed_repeats(table: pd.DataFrame, config_columns: Sequence[str],
                 trials: pd.DataFrame) -> pd.DataFrame:
    """Return mean and std of test accuracy over trials that differ only in ``seed``.

    Args:
        table: Table 1.
        config_columns: hyperparameter columns of the tidy frame.
        trials: the per-trial frame of :class:`~analysis.load.Experiment` (full config).

    Returns:
        One row per config run with two or more seeds that reached a test accuracy:
        key config columns, n_seeds, seeds, test_acc_mean, test_acc_std (sample std), trials.
        Empty frame if there are none.
    """
    if SEED_COLUMN not in config_columns:
        return pd.DataFrame()
    keys = [c for c in config_columns if c != SEED_COLUMN]
    merged = trials[["trial", *config_columns]].merge(table[["trial", "test_acc"]], on="trial")
    merged = merged.dropna(subset=["test_acc"])
    if merged.empty or not keys:
        return pd.DataFrame()
    # Config values can be NaN or None (a key absent or null, e.g. data_dir without --data-dir);
    # compare them as text. pandas 3's astype(str) keeps NaN a float, so format each cell.
    signature = merged[keys].map(str).agg("|".join, axis=1)
    shown = [c for c in GROUP_COLUMNS + KEY_HYPERPARAMETERS if c in keys]
    rows = []
    for _, group in merged.groupby(signature, sort=False):
        if group[SEED_COLUMN].nunique() < 2:
            continue
        row = {c: group[c].iloc[0] for c in shown}
        row.update(n_seeds=int(group[SEED_COLUMN].nunique()),
                   seeds=", ".join(map(str, sorted(group[SEED_COLUMN].unique()))),
                   test_acc_mean=float(group["test_acc"].mean()),
                   test_acc_std=float(group["test_acc"].std(ddof=1)),
                   trials=", ".join(group["trial"]))
        rows.append(row)
    return pd.DataFrame(rows)


def group_members(table: pd.DataFrame, group_by: Sequence[str]) -> dict[str, list[str]]:
    """Return the trial keys of each group, keyed by a "col=value, ..." label, in table order."""
    group_by = check_group_by(table, group_by)
    members: dict[str, list[str]] = {}
    for keys, group in table.groupby(group_by, dropna=False, sort=True):
        label = ", ".join(f"{c}={v}" for c, v in zip(group_by, keys))
        members[label] = list(group["trial"])
    return members


def epochs_run_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Return how many trials ran each number of epochs: index epochs_run, one column per status."""
    return (table.groupby(["epochs_run", "status"]).size().unstack("status", fill_value=0)
            .sort_index())
