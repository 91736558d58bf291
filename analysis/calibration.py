"""The chosen model's calibration, operating point and top-k ensemble, from saved predictions.

Everything is fitted on the trials' saved val predictions and measured on their test predictions,
with ``tl.calibration``'s functions (the ones ``tl.export`` writes into a bundle), so the report and
the exported bundle agree. Reads files only; draws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis.classification import macro_auc
from tl.metrics import best_balanced_threshold
from analysis.load import Predictions, find_predictions_file
from analysis.stats import N_RESAMPLES, SEED, bootstrap_interval
from tl.calibration import (
    ECE_BINS, TARGET_SENSITIVITY, Reliability, apply_temperature, expected_calibration_error, fit_operating_point,
    reliability, sensitivity_specificity,
)
from tl.choice import rank_trials

VAL_FILE = "val_predictions.npz"
GRADCAM_GRID = Path("explain") / "gradcam_test.png"  # written by tl.export into the experiment


class Calibration(NamedTuple):
    """What the chosen-model section shows beyond accuracy."""

    trial: str
    figures: pd.DataFrame  # one row per statistic: value, interval, fitted on / measured on
    before: Reliability  # test, raw probabilities
    after: Reliability  # test, temperature-scaled
    gradcam: Path | None  # the Grad-CAM grid of this trial, if tl.export made one


def read_val_predictions(trial_dir: Path) -> Predictions | None:
    """``val_predictions.npz`` of the trial folder or its newest checkpoint, or None (older trials)."""
    path = find_predictions_file(trial_dir, VAL_FILE)
    if path is None:
        return None
    try:
        with np.load(path) as z:
            return Predictions(np.asarray(z["probs"], np.float64), np.asarray(z["labels"], np.int64),
                               str(z["val_fingerprint"]) if "val_fingerprint" in z.files else "")
    except (OSError, ValueError, KeyError):
        return None


def _interval_row(name: str, interval, on: str) -> dict:
    return {"statistic": name, "value": interval.value, "low": interval.low, "high": interval.high, "on": on}


def chosen_calibration(trial: str, trial_dir: Path, test: Predictions, experiment_dir: Path,
                       target: float = TARGET_SENSITIVITY, *, n_resamples: int = N_RESAMPLES,
                       seed: int = SEED, positive: int = 1) -> Calibration | None:
    """Temperature and (binary) threshold fitted on val; ECE and sensitivity/specificity on test.

    Binary tasks also get the threshold val chose for the best balanced accuracy, and test's
    balanced accuracy at it. None when the trial saved no val predictions (searches before val
    predictions were saved) or the task is multilabel (tl.export.MULTILABEL_CALIBRATION says why).
    """
    val = read_val_predictions(trial_dir)
    if val is None or test.multilabel:
        return None
    point = fit_operating_point(val.probs, val.labels, target, positive)
    scaled = apply_temperature(test.probs, point.temperature)
    kw = {"n_resamples": n_resamples, "seed": seed}
    n = len(test.labels)
    rows = [{"statistic": "temperature", "value": point.temperature, "low": np.nan, "high": np.nan,
             "on": "fitted on val"},
            _interval_row(f"ECE ({ECE_BINS} bins), raw",
                          bootstrap_interval(lambda i: expected_calibration_error(test.probs[i], test.labels[i]), n, **kw),
                          "test"),
            _interval_row(f"ECE ({ECE_BINS} bins), temperature-scaled",
                          bootstrap_interval(lambda i: expected_calibration_error(scaled[i], test.labels[i]), n, **kw),
                          "test")]
    if point.threshold is not None:
        pos = point.positive_class
        rows.append({"statistic": f"threshold for val sensitivity >= {target:g}", "value": point.threshold,
                     "low": np.nan, "high": np.nan, "on": "fitted on val"})
        for k, name in enumerate(("sensitivity", "specificity")):
            rows.append(_interval_row(f"{name} at that threshold", bootstrap_interval(
                lambda i, k=k: sensitivity_specificity(scaled[i, pos], test.labels[i], point.threshold, pos)[k],
                n, **kw), "test"))
        balanced = best_balanced_threshold(val.probs[:, pos], val.labels, pos)  # on raw probabilities, as the trainable
        rows.append({"statistic": "threshold for best val balanced accuracy", "value": balanced,
                     "low": np.nan, "high": np.nan, "on": "fitted on val"})
        rows.append(_interval_row("balanced accuracy at that threshold", bootstrap_interval(
            lambda i: float(np.mean(sensitivity_specificity(test.probs[i, pos], test.labels[i], balanced, pos))),
            n, **kw), "test"))
    grid = experiment_dir / GRADCAM_GRID
    return Calibration(trial, pd.DataFrame(rows), reliability(test.probs, test.labels),
                       reliability(scaled, test.labels), grid if grid.is_file() else None)


def ensemble_row(table: pd.DataFrame, predictions: dict[str, Predictions], column: str, mode: str, k: int, *,
                 n_resamples: int = N_RESAMPLES, seed: int = SEED, positive: int = 1) -> pd.DataFrame:
    """Mean probability of the top ``k`` tested trials by the rule of choice that share the chosen
    trial's test split; test accuracy and AUC with bootstrap intervals. Empty if fewer than 2."""
    ranked = rank_trials(table[table["trial"].isin(list(predictions))], column, mode)
    if ranked.empty or k < 2:
        return pd.DataFrame()
    first = predictions[str(ranked["trial"].iloc[0])]
    members = [str(t) for t in ranked["trial"] if predictions[str(t)].fingerprint == first.fingerprint][:k]
    if len(members) < 2:
        return pd.DataFrame()
    probs = np.mean([predictions[t].probs for t in members], 0)
    pred = Predictions(probs, first.labels, first.fingerprint)
    kw = {"n_resamples": n_resamples, "seed": seed}
    # multilabel: MedMNIST's ACC (every label at 0.5), as the chosen model's row
    right = ((probs >= 0.5) == pred.labels.astype(bool)) if pred.multilabel else pred.correct
    acc = bootstrap_interval(lambda i: float(right[i].mean()), len(pred.labels), **kw)
    auc = bootstrap_interval(lambda i: macro_auc(Predictions(probs[i], pred.labels[i]), positive),
                             len(pred.labels), **kw)
    return pd.DataFrame([{"trial": f"ensemble of top {len(members)}: " + ", ".join(members), "n": len(pred.labels),
                          "test_acc": acc.value, "acc_low": acc.low, "acc_high": acc.high,
                          "test_auc": auc.value, "auc_low": auc.low, "auc_high": auc.high}])
