"""The recommended model's figures: what ``tl.export`` ships, with its test figures, calibration,
operating point and Grad-CAM grid, all of that same model.

Which model it is comes from ``tl.core.recommend`` (the finalist winner's seed ensemble, else the
search's single pick), the function the console, MLflow's tag and ``tl.export`` call too. Temperature
and thresholds are fitted on its saved val predictions (a seed ensemble: their mean) with
``tl.core.calibration``, the functions ``tl.export`` writes into the bundle, and measured on test with
bootstrap intervals. Reads files only; draws nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from tl.core.calibration import (
    ECE_BINS, TARGET_SENSITIVITY, Reliability, apply_temperature, expected_calibration_error, fit_operating_point,
    reliability, sensitivity_specificity,
)
from analysis.classification import finding_table
from tl.core.columns import BINARY_ONLY, HEADLINE_TEST_METRICS, metric_name, split_metric
from tl.core.errors import TLError
from tl.core.finalists import ensemble_figures
from tl.core.headline import ORDINAL_TEST_METRICS, no_finding_accuracy
from tl.core.results.split_audit import train_copies
from tl.core.metrics import best_balanced_threshold
from tl.core.cv import cv_column
from tl.core.recommend import (
    FOLD_ENSEMBLE, TOP_K, Recommendation, describe, recommend, recommendation_lines, recommended_predictions,
)
from tl.core.results import (EXPLAIN_DIR, GRADCAM_GRID, GRADCAM_RECORD, VAL_PREDICTIONS, Experiment, Predictions,
                             dataset_record, positive_index)
from tl.core.stats import N_RESAMPLES, SEED, bootstrap_interval


class Calibration(NamedTuple):
    """Calibration and operating point of the recommended model, fitted on val, measured on test."""

    figures: pd.DataFrame  # one row per statistic: value, interval, fitted on / measured on
    before: Reliability  # test, raw probabilities
    after: Reliability  # test, temperature-scaled


class Recommended(NamedTuple):
    """Everything the report's first section says about the recommended model."""

    recommendation: Recommendation
    lines: list[str]  # what the console printed: the model, its val and test figures, the runner-up
    figures: pd.DataFrame  # one row: the model, its val figure, test figures with intervals
    test: Predictions
    calibration: Calibration | None
    calibration_note: str  # why there is none, when there is none
    findings: pd.DataFrame | None  # multilabel: per-finding test AUC
    gradcam: Path | None  # the Grad-CAM grid tl.export drew of this very model, if any
    gradcam_note: str  # why the grid is missing or not shown


def figures_with_intervals(exp: Experiment, test: Predictions, *, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """Test statistics of a model's predictions with bootstrap intervals (``ensemble_figures``)."""
    return ensemble_figures(test, n_resamples=n_resamples, seed=seed, positive=positive_index(exp.meta),
                            task=str(dataset_record(exp.meta).get("task") or "") or None)


def figures_row(rec: Recommendation, test: Predictions, found: dict) -> pd.DataFrame:
    """One row: the model, its members, its val figure and its test figures (``found``) with intervals."""
    # a fold ensemble was chosen on its out-of-fold figure (cv_acc), with a standard error, not a val split's
    chosen_on, spread = (cv_column(rec.metric), "se") if rec.kind == FOLD_ENSEMBLE else (rec.metric, "std")
    row = {"model": describe(rec), "kind": rec.kind, "trials": ", ".join(rec.trials), chosen_on: rec.val,
           "n": found["n"]}
    if not np.isnan(rec.val_std):
        row[f"{chosen_on}_{spread}"] = rec.val_std
    for name in (*HEADLINE_TEST_METRICS, *ORDINAL_TEST_METRICS):
        if name in found:
            row.update({name: found[name], f"{name}_low": found[f"{name}_low"],
                        f"{name}_high": found[f"{name}_high"]})
    if test.multilabel:  # what MedMNIST's ACC gets by predicting "no finding" everywhere
        row["acc_no_finding"] = no_finding_accuracy(test)
    return pd.DataFrame([row])


def _interval_row(name: str, interval, on: str) -> dict:
    return {"statistic": name, "value": interval.value, "low": interval.low, "high": interval.high, "on": on}


def calibration_of(val: Predictions, test: Predictions, target: float = TARGET_SENSITIVITY, *,
                   n_resamples: int = N_RESAMPLES, seed: int = SEED, positive: int = 1) -> Calibration:
    """Temperature and (binary) threshold fitted on val; ECE and sensitivity/specificity on test.

    Binary tasks also get the threshold val chose for the best balanced accuracy, and test's
    balanced accuracy at it (the trainable's ``test_balanced_acc_at_val_threshold``).
    """
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
        for k, name in enumerate(BINARY_ONLY):  # the order sensitivity_specificity returns them in
            rows.append(_interval_row(f"{name} at that threshold", bootstrap_interval(
                lambda i, k=k: sensitivity_specificity(scaled[i, pos], test.labels[i], point.threshold, pos)[k],
                n, **kw), "test"))
        balanced = best_balanced_threshold(val.probs[:, pos], val.labels, pos)  # on raw probabilities, as the trainable
        rows.append({"statistic": "threshold for best val balanced accuracy", "value": balanced,
                     "low": np.nan, "high": np.nan, "on": "fitted on val"})
        rows.append(_interval_row("balanced accuracy at that threshold", bootstrap_interval(
            lambda i: float(np.mean(sensitivity_specificity(test.probs[i, pos], test.labels[i], balanced, pos))),
            n, **kw), "test"))
    return Calibration(pd.DataFrame(rows), reliability(test.probs, test.labels), reliability(scaled, test.labels))


def gradcam_for(experiment_dir: Path, rec: Recommendation) -> tuple[Path | None, str]:
    """The Grad-CAM grid in ``EXP/explain/`` if ``tl.export`` drew it of the recommended model's trials."""
    grid, record = experiment_dir / EXPLAIN_DIR / GRADCAM_GRID, experiment_dir / EXPLAIN_DIR / GRADCAM_RECORD
    export = f"python -m tl.export {experiment_dir} --out BUNDLE draws it"
    if not grid.is_file():
        return None, f"No Grad-CAM grid yet: {export}."
    try:
        drawn = tuple(str(t) for t in json.loads(record.read_text()).get("trials", []))
    except (OSError, ValueError, AttributeError):
        drawn = ()
    mine = tuple(t.rsplit("/", 1)[-1] for t in rec.trials)
    if drawn != mine:
        return None, (f"The Grad-CAM grid in {EXPLAIN_DIR}/ is of trial(s) {', '.join(drawn) or 'unknown'}, not of "
                      f"the recommended model ({', '.join(mine)}), so it is not shown: {export}.")
    return grid, ""


def build_recommended(exp: Experiment, experiment_dir: Path, *, target_sensitivity: float = TARGET_SENSITIVITY,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Recommended | None:
    """Compute the recommended model's section of ``exp`` (search and finalist trials, as loaded);
    None when nothing was tested."""
    try:
        rec = recommend(exp)
        val, test = recommended_predictions(rec)
    except TLError:
        return None
    kw = {"n_resamples": n_resamples, "seed": seed}
    positive = positive_index(exp.meta)
    calibration, note = None, ""
    if test.multilabel:
        note = ("No temperature or threshold is fitted: one softmax temperature does not apply to independent "
                "sigmoids, and val has too few positives per finding to fit one per finding.")
    elif val is None:
        note = (f"No calibration or operating point: the recommended trials saved no {VAL_PREDICTIONS} "
                "(searches from before val predictions were saved). Re-run the search to get them.")
    else:
        calibration = calibration_of(val, test, target_sensitivity, positive=positive, **kw)
    names = [str(n) for n in dataset_record(exp.meta).get("class_names") or []]
    findings = finding_table(test, names) if test.multilabel else None
    gradcam, gradcam_note = gradcam_for(experiment_dir, rec)
    found = figures_with_intervals(exp, test, **kw)
    return Recommended(rec, recommendation_lines(exp, rec, figures=found, test=test,
                                                 copies=train_copies(experiment_dir)), figures_row(rec, test, found), test,
                       calibration, note, findings, gradcam, gradcam_note)


def top_k_row(exp: Experiment, k: int, *, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """The top ``k`` tested search trials (fewer if fewer share a test split) as an ensemble
    (``tl.export --ensemble K``), one figures row; empty when fewer than 2 are there or ``k`` < 2."""
    for size in range(k, 1, -1):
        try:
            rec = recommend(exp, top_k=size)
            _, test = recommended_predictions(rec)
            break
        except TLError:
            continue
    else:
        return pd.DataFrame()
    assert rec.kind == TOP_K
    return figures_row(rec, test, figures_with_intervals(exp, test, n_resamples=n_resamples, seed=seed))


# How far below val the test figure may fall before the report calls it a shift, and how close the
# runner-up may come (in val images) before it calls the choice uncertain.
SHIFT_WARNING = 0.05
CLOSE_CALL_IMAGES = 2
SEED_SPREAD_WARNING = 0.01


def warnings_for(rec: Recommended | None, audits: list, finalists=None) -> list[str]:
    """The warnings that matter for the recommended model, most serious first: leaks between the splits,
    a shift between val and test, a choice within noise of the runner-up, a wide spread over seeds."""
    out = []
    for audit in audits:
        for _, row in audit.counts.iterrows():
            exact, near = int(row["exact duplicate pairs"]), int(row["near duplicate pairs"])
            if exact or near:
                out.append(f"the split audit found {exact:,} exact and {near:,} near duplicate pairs between "
                           f"{row['splits']}: figures on the second split may be optimistic")
            shared = str(row["groups in both"])
            if shared.isdigit() and int(shared):
                out.append(f"{int(shared):,} patients (groups) appear in both {row['splits']}")
        if audit.warning:
            out.append(audit.warning)
    if rec is None:
        return out
    r, figures = rec.recommendation, rec.figures.iloc[0]
    test_name = split_metric("test", metric_name(r.metric))
    if test_name in figures and pd.notna(figures[test_name]):
        gap = (r.val - figures[test_name]) if r.mode == "max" else (figures[test_name] - r.val)
        if gap > SHIFT_WARNING:
            out.append(f"test {metric_name(test_name)} is {gap:.3f} below val ({figures[test_name]:.3f} vs "
                       f"{r.val:.3f}): val and test differ (a shift between them, or a val split too like train); "
                       "read the split audit and the diagnostics before trusting val")
    if r.runner_up is not None:
        close = (r.runner_up.gap_images is not None and r.runner_up.gap_images < CLOSE_CALL_IMAGES) or (
            not np.isnan(r.val_std) and r.runner_up.gap < r.val_std)
        if close:
            how = ("ties on val" if r.runner_up.gap == 0 else
                   f"is within {r.runner_up.gap_images:.1f} val images" if r.runner_up.gap_images is not None
                   else f"is within {r.runner_up.gap:.4f}, less than the seeds' spread")
            out.append(f"the runner-up ({r.runner_up.label}) {how}: the choice between them is within noise"
                       + ("" if finalists is not None else "; tl.search --finalists K compares them over seeds"))
    if finalists is not None and len(finalists.recipes) and finalists.recipes["winner"].iloc[0]:
        # the spread of the figure the search chose by (AUC for a val_auc search), else of accuracy
        name = "auc" if metric_name(r.metric) == "auc" else "acc"
        std = finalists.recipes[f"{split_metric('test', name)}_std"].iloc[0]
        if pd.notna(std) and std > SEED_SPREAD_WARNING:
            out.append(f"the winner's seeds spread by {std:.3f} (sample std) in test {name.upper() if name == 'auc' else 'accuracy'}: "
                       "one training run of this recipe is that noisy")
    return out
