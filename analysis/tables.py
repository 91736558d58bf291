"""Tables the report builds on Table 1: best trial per group and repeated-seed summaries.

Table 1 itself (one ranking row per trial) is ``tl.core.results.rows.trial_table``, the rows
``tl.search`` ranks too; every ranking here is ``tl.core.choice.rank_trials``. Test metrics never
rank anything.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from tl.core.choice import rank_trials
from tl.core.columns import TEST_ACC, tested_mask
from tl.core.results.rows import GROUP_COLUMNS, KEY_HYPERPARAMETERS

SEED_COLUMN = "seed"


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
        for c in ("trial", "status", "epochs_run", column, "best_val_acc", TEST_ACC):
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
    merged = trials[["trial", *config_columns]].merge(table[["trial", TEST_ACC]], on="trial")
    merged = merged[tested_mask(merged)]
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
                   **{f"{TEST_ACC}_mean": float(group[TEST_ACC].mean()),
                      f"{TEST_ACC}_std": float(group[TEST_ACC].std(ddof=1))},
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
