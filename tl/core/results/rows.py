"""Per-trial rows (Table 1): what each trial ran, its best and final figures, its test figures.

The one place a trial's ranking row is built: ``tl.search`` ranks Ray's results with
:func:`trial_row` and the report ranks the folder's trials with :func:`trial_table`, both by
``tl.core.choice.rank_trials``. Trials are ranked by the best value of the experiment's metric over
their reported epochs (the trainable tests the best-by-val weights, so that is the model the test
figures describe); test metrics never rank anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tl.core.columns import BINARY_TEST_METRICS, TEST_ACC, TEST_AUC, is_tested, split_metric
from tl.core.results.load import STOPPED, UNKNOWN, Experiment

GROUP_COLUMNS = ("backbone", "freeze", "weights")
KEY_HYPERPARAMETERS = ("lr", "batch_size", "weight_decay", "image_size", "epochs")
TEST_COLUMNS = (TEST_ACC, split_metric("test", "loss"), TEST_AUC, split_metric("test", "n"))
BINARY_TEST_COLUMNS = BINARY_TEST_METRICS
# Reported by some tasks only (tl.core.tasks.TASK_METRICS): shown in Table 1 when the results have them.
TASK_TEST_COLUMNS = ("test_balanced_acc", "test_balanced_acc_at_val_threshold", "test_map", "test_exact_match",
                     "test_mae", "test_qwk")


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


def trial_row(curve: pd.DataFrame, metric: str, mode: str, *, status: str, error: str = "",
              binary: bool = False, test_epoch: bool = False, extra: tuple = ()) -> dict:
    """One trial's figures from its reported rows (``curve``: one row per epoch, ``epoch`` column).

    The ranking keys are ``best_<metric>`` (its best value over epochs), ``best_val_loss`` and
    ``test_acc`` (present when the trial was tested at the end of its epochs).
    """
    n = len(curve)
    best_val_loss, best_val_loss_epoch = _best(curve, "val_loss", "min")
    row = {
        "epochs_run": n,
        "stopped_early": _stopped_early(status),
        "status": status,
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
    acc = row[TEST_ACC] if is_tested(row) else row["best_val_acc"]
    row["acc_per_s"] = acc / row["wall_time_s"] if row["wall_time_s"] > 0 else np.nan
    row["trainable_params"] = _last(curve, "trainable_params")
    row["total_params"] = _last(curve, "total_params")
    row["error"] = error if isinstance(error, str) else ""
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
        rows.append({**head, **trial_row(curve, metric, mode, status=info["status"], error=info["error"],
                                         binary=binary, test_epoch=test_epoch, extra=extra)})
    table = pd.DataFrame(rows)
    if table["experiment"].nunique() == 1:
        table = table.drop(columns="experiment")
    return table


