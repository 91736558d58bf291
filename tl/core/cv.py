"""Cross-validated finalists (``--cv K``): out-of-fold figures, their standard errors, and the choice.

Each finalist recipe was trained once per fold of train + val (``tl.data.folds``); every fold trial
saved its val predictions, which are out of fold, with the pooled rows and patients they belong to.
Pooled, they give one prediction for every labelled non-test image, so a recipe is ranked on all of
them rather than on one val split. Its figure is the METRIC of the pooled out-of-fold predictions;
its standard error comes from a bootstrap over patients when a grouping is known (images of one
patient are not independent), else over images. Recipes are compared on the same images, so the
difference to the best has a paired interval.

The choice (``--choose``): ``best`` takes the best out-of-fold figure; ``one-se`` takes, among the
recipes within one standard error of the best, the cheapest to run (measured seconds per epoch,
then parameters): the one-standard-error rule of Breiman et al. and of ``glmnet``'s ``lambda.1se``.
Pure numpy and pandas.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from tl.core.errors import TLError
from tl.core.metrics import split_metrics
from tl.core.results.files import (FOLD_KEY, OOF_GROUPS, OOF_ROWS, RECIPE_KEY, VAL_PREDICTIONS, Predictions,
                                   find_predictions_file)
from tl.core.stats import SEED

CHOICES = ("best", "one-se")
DEFAULT_CHOICE = "best"
OUT_OF_FOLD = "out-of-fold"
# Bootstrap draws for the out-of-fold SE and the paired differences: one fixed number, so the console,
# the report and the recommendation print the same SE (2,000 would cost ~30 s for mean AUCs over findings).
SE_RESAMPLES = 1000  # the fingerprint of pooled out-of-fold predictions: no one val split


class OutOfFold(NamedTuple):
    """One recipe's pooled out-of-fold predictions, in pooled (train then val) row order."""

    probs: np.ndarray
    labels: np.ndarray
    rows: np.ndarray  # pooled rows covered, sorted
    groups: np.ndarray | None  # the patient of each row, when known
    folds: int  # folds that ran all their epochs and saved predictions


def cv_column(metric: str) -> str:
    """``cv_acc`` for ``val_acc``: the out-of-fold figure's column in ``finalists.csv``."""
    return "cv_" + metric.removeprefix("val_")


def check_choice(choice: str) -> str:
    if choice not in CHOICES:
        raise TLError(f"--choose must be one of {', '.join(CHOICES)}, got {choice!r}")
    return choice


def read_fold(trial_dir: Path) -> dict | None:
    """A fold trial's saved out-of-fold predictions (probs, labels, rows, groups), or None."""
    path = find_predictions_file(Path(trial_dir), VAL_PREDICTIONS)
    if path is None:
        return None
    with np.load(path) as data:
        if OOF_ROWS not in data.files:
            raise TLError(f"{path}: no pooled rows saved: not a cross-validation fold trial")
        out = {"probs": np.asarray(data["probs"], dtype=np.float64), "labels": np.asarray(data["labels"]),
               "rows": np.asarray(data[OOF_ROWS], dtype=np.int64),
               "groups": np.asarray(data[OOF_GROUPS]).astype(str) if OOF_GROUPS in data.files else None}
    if out["labels"].ndim == 2 and out["labels"].shape[1] == 1:
        out["labels"] = out["labels"].reshape(-1)
    return out


def pool_folds(saved: list[tuple[int, dict]]) -> OutOfFold:
    """Pool fold trials' predictions: seeds of one fold averaged, folds concatenated in row order.

    Raises:
        TLError: two folds claim the same pooled image, or one fold's seeds saw different images.
    """
    by_fold: dict[int, list[dict]] = {}
    for fold, data in saved:
        by_fold.setdefault(int(fold), []).append(data)
    parts = []
    for fold, seeds in sorted(by_fold.items()):
        if any(not np.array_equal(s["rows"], seeds[0]["rows"]) for s in seeds):
            raise TLError(f"fold {fold}: its trials were validated on different images")
        parts.append({**seeds[0], "probs": np.mean([s["probs"] for s in seeds], axis=0)})
    if not parts:
        return OutOfFold(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), None, 0)
    rows = np.concatenate([p["rows"] for p in parts])
    if len(np.unique(rows)) != len(rows):
        raise TLError("two folds hold the same image: the folds do not partition train + val")
    order = np.argsort(rows, kind="stable")
    groups = None if any(p["groups"] is None for p in parts) else np.concatenate([p["groups"] for p in parts])[order]
    return OutOfFold(np.concatenate([p["probs"] for p in parts])[order],
                     np.concatenate([p["labels"] for p in parts])[order], rows[order], groups, len(parts))


def oof_figure(probs: np.ndarray, labels: np.ndarray, metric: str, task: str | None, positive: int | None) -> float:
    """``metric`` (a val metric name) of out-of-fold predictions; ``val_loss`` is their log loss."""
    if metric == "val_loss":
        eps = 1e-7
        if labels.ndim == 2:  # findings: binary cross-entropy over known labels (-1: uncertain, left out)
            known = labels >= 0
            p = np.clip(probs, eps, 1 - eps)
            losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
            return float(losses[known].mean()) if known.any() else float("nan")
        return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1)).mean())
    found = split_metrics(probs, labels, "val", task, positive)
    if metric not in found:
        raise TLError(f"{metric} is not computed for a {task or 'this'} task's out-of-fold predictions")
    return float(found[metric])


def group_resamples(groups: np.ndarray | None, n: int, n_resamples: int, seed: int) -> list[np.ndarray]:
    """Bootstrap index draws over patients (every image of a drawn patient, as often as drawn), or
    over images when ``groups`` is None. The same draws serve every recipe: paired comparisons."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, size=n) for _ in range(n_resamples)]
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    draws = []
    for _ in range(n_resamples):
        picked = rng.integers(0, len(members), size=len(members))
        draws.append(np.concatenate([members[g] for g in picked]))
    return draws


def _values(oof: OutOfFold, draws: list[np.ndarray], metric: str, task, positive) -> np.ndarray:
    return np.array([oof_figure(oof.probs[d], oof.labels[d], metric, task, positive) for d in draws])


# cv_summary's frames by the content they are computed from: the recommendation, the finalists'
# table and the report each rank the same stage, and the bootstrap is seconds at 10^3-10^4 images.
_SUMMARIES: dict[str, pd.DataFrame] = {}
_SUMMARIES_KEPT = 8


def _summary_key(oofs: dict[int, OutOfFold], *args) -> str:
    digest = hashlib.sha256(repr(args).encode())
    for recipe, o in sorted(oofs.items()):
        digest.update(f"{recipe}:{o.folds}:".encode())
        groups = [] if o.groups is None else [np.asarray(o.groups).astype(str)]
        for part in (o.probs, o.labels, o.rows, *groups):
            digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def cv_summary(oofs: dict[int, OutOfFold], n_pooled: int, k: int, metric: str, mode: str, task: str | None,
               positive: int | None, *, n_resamples: int = SE_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """One row per recipe: ``cv_<m>``, ``cv_<m>_se``, the images covered, whether every fold ran, and the
    paired difference to the best complete recipe with its 95 % bootstrap interval (``diff_to_best``,
    ``diff_low``, ``diff_high``; in the metric's direction: negative is worse). Computed once per
    process for the same predictions and settings (``_SUMMARIES``)."""
    key = _summary_key(oofs, n_pooled, k, metric, mode, task, positive, n_resamples, seed)
    if key not in _SUMMARIES:
        _SUMMARIES[key] = _cv_summary(oofs, n_pooled, k, metric, mode, task, positive, n_resamples, seed)
        while len(_SUMMARIES) > _SUMMARIES_KEPT:
            _SUMMARIES.pop(next(iter(_SUMMARIES)))
    return _SUMMARIES[key].copy()


def _cv_summary(oofs, n_pooled, k, metric, mode, task, positive, n_resamples, seed) -> pd.DataFrame:
    column = cv_column(metric)
    complete = {r: o for r, o in oofs.items() if o.folds == k and len(o.rows) == n_pooled}
    draws = None
    if complete:
        first = next(iter(complete.values()))
        draws = group_resamples(first.groups, len(first.rows), n_resamples, seed)
    sign = 1 if mode == "max" else -1
    values = {r: _values(o, draws, metric, task, positive) for r, o in complete.items()} if draws else {}
    figures = {r: oof_figure(o.probs, o.labels, metric, task, positive) if len(o.rows) else float("nan")
               for r, o in oofs.items()}
    best = max(complete, key=lambda r: (sign * figures[r], -r)) if complete else None
    rows = []
    for r, o in sorted(oofs.items()):
        row = {RECIPE_KEY: r, column: figures[r], f"{column}_se": np.nan, "cv_images": len(o.rows),
               "cv_folds": o.folds, "cv_complete": r in complete, "cv_grouped": o.groups is not None,
               "diff_to_best": np.nan, "diff_low": np.nan, "diff_high": np.nan}
        if r in values:
            row[f"{column}_se"] = float(np.nanstd(values[r], ddof=1))
            diff = sign * (values[r] - values[best])
            ok = ~np.isnan(diff)
            row.update(diff_to_best=sign * (figures[r] - figures[best]),
                       diff_low=float(np.percentile(diff[ok], 2.5)) if ok.any() else np.nan,
                       diff_high=float(np.percentile(diff[ok], 97.5)) if ok.any() else np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def choose(summary: pd.DataFrame, costs: pd.DataFrame, metric: str, mode: str, rule: str) -> tuple[int | None, str]:
    """(the recipe chosen by ``rule``, one sentence saying why), among recipes whose folds all ran.

    ``costs``: ``recipe_id``, ``sec_per_epoch`` and ``total_params`` (either may be NaN: it then
    never makes a recipe look cheaper)."""
    check_choice(rule)
    column = cv_column(metric)
    done = summary[summary["cv_complete"]].merge(costs, on=RECIPE_KEY, how="left")
    if done.empty:
        return None, "no recipe ran all its folds"
    sign = 1 if mode == "max" else -1
    done = done.assign(_key=sign * done[column]).sort_values(["_key", RECIPE_KEY], ascending=[False, True])
    best = done.iloc[0]
    if rule == "best" or len(done) == 1:
        return int(best[RECIPE_KEY]), f"recipe {int(best[RECIPE_KEY])} has the best out-of-fold {column}"
    se = float(best[f"{column}_se"]) if pd.notna(best[f"{column}_se"]) else 0.0
    near = done[sign * (best[column] - done[column]) <= se + 1e-12]
    cheap = near.assign(_s=near["sec_per_epoch"].fillna(np.inf), _p=near["total_params"].fillna(np.inf)) \
        .sort_values(["_s", "_p", "_key", RECIPE_KEY], ascending=[True, True, False, True]).iloc[0]
    chosen = int(cheap[RECIPE_KEY])
    if chosen == int(best[RECIPE_KEY]):
        return chosen, (f"one-se: recipe {chosen} has the best out-of-fold {column} and is the cheapest of the "
                        f"{len(near)} recipe(s) within one SE ({se:.4f}) of it")
    return chosen, (f"one-se: recipe {chosen} ({column} {cheap[column]:.4f}) is within one SE ({se:.4f}) of the best, "
                    f"recipe {int(best[RECIPE_KEY])} ({best[column]:.4f}), and cheaper to run "
                    f"({_cost(cheap)} vs {_cost(best)})")


def _cost(row: pd.Series) -> str:
    parts = []
    if pd.notna(row.get("sec_per_epoch")):
        parts.append(f"{row['sec_per_epoch']:.2f} s/epoch")
    if pd.notna(row.get("total_params")):
        parts.append(f"{int(row['total_params']):,} parameters")
    return ", ".join(parts) or "cost unknown"


def recipe_costs(runs: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Per recipe: mean measured seconds per epoch over its fold trials' epochs, and its parameters."""
    times = frame[frame["trial"].isin(runs["trial"])] if "epoch_time_s" in frame.columns else frame.iloc[:0]
    rows = []
    for recipe, group in runs.groupby(RECIPE_KEY):
        mine = times[times["trial"].isin(group["trial"])]
        params = group["total_params"].dropna() if "total_params" in group.columns else pd.Series(dtype=float)
        rows.append({RECIPE_KEY: int(recipe),
                     "sec_per_epoch": float(mine["epoch_time_s"].mean()) if len(mine) else np.nan,
                     "total_params": float(params.iloc[0]) if len(params) else np.nan})
    return pd.DataFrame(rows, columns=[RECIPE_KEY, "sec_per_epoch", "total_params"])


def is_cv(runs: pd.DataFrame) -> bool:
    """Whether these finalist runs are cross-validation folds."""
    return FOLD_KEY in runs.columns and runs[FOLD_KEY].notna().any()


def out_of_fold(runs: pd.DataFrame, trial_dirs: dict[str, Path], recipe: int, tested) -> OutOfFold:
    """The recipe's pooled out-of-fold predictions from its fold trials that ran all their epochs."""
    mine = runs[(runs[RECIPE_KEY] == recipe) & tested]
    saved = [(int(r[FOLD_KEY]), found) for _, r in mine.iterrows()
             if (found := read_fold(trial_dirs[r["trial"]])) is not None]
    return pool_folds(saved)


def out_of_fold_predictions(trial_dirs) -> Predictions:
    """The fold models' pooled out-of-fold predictions, from their folders alone (folds are told apart
    by the images they held out): what a fold ensemble's temperature and threshold are fitted on."""
    saved = []
    for folder in trial_dirs:
        found = read_fold(folder)
        if found is None:
            raise TLError(f"{folder}: no {VAL_PREDICTIONS}: the fold ensemble cannot be calibrated")
        saved.append((int(found["rows"].min()) if len(found["rows"]) else -1, found))
    oof = pool_folds(saved)
    return Predictions(oof.probs, oof.labels.astype(np.int64), OUT_OF_FOLD)
