"""Numbers to text for the report and the terminal: one rule per kind of column, one header map."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

MISSING = "-"
HEADERS = {
    "trial": "trial", "experiment": "experiment", "batch_size": "batch", "weight_decay": "wd",
    "image_size": "img", "epochs": "planned epochs", "epochs_run": "epochs run",
    "stopped_early": "stopped by ASHA", "final_train_loss": "final train loss",
    "best_train_acc": "best train acc", "final_val_loss": "final val loss",
    "final_val_acc": "final val acc", "best_val_acc": "best val acc",
    "best_val_loss": "best val loss", "best_val_loss_epoch": "best val loss epoch",
    "test_acc": "test acc", "test_loss": "test loss", "test_auc": "test AUC", "test_n": "test n",
    "test_sensitivity": "sensitivity", "test_specificity": "specificity",
    "test_epoch": "tested epoch",
    "wall_time_s": "wall time (s)", "acc_per_s": "acc / s", "trainable_params": "trainable params",
    "total_params": "total params", "n_trials": "trials", "n_completed": "completed",
    "trial_a": "trial A", "trial_b": "trial B", "acc_a": "acc A", "acc_b": "acc B",
    "diff": "A - B (95% CI)", "a_only": "A only right", "b_only": "B only right",
    "p_value": "McNemar p", "test_acc_mean": "test acc mean", "test_acc_std": "test acc std",
    "n_seeds": "seeds (n)", "final_train_acc": "final train acc", "gap": "train-val gap",
    "epochs_since_best_val_loss": "epochs since best val loss",
    "val_loss_rise": "val loss rise", "val_acc_std_last": "val acc std (last 3)",
    "val_test_gap": "val-test gap", "underfit_threshold": "underfit below",
}
_INTEGER = {"epochs", "test_epoch", "epochs_run", "batch_size", "image_size", "test_n", "n",
            "n_trials", "n_completed", "a_only", "b_only", "n_seeds", "epochs_since_best_val_loss",
            "best_val_loss_epoch"}
_THOUSANDS = {"trainable_params", "total_params"}
_GENERAL = {"lr", "weight_decay", "acc_per_s", "freeze_fraction", "value"}
_SIGNED = {"diff", "ci_low", "ci_high", "gap", "val_test_gap", "val_loss_rise"}


def _is_missing(value: Any) -> bool:
    if value is None or (isinstance(value, str) and value == ""):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_value(column: str, value: Any) -> str:
    """Return ``value`` as text by the rule of its column (accuracies 3 decimals, p-values
    3 significant digits, parameter counts with thousands separators, missing as '-')."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if column in _INTEGER and float(value).is_integer():
        return str(int(value))
    if column in _THOUSANDS:
        return f"{int(value):,}"
    if column == "p_value":
        return f"{value:.2e}" if value < 1e-3 else f"{value:.3g}"
    if column in _GENERAL:
        return f"{value:.3g}"
    if column in _SIGNED:
        return f"{value:+.3f}"
    if column == "wall_time_s":
        return f"{value:.1f}"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)
                                  and value.is_integer() and abs(value) >= 1000):
        return str(int(value))
    return f"{value:.3f}"


def format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` with every cell formatted as text and readable headers."""
    text = pd.DataFrame({c: [format_value(c, v) for v in frame[c]] for c in frame.columns},
                        index=frame.index)
    return text.rename(columns=lambda c: HEADERS.get(c, str(c).replace("_", " ")))


def markdown_table(frame: pd.DataFrame) -> str:
    """Return ``frame`` (already text) as a GitHub-flavoured Markdown table."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])
