"""What an experiment recommends: the one model the console, the report, MLflow's ``tl.chosen`` tag
and ``tl.export`` all describe.

In order of precedence: the trial a user asked for (``tl.export --trial``); the top K tested search
trials as an ensemble (``tl.export --ensemble K``); the finalist winner's seed ensemble, when the
search ran a finalist stage and a recipe finished it; else the search's single pick, the top tested
trial by the rule of choice (``tl.core.choice.rank_trials``). Everything is chosen on validation
figures; test figures only describe the choice.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from tl.core.choice import rank_trials
from tl.core.columns import is_tested, split_metric, tested_rows
from tl.core.errors import TLError
from tl.core.cv import cv_column, out_of_fold_predictions
from tl.core.finalists import ensemble_figures, finalist_runs, stage_recipes, winner_members
from tl.core.headline import headline_parts
from tl.core.results.files import (
    RECIPE_KEY, SOURCE_KEY, TEST_PREDICTIONS, Predictions, dataset_record, mean_predictions, positive_index,
    read_trial_predictions,
)
from tl.core.results.load import Experiment, split_stages
from tl.core.results.rows import rank_column, trial_table
from tl.core.stats import CI_LEVEL, N_RESAMPLES, SEED

FINALIST_ENSEMBLE, FOLD_ENSEMBLE, SINGLE_PICK, TRIAL_ASKED, TOP_K = (
    "finalist seed ensemble", "cross-validated fold ensemble", "single pick", "trial asked for", "top-k ensemble")
RECIPE_KEYS = ("backbone", "weights", "freeze", "freeze_fraction", "lr", "batch_size", "weight_decay",
               "image_size", "epochs")


class RunnerUp(NamedTuple):
    """The next best candidate on val and how far behind it is."""

    label: str  # "recipe 2 (search trial 1a2b3c4d)" or "trial 1a2b3c4d"
    val: float
    gap: float  # recommended val minus runner-up val, in the metric's units (>= 0 for max)
    gap_images: float | None  # for val_acc: the gap as a number of val images


class Recommendation(NamedTuple):
    """The recommended model: which trials it is made of, its recipe and its val figure."""

    kind: str  # FINALIST_ENSEMBLE, SINGLE_PICK, TRIAL_ASKED or TOP_K
    trials: tuple[str, ...]  # member trial keys (one for a single model)
    trial_dirs: tuple[Path, ...]
    config: dict  # the first member's recipe (RECIPE_KEYS it has)
    metric: str
    mode: str
    val: float  # best val metric; a finalist ensemble: the mean over its seeds
    val_std: float  # sample std over seeds (NaN unless a finalist ensemble of 2+ seeds)
    runner_up: RunnerUp | None
    recipe_id: int | None = None  # the finalist recipe, when kind is FINALIST_ENSEMBLE

    @property
    def ensemble(self) -> bool:
        return len(self.trials) > 1


def _dirs(exp: Experiment, trials: tuple[str, ...]) -> tuple[Path, ...]:
    where = dict(zip(exp.trials["trial"], exp.trials["trial_dir"]))
    return tuple(Path(where[t]) for t in trials)


def _recipe(exp: Experiment, trial: str) -> dict:
    row = exp.trials.loc[exp.trials["trial"] == trial].iloc[0]
    return {k: row[k] for k in RECIPE_KEYS if k in row.index and pd.notna(row[k])}


def _val_images(meta: dict) -> int | None:
    sizes = dataset_record(meta).get("split_sizes")
    return int(sizes["val"]) if isinstance(sizes, dict) and sizes.get("val") else None


def _runner_up(label: str, best: float, other: float, metric: str, mode: str, meta: dict) -> RunnerUp:
    gap = (best - other) if mode == "max" else (other - best)
    n_val = _val_images(meta)
    images = gap * n_val if metric == split_metric("val", "acc") and n_val else None
    return RunnerUp(label, float(other), float(gap), images)


def recommend(exp: Experiment, *, trial: str | None = None, top_k: int = 1) -> Recommendation:
    """Return what ``exp`` (search and finalist trials, as loaded) recommends; see the module doc.

    Args:
        trial: a trial id (or key) to hand out instead; it must have been tested.
        top_k: above 1, the top ``top_k`` tested search trials that share the first one's test split.

    Raises:
        TLError: no tested trial; an unknown or untested ``trial``; ``top_k`` < 1 or more than the
            tested trials that share a test split.
    """
    if top_k < 1:
        raise TLError(f"--ensemble must be at least 1, got {top_k}")
    search, stage = split_stages(exp)
    metric, mode = str(exp.meta["metric"]), str(exp.meta["mode"])
    column = rank_column(metric)
    table = tested_rows(rank_trials(trial_table(search), column, mode))
    if trial is not None:
        return _asked(exp, trial, metric, mode, column)
    if table.empty and stage is None:
        raise TLError("no tested trial in the experiment: every trial was stopped early or failed, so there is "
                      "no model to recommend")
    if top_k > 1:
        first = exp.predictions.get(str(table["trial"].iloc[0])) if len(table) else None
        same = [t for t in table["trial"] if first is not None and t in exp.predictions
                and exp.predictions[t].fingerprint == first.fingerprint]
        if len(same) < top_k:
            raise TLError(f"--ensemble {top_k}: only {len(same)} tested trial(s) share the chosen trial's test split")
        members = tuple(same[:top_k])
        values = table.set_index("trial").loc[list(members), column]
        return Recommendation(TOP_K, members, _dirs(exp, members), _recipe(exp, members[0]), metric, mode,
                              float(values.iloc[0]), float("nan"), None)
    if stage is not None:
        found = _finalist(exp, stage, metric, mode)
        if found is not None:
            return found
    if table.empty:
        raise TLError("no tested trial in the experiment: every trial was stopped early or failed, so there is "
                      "no model to recommend")
    best = table.iloc[0]
    runner = None
    if len(table) > 1:
        second = table.iloc[1]
        runner = _runner_up(f"trial {second['trial']}", float(best[column]), float(second[column]), metric, mode,
                            exp.meta)
    members = (str(best["trial"]),)
    return Recommendation(SINGLE_PICK, members, _dirs(exp, members), _recipe(exp, members[0]), metric, mode,
                          float(best[column]), float("nan"), runner)


def _asked(exp: Experiment, trial: str, metric: str, mode: str, column: str) -> Recommendation:
    table = trial_table(exp)
    match = table[(table["trial"] == trial) | (table["trial"].str.rsplit("/", n=1).str[-1] == trial)]
    tested = ", ".join(tested_rows(rank_trials(table, column, mode))["trial"]) or "none"
    if match.empty:
        raise TLError(f"--trial {trial} does not exist; tested trials: {tested}")
    row = match.iloc[0]
    if not is_tested(row):
        raise TLError(f"--trial {trial} was not tested (stopped early or failed); tested trials: {tested}")
    members = (str(row["trial"]),)
    return Recommendation(TRIAL_ASKED, members, _dirs(exp, members), _recipe(exp, members[0]), metric, mode,
                          float(row[column]), float("nan"), None)


def _finalist(exp: Experiment, stage: Experiment, metric: str, mode: str) -> Recommendation | None:
    runs = finalist_runs(stage)
    recipes, _ = stage_recipes(stage, runs)
    if not len(recipes) or not recipes["winner"].iloc[0]:
        return None
    folds = cv_column(metric) in recipes.columns
    value, spread = (cv_column(metric), f"{cv_column(metric)}_se") if folds else ("val_mean", "val_std")
    winner = recipes.iloc[0]
    members = winner_members(runs, int(winner[RECIPE_KEY]), stage.predictions)
    if not members:
        return None
    runner = None
    if len(recipes) > 1 and pd.notna(recipes[value].iloc[1]):
        second = recipes.iloc[1]
        source = runs.loc[runs[RECIPE_KEY] == second[RECIPE_KEY], SOURCE_KEY]
        label = f"recipe {int(second[RECIPE_KEY])}" + (f" (search trial {source.iloc[0]})" if len(source) else "")
        runner = _runner_up(label, float(winner[value]), float(second[value]), metric, mode,
                            exp.meta if not folds else {})
    return Recommendation(FOLD_ENSEMBLE if folds else FINALIST_ENSEMBLE, members, _dirs(exp, members),
                          _recipe(exp, members[0]), metric, mode, float(winner[value]), float(winner[spread]), runner,
                          int(winner[RECIPE_KEY]))


def recommended_predictions(rec: Recommendation) -> tuple[Predictions | None, Predictions]:
    """(val, test) predictions of the recommended model: its members' probabilities averaged.

    Val is None when a member saved none (searches from before val predictions were saved).

    Raises:
        TLError: a member saved no test predictions, or the members saw different splits.
    """
    tests, vals = [], []
    for trial, folder in zip(rec.trials, rec.trial_dirs):
        test = read_trial_predictions(folder, "test")
        if test is None:
            raise TLError(f"trial {trial}: no {TEST_PREDICTIONS} in {folder} or its checkpoints")
        tests.append(test)
        vals.append(read_trial_predictions(folder, "val"))
    what = f"the recommended {rec.kind} ({', '.join(rec.trials)})"
    if rec.kind == FOLD_ENSEMBLE:  # each image's prediction by the fold model that never trained on it
        return out_of_fold_predictions(rec.trial_dirs), mean_predictions(tests, what)
    val = mean_predictions(vals, what) if all(v is not None for v in vals) else None
    return val, mean_predictions(tests, what)


def describe(rec: Recommendation) -> str:
    """The recommended model in a few words: what it is made of and its recipe."""
    c = rec.config
    freeze = {"none": "fine-tuned", "backbone": "fixed extractor", "partial": "partial freeze"}.get(
        str(c.get("freeze")), str(c.get("freeze", "?")))
    if c.get("freeze") == "partial" and "freeze_fraction" in c:
        freeze += f" {float(c['freeze_fraction']):.2f}"
    recipe = ", ".join(str(x) for x in (c.get("backbone", "?"), c.get("weights", "?"), freeze))
    extras = []
    if "lr" in c:
        extras.append(f"lr {float(c['lr']):.2g}")
    if "image_size" in c:
        extras.append(f"{int(c['image_size'])} px")
    if "epochs" in c:
        extras.append(f"{int(c['epochs'])} epochs")
    recipe += (", " + ", ".join(extras)) if extras else ""
    if rec.kind == FOLD_ENSEMBLE:
        return (f"finalist recipe {rec.recipe_id}'s cross-validated fold ensemble ({len(rec.trials)} fold models: "
                f"{', '.join(rec.trials)}): {recipe}")
    if rec.kind == FINALIST_ENSEMBLE:
        return f"finalist recipe {rec.recipe_id}'s seed ensemble ({len(rec.trials)} seeds: {', '.join(rec.trials)}): {recipe}"
    if rec.kind == TOP_K:
        return f"ensemble of the top {len(rec.trials)} tested trials ({', '.join(rec.trials)}): {recipe} first"
    return f"trial {rec.trials[0]} ({rec.kind}): {recipe}"


def recommendation_lines(exp: Experiment, rec: Recommendation, *, figures: dict | None = None,
                         test: Predictions | None = None, copies: np.ndarray | None = None,
                         n_resamples: int = N_RESAMPLES, seed: int = SEED) -> list[str]:
    """The recommendation as console lines (indented lines belong to the one above): what it is, its
    val figure, its test figures with bootstrap intervals in the order its task reads them
    (``tl.core.headline``; ``figures``: ``ensemble_figures`` of its ``test`` predictions, if the caller
    has them), the same on the test images without a copy in train when the audit found some
    (``copies``: their indices, ``tl.core.results.split_audit.train_copies``), and the runner-up's
    distance on val."""
    lines = [f"recommended model: {describe(rec)}"]
    if rec.kind == FOLD_ENSEMBLE:
        se = f" ± {rec.val_std:.4f} SE" if not math.isnan(rec.val_std) else ""
        lines.append(f"  chosen out of fold: {cv_column(rec.metric)} {rec.val:.4f}{se} (pooled predictions on train + val)")
    else:
        spread = f" ± {rec.val_std:.4f} over {len(rec.trials)} seeds" if not math.isnan(rec.val_std) else ""
        lines.append(f"  chosen on val: {rec.metric} {rec.val:.4f}{spread}")
    record = dataset_record(exp.meta)
    task = str(record.get("task") or "")
    if figures is None or test is None:
        try:
            _, test = recommended_predictions(rec)
        except TLError as exc:
            return [*lines, f"  test figures unavailable: {exc}"]
    if figures is None:
        figures = ensemble_figures(test, n_resamples=n_resamples, seed=seed, positive=positive_index(exp.meta),
                                   task=task)
    shown, extra = headline_parts(task, figures, test, class_names=[str(c) for c in record.get("class_names") or []],
                                  positive=positive_index(exp.meta))
    lines.append(f"  expected on new images like the test split ({figures['n']} images, {int(CI_LEVEL * 100)}% "
                 "bootstrap CI): " + ", ".join(shown))
    lines += [f"  {line}" for line in extra]
    lines += _without_copies(task, test, copies, record, positive_index(exp.meta), n_resamples, seed)
    if rec.runner_up is not None:
        r = rec.runner_up
        images = f", about {r.gap_images:.1f} val images" if r.gap_images is not None else ""
        figure = cv_column(rec.metric) if rec.kind == FOLD_ENSEMBLE else rec.metric
        lines.append(f"  runner-up: {r.label}, {figure} {r.val:.4f} ({r.gap:.4f} behind{images})")
    return lines


# Above this share of test images with a copy in train, test says little about new images.
MOSTLY_COPIES = 0.5


def _without_copies(task: str, test: Predictions, copies: np.ndarray | None, record: dict, positive: int,
                    n_resamples: int, seed: int) -> list[str]:
    """Lines on the test images without an exact or near copy in train, when the audit found copies:
    their figures beside the full split's, and a plain warning when most of test has one."""
    if copies is None or not len(copies):
        return []
    n = len(test.labels)
    keep = np.setdiff1d(np.arange(n), copies)
    lines = []
    if len(copies) > MOSTLY_COPIES * n:
        lines.append(f"  warning: {len(copies):,} of {n:,} test images are exact or near copies of train images: "
                     "the test split cannot estimate performance on new images")
    if not len(keep):
        return [*lines, "  no test image is free of a copy in train: no figure on new images can be given"]
    rest = Predictions(test.probs[keep], test.labels[keep], test.fingerprint)
    figures = ensemble_figures(rest, n_resamples=n_resamples, seed=seed, positive=positive, task=task or None)
    shown, _ = headline_parts(task, figures, rest, class_names=[str(c) for c in record.get("class_names") or []],
                              positive=positive)
    return [*lines, f"  on the {len(keep):,} test images without a copy in train ({len(copies):,} have one): "
                    + ", ".join(shown)]


__all__ = ["FINALIST_ENSEMBLE", "FOLD_ENSEMBLE", "SINGLE_PICK", "TOP_K", "TRIAL_ASKED", "Recommendation", "RunnerUp", "describe",
           "recommend", "recommendation_lines", "recommended_predictions"]
