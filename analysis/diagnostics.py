"""Overfitting, underfitting, instability and distribution-shift diagnostics per trial.

Each trial gets figures (generalization gap, epochs since best val loss and how far val loss
rose since, std of val acc over the last epochs, best val acc - test acc), the flags whose
rules fire, and one verdict: the first flag in :data:`VERDICT_PRECEDENCE`, else ``healthy``
(``n/a`` for a trial without a reported epoch). Verdicts of trials ASHA stopped early describe
the short curve they had.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from tl.core.columns import split_metric
from tl.core.results import Experiment
from tl.core.results.rows import curves_by_trial

# Overfitting: val loss bottomed out at least this many epochs before the end ...
OVERFIT_MIN_EPOCHS_SINCE_BEST = 2
# ... and has since risen by at least this fraction of its minimum,
OVERFIT_VAL_LOSS_RISE = 0.10
# or final train acc exceeds final val acc by at least this much. Fine-tuned networks often
# reach train acc ~1.0 with val ~0.9, so a gap of 0.10 alone is normal; 0.15 is not.
OVERFIT_GAP = 0.15
# Underfitting: final train acc below max(UNDERFIT_MIN_TRAIN_ACC, majority rate + margin);
# the majority-class rate (from the saved test labels) is what a constant guess scores.
UNDERFIT_MIN_TRAIN_ACC = 0.60
UNDERFIT_MARGIN = 0.05
# Unstable: sample std of val acc over the last epochs at least this (about twice the binomial
# noise of a ~500-image val split at 90 %) and the window not steadily rising (still learning).
UNSTABLE_WINDOW = 3
UNSTABLE_VAL_ACC_STD = 0.03
# Shift: best val acc exceeds test acc by at least this much (val not representative of test,
# or the metric was over-fitted to val by the search).
SHIFT_VAL_TEST_GAP = 0.10
# Underfitting comes first: rising val loss on a model that never fit its training data is
# divergence, not memorisation. Shift comes last: it is about the split, not the run.
VERDICT_PRECEDENCE = ("underfitting", "overfitting", "unstable", "shift")
HEALTHY, NO_DATA = "healthy", "n/a"


class Diagnosis(NamedTuple):
    """Diagnostic figures, fired flags and the verdict of one trial's curves."""

    final_train_acc: float
    final_val_acc: float
    gap: float  # final train acc - final val acc
    best_val_loss_epoch: float
    epochs_since_best_val_loss: float
    val_loss_rise: float  # (final val loss - min val loss) / min val loss
    val_acc_std_last: float  # NaN with fewer than UNSTABLE_WINDOW epochs
    val_test_gap: float  # best val acc - test acc; NaN without test acc
    underfit_threshold: float
    flags: str  # fired rules joined by "+", in precedence order
    verdict: str


def underfit_threshold(majority_rate: float | None) -> float:
    """Return the final train accuracy below which a trial counts as underfitting."""
    if majority_rate is None or np.isnan(majority_rate):
        return UNDERFIT_MIN_TRAIN_ACC
    return max(UNDERFIT_MIN_TRAIN_ACC, majority_rate + UNDERFIT_MARGIN)


def _column(curve: pd.DataFrame, name: str) -> np.ndarray:
    if name not in curve.columns:
        return np.full(len(curve), np.nan)
    return pd.to_numeric(curve[name], errors="coerce").to_numpy(dtype=float)


def diagnose_curve(curve: pd.DataFrame, test_acc: float = np.nan,
                   majority_rate: float | None = None, score: str = "val_acc") -> Diagnosis:
    """Return the diagnosis of one trial from its per-epoch rows.

    Args:
        curve: rows sorted by ``epoch`` with ``train_acc``, ``val_acc``, ``val_loss``.
        test_acc: the trial's test accuracy, NaN if none.
        majority_rate: share of the most frequent class, None if unknown.
        score: the val column the unstable and shift rules watch (multilabel: ``val_auc``, the
            mean AUC, with ``test_acc`` then the test mean AUC).
    """
    threshold = underfit_threshold(majority_rate)
    if len(curve) == 0:
        return Diagnosis(*([np.nan] * 8), threshold, "", NO_DATA)
    train_acc, val_acc, val_loss = (_column(curve, c) for c in ("train_acc", "val_acc", "val_loss"))
    watched = _column(curve, score)
    epochs = curve["epoch"].to_numpy()
    final_train, final_val = train_acc[-1], val_acc[-1]
    gap = final_train - final_val
    if np.isnan(val_loss).all():
        best_epoch = since = rise = np.nan
    else:
        i = int(np.nanargmin(val_loss))  # first minimum
        best_epoch, since = float(epochs[i]), float(epochs[-1] - epochs[i])
        rise = (val_loss[-1] - val_loss[i]) / max(abs(val_loss[i]), 1e-12)
    window = watched[-UNSTABLE_WINDOW:]
    std = float(np.std(window, ddof=1)) if len(window) == UNSTABLE_WINDOW else np.nan
    val_test_gap = np.nanmax(watched) - test_acc if not np.isnan(watched).all() else np.nan
    fired = {
        "underfitting": final_train < threshold,
        "overfitting": (since >= OVERFIT_MIN_EPOCHS_SINCE_BEST and rise >= OVERFIT_VAL_LOSS_RISE)
        or gap >= OVERFIT_GAP,
        "unstable": std >= UNSTABLE_VAL_ACC_STD and bool(np.any(np.diff(window) < 0)),
        "shift": val_test_gap >= SHIFT_VAL_TEST_GAP,
    }
    flags = [name for name in VERDICT_PRECEDENCE if fired[name]]
    return Diagnosis(float(final_train), float(final_val), float(gap), best_epoch, since,
                     float(rise), std, float(val_test_gap), threshold, "+".join(flags),
                     flags[0] if flags else HEALTHY)


def majority_rate(labels: np.ndarray | None) -> float | None:
    """Return the share of the most frequent label, None for no labels."""
    if labels is None or len(labels) == 0 or np.ndim(labels) == 2:  # multilabel: no majority class
        return None
    return float(np.bincount(np.asarray(labels, dtype=np.int64)).max() / len(labels))


def diagnose_trials(exp: Experiment, table: pd.DataFrame) -> pd.DataFrame:
    """Return one diagnosis row per trial of Table 1 (columns: trial, status, epochs_run, then
    the :class:`Diagnosis` fields).

    The majority-class rate comes from the first saved test labels (the test split is the same
    for every trial of a dataset); without any, only the absolute floor applies. Multilabel (multi-hot
    labels): the unstable and shift rules watch the mean AUC (val_auc vs test_auc), since ACC
    sits near the share of negative labels whatever the model does; underfitting uses the floor.
    """
    labels = next(iter(exp.predictions.values())).labels if exp.predictions else None
    rate = majority_rate(labels)
    multilabel = labels is not None and np.ndim(labels) == 2
    watched = "auc" if multilabel else "acc"
    score, test_column = split_metric("val", watched), split_metric("test", watched)
    curves = curves_by_trial(exp.frame)
    empty = exp.frame.iloc[:0]
    rows = []
    for _, row in table.iterrows():
        diag = diagnose_curve(curves.get(row["trial"], empty), row.get(test_column, np.nan), rate, score)
        rows.append({"trial": row["trial"], "status": row["status"],
                     "epochs_run": row["epochs_run"], **diag._asdict()})
    return pd.DataFrame(rows)


def thresholds_frame() -> pd.DataFrame:
    """Return the diagnostic rules with their thresholds, for the report."""
    rows = [
        ("underfitting", "UNDERFIT_MIN_TRAIN_ACC", UNDERFIT_MIN_TRAIN_ACC,
         "final train acc < max(UNDERFIT_MIN_TRAIN_ACC, majority-class rate + UNDERFIT_MARGIN)"),
        ("underfitting", "UNDERFIT_MARGIN", UNDERFIT_MARGIN, "margin over the majority-class rate"),
        ("overfitting", "OVERFIT_MIN_EPOCHS_SINCE_BEST", OVERFIT_MIN_EPOCHS_SINCE_BEST,
         "val loss minimum at least this many epochs before the last epoch ..."),
        ("overfitting", "OVERFIT_VAL_LOSS_RISE", OVERFIT_VAL_LOSS_RISE,
         "... and final val loss >= (1 + this) x minimum val loss"),
        ("overfitting", "OVERFIT_GAP", OVERFIT_GAP, "or final train acc - final val acc >= this"),
        ("unstable", "UNSTABLE_WINDOW", UNSTABLE_WINDOW, "last epochs looked at"),
        ("unstable", "UNSTABLE_VAL_ACC_STD", UNSTABLE_VAL_ACC_STD,
         "sample std of val acc over the window >= this, and val acc fell at least once in it"),
        ("shift", "SHIFT_VAL_TEST_GAP", SHIFT_VAL_TEST_GAP, "best val acc - test acc >= this"),
    ]
    return pd.DataFrame(rows, columns=["verdict", "constant", "value", "rule"])


def precedence_text() -> str:
    """Return the verdict precedence as one sentence, for the report."""
    return ("Verdict = first fired flag in the order " + " > ".join(VERDICT_PRECEDENCE)
            + f", else {HEALTHY}; {NO_DATA} for a trial without a reported epoch. "
            "Underfitting first: rising val loss on a model that never fit its training data is "
            "divergence, not memorisation. Shift last: it concerns the split, not the run.")
