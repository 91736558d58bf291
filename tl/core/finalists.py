"""Finalists over seeds: which search trials are re-trained, with which seeds, and how they score.

After the search, the top K tested recipes by the rule of choice are re-trained for their full
epochs with S new seeds each (:func:`finalist_configs`; ``tl.search.finalist_stage`` runs them on Ray).
Read back from the experiment folder, each recipe gets its val mean ± std over seeds; the winner is
the recipe with the best mean val metric (:func:`tl.core.choice.rank_recipes`), and its seeds' test
probabilities are averaged into one ensemble with bootstrap intervals (:func:`build_finalists`).
The console and the report print :func:`finalist_lines` of the same result, so they cannot disagree.
Pure Python, numpy and pandas.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from tl.core.choice import rank_recipes, recipe_rule_text
from tl.core.columns import BINARY_TEST_METRICS, HEADLINE, HEADLINE_TEST_METRICS, TEST_ACC, TEST_AUC, tested_mask
from tl.core.errors import TLError
from tl.core.headline import ORDINAL_TEST_METRICS
from tl.core.metrics import label_accuracy, split_metrics, task_auc
from tl.core import cv
from tl.core.results.files import (FOLD_KEY, FOLD_SEED_KEY, FOLDS_KEY, RECIPE_KEY, SOURCE_KEY, STAGE, STAGE_KEY,
                                   Predictions, dataset_record, mean_predictions, positive_index)
from tl.core.results.load import Experiment
from tl.core.results.rows import rank_column, trial_table
from tl.core.stats import CI_LEVEL, N_RESAMPLES, SEED, bootstrap_interval

DEFAULT_SEEDS = 3
RECIPE_COLUMNS = ("backbone", "weights", "freeze", "lr", "batch_size", "weight_decay", "image_size", "epochs")
# The statistics bootstrapped for the seed ensemble, computed by tl.core.metrics.split_metrics (the task
# follows the shapes: multi-hot labels are multilabel, where test_auc is the mean AUC over findings);
# sensitivity/specificity (of the dataset's positive class) for two classes only.
ENSEMBLE_STATS = HEADLINE_TEST_METRICS

SHORT_NAMES = {column: name.replace("auc", "AUC") for column, name in zip(HEADLINE_TEST_METRICS, HEADLINE)}



class Finalists(NamedTuple):
    """The finalist stage of one experiment, computed."""

    runs: pd.DataFrame  # one row per finalist trial: recipe_id, seed, status, epochs, val and test figures
    recipes: pd.DataFrame  # one row per recipe, winner first (tl.core.finalists.recipe_summary + its config)
    ensemble: pd.DataFrame  # the winner's seed ensemble: one row of test figures with intervals, or none
    protocol: str  # the selection protocol in one sentence
    metric: str
    notes: list[str]
    # the winner's seed ensemble itself (mean test probabilities), for comparisons with other models
    ensemble_predictions: Predictions | None = None
    ensemble_trials: tuple[str, ...] = ()
    chosen_by: str = ""  # --cv: why the winner won (tl.core.cv.choose); "" over seeds (best mean val)


def parse_count(flag: str, raw) -> int:
    """Return ``raw`` as an integer >= 1, or raise TLError naming ``flag`` and what it got.

    ``bool`` is refused (``True`` is an int to Python, not a count to a user).
    """
    value = raw
    if isinstance(raw, str):
        try:
            value = int(raw.strip())
        except ValueError:
            raise TLError(f"{flag} must be an integer >= 1, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TLError(f"{flag} must be an integer >= 1, got {raw!r}")
    return value


def finalist_seeds(search_seeds, n: int) -> list[int]:
    """Return ``n`` seeds none of the search used: the integers after the search's largest.

    Every recipe gets the same seeds, so recipes are compared on equal draws.
    """
    start = max((int(s) for s in search_seeds), default=-1) + 1
    return list(range(start, start + n))


def finalist_configs(configs: list[dict], source_trials: list[str], seeds: list[int],
                     folds: tuple[int, int] | None = None) -> list[dict]:
    """Return one trial config per (recipe, seed), recipe ids 1..K in the order given (search rank);
    with ``folds`` = (K, folds' seed), one per (recipe, fold, seed): ``--cv``.

    Each is the search trial's config with a new ``seed``, marked ``stage="finalist"`` and carrying
    its ``recipe_id`` and ``source_trial`` (and ``cv_fold``, ``cv_k``, ``cv_seed`` for a fold); the
    optimizer's bookkeeping (``weights_for_*``) is dropped.
    """
    out = []
    fold_marks = [{}] if folds is None else [{FOLD_KEY: i, FOLDS_KEY: int(folds[0]), FOLD_SEED_KEY: int(folds[1])}
                                             for i in range(int(folds[0]))]
    for recipe_id, (config, source) in enumerate(zip(configs, source_trials), start=1):
        plain = {k: v for k, v in config.items() if not k.startswith("weights_for_")}
        for marks in fold_marks:
            for seed in seeds:
                out.append({**plain, "seed": int(seed), STAGE_KEY: STAGE, RECIPE_KEY: recipe_id,
                            SOURCE_KEY: str(source), **marks})
    return out


def recipe_summary(runs: pd.DataFrame, val_column: str, mode: str) -> pd.DataFrame:
    """Return one row per recipe, the winner first (:func:`tl.core.choice.rank_recipes`).

    Args:
        runs: one row per finalist trial: ``recipe_id``, ``seed``, ``trial``, ``val_column`` (the
            trial's best val metric over epochs), ``best_val_loss``, ``test_acc``, ``test_auc``.
            Only trials that ran all their epochs (``test_acc`` not NaN) count.
        val_column: the val figure averaged over seeds, e.g. ``best_val_acc``.
        mode: ``max`` or ``min``.

    Returns:
        ``recipe_id``, ``n_seeds``, ``seeds``, ``val_mean``, ``val_std`` (sample std, NaN for one
        seed), ``val_loss_mean``, ``test_acc_mean``/``_std``, ``test_auc_mean``/``_std``,
        ``trials``, and ``winner`` (True on the top row when it has a mean).
    """
    over_seeds = [f"{figure}_{stat}" for figure in (TEST_ACC, TEST_AUC) for stat in ("mean", "std")]
    columns = ["recipe_id", "n_seeds", "seeds", "val_mean", "val_std", "val_loss_mean", *over_seeds, "trials", "winner"]
    rows = []
    for recipe_id, group in runs.groupby("recipe_id", sort=True):
        done = group[tested_mask(group)].sort_values("seed")
        rows.append({
            "recipe_id": int(recipe_id), "n_seeds": len(done),
            "seeds": ", ".join(str(int(s)) for s in done["seed"]),
            "val_mean": done[val_column].mean(), "val_std": done[val_column].std(ddof=1),
            "val_loss_mean": done["best_val_loss"].mean(),
            **{f"{figure}_mean": done[figure].mean() for figure in (TEST_ACC, TEST_AUC)},
            **{f"{figure}_std": done[figure].std(ddof=1) for figure in (TEST_ACC, TEST_AUC)},
            "trials": ", ".join(map(str, done["trial"]))})
    if not rows:
        return pd.DataFrame(columns=columns)
    ranked = rank_recipes(pd.DataFrame(rows), "val_mean", mode)
    ranked["winner"] = [i == 0 and pd.notna(v) for i, v in enumerate(ranked["val_mean"])]
    return ranked[columns]


def finalist_runs(exp: Experiment) -> pd.DataFrame:
    """Return one row per finalist trial: its recipe, seed, status, epochs and val/test figures."""
    table = trial_table(exp)
    keep = ["trial", "epochs_run", "status", rank_column(exp.meta["metric"]), "best_val_loss", TEST_ACC, TEST_AUC]
    keep.append("total_params")
    config = [c for c in (RECIPE_KEY, "seed", FOLD_KEY, SOURCE_KEY, *RECIPE_COLUMNS) if c in exp.trials.columns]
    runs = exp.trials[["trial", *config]].merge(table[[c for c in keep if c in table.columns]], on="trial")
    runs[RECIPE_KEY] = pd.to_numeric(runs[RECIPE_KEY], errors="coerce").astype(int)
    order = [RECIPE_KEY, *([FOLD_KEY] if FOLD_KEY in runs.columns else []), "seed"]
    return runs.sort_values(order, kind="mergesort").reset_index(drop=True)


def stage_recipes(exp: Experiment, runs: pd.DataFrame, *, seed: int = SEED) -> tuple[pd.DataFrame, str]:
    """(one row per recipe, winner first; why the winner won, "" for the seeds' rule).

    Over seeds the winner has the best mean val (:func:`recipe_summary`). Over cross-validation
    folds (``--cv``) it is chosen on the pooled out-of-fold predictions by ``--choose``
    (:mod:`tl.core.cv`), and the rows gain ``cv_<metric>``, its SE, the paired difference to the
    best, and the measured cost the ``one-se`` rule weighs."""
    metric, mode = str(exp.meta["metric"]), str(exp.meta["mode"])
    recipes = recipe_summary(runs, rank_column(metric), mode)
    if not cv.is_cv(runs) or not len(recipes):
        return recipes, ""
    plan = cv_plan(exp.meta)
    k = int(plan.get("k") or runs[FOLD_KEY].nunique())
    sizes = dataset_record(exp.meta).get("split_sizes") or {}
    n_pooled = int(plan.get("n_pooled") or (sizes.get("train", 0) + sizes.get("val", 0)))
    dirs = dict(zip(exp.trials["trial"], exp.trials["trial_dir"]))
    tested = tested_mask(runs)
    oofs = {int(r): cv.out_of_fold(runs, dirs, int(r), tested) for r in recipes[RECIPE_KEY]}
    summary = cv.cv_summary(oofs, n_pooled, k, metric, mode, dataset_record(exp.meta).get("task"),
                            positive_index(exp.meta), seed=seed)
    costs = cv.recipe_costs(runs, exp.frame)
    winner, why = cv.choose(summary, costs, metric, mode, str(plan.get("choose") or cv.DEFAULT_CHOICE))
    column = cv.cv_column(metric)
    merged = recipes.drop(columns="winner").merge(summary, on=RECIPE_KEY).merge(costs, on=RECIPE_KEY, how="left")
    sign = 1 if mode == "max" else -1
    merged = merged.assign(_first=merged[RECIPE_KEY] != winner, _key=-sign * merged[column].fillna(-sign * np.inf))
    merged = merged.sort_values(["_first", "_key", RECIPE_KEY]).drop(columns=["_first", "_key"]).reset_index(drop=True)
    merged["seeds"] = [", ".join(sorted(set(str(s).split(", ")), key=int)) for s in merged["seeds"]]  # one per fold
    merged["winner"] = [i == 0 and winner is not None for i in range(len(merged))]
    return merged, why


def cv_plan(meta: dict) -> dict:
    """The ``--cv`` record of ``tl_search.json``'s finalist plan ({} when the stage ran over seeds)."""
    plan = meta.get("finalists") if isinstance(meta.get("finalists"), dict) else {}
    return plan.get("cv") if isinstance(plan.get("cv"), dict) else {}


def ensemble_figures(pred: Predictions, *, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                     positive: int = 1, task: str | None = None) -> dict:
    """Return each test statistic of ``pred`` with its percentile bootstrap interval.

    Keys ``test_acc``, ``test_acc_low``, ``test_acc_high``, likewise ``test_auc`` and, for two
    classes, ``test_sensitivity`` and ``test_specificity``; for an ordinal ``task`` also ``test_qwk``
    and ``test_mae`` (grades); ``n`` the test images.
    """
    out: dict = {"n": len(pred.labels)}
    ordinal = ORDINAL_TEST_METRICS if task == "ordinal" and not pred.multilabel else ()
    for name in (*ENSEMBLE_STATS, *ordinal):
        if name in BINARY_TEST_METRICS and (pred.probs.shape[1] != 2 or pred.multilabel):
            continue
        def stat(idx: np.ndarray, name: str = name) -> float:
            probs, labels = pred.probs[idx], pred.labels[idx]
            if name == TEST_ACC:  # what split_metrics reports, without its other metrics per resample
                return label_accuracy(probs, labels)
            if name == TEST_AUC:
                return task_auc(probs, labels, positive)
            return split_metrics(probs, labels, "test", "ordinal" if name in ordinal else None, positive)[name]
        ci = bootstrap_interval(stat, len(pred.labels), n_resamples=n_resamples, seed=seed)
        out.update({name: ci.value, f"{name}_low": ci.low, f"{name}_high": ci.high})
    return out


def winner_members(runs: pd.DataFrame, winner: int, predictions: dict[str, Predictions]) -> tuple[str, ...]:
    """The winning recipe's seed trials that ran all their epochs and saved test predictions."""
    mine = runs[(runs[RECIPE_KEY] == winner) & tested_mask(runs)]
    return tuple(t for t in mine["trial"] if t in predictions)


def _winner_ensemble(runs: pd.DataFrame, winner: int, predictions: dict[str, Predictions], *,
                     n_resamples: int, seed: int, positive: int) -> tuple[pd.DataFrame, list[str], Predictions | None, tuple]:
    """(figures row, notes, the ensemble's predictions, its member trials)."""
    members = winner_members(runs, winner, predictions)
    try:
        pred = mean_predictions([predictions[t] for t in members], "winner's seed ensemble")
    except TLError as exc:
        return pd.DataFrame(), [str(exc)], None, ()
    row = {RECIPE_KEY: winner, "n_seeds": len(members), "test_fingerprint": pred.fingerprint,
           **ensemble_figures(pred, n_resamples=n_resamples, seed=seed, positive=positive)}
    return pd.DataFrame([row]), [], pred, members


def protocol_text(meta: dict, runs: pd.DataFrame, metric: str, mode: str) -> str:
    """Return the selection protocol in one sentence, from ``tl_search.json``'s ``finalists`` record."""
    plan = meta.get("finalists") if isinstance(meta.get("finalists"), dict) else {}
    if cv_plan(meta):
        return _cv_protocol(plan, runs, metric)
    k = plan.get("k", runs[RECIPE_KEY].nunique())
    seeds = plan.get("seeds") or sorted(runs["seed"].dropna().astype(int).unique())
    tested = plan.get("candidates")
    pool = f"the {k} best of {tested} tested search trials" if tested is not None \
        else f"the {k} best tested search trials"
    return (f"Finalists: {pool} by the rule of choice ({metric}, validation only) were re-trained for their full "
            f"epochs without early stopping, with seeds {', '.join(map(str, seeds))} (none the search used); "
            f"the winner is {recipe_rule_text(metric, mode)}, and test figures never select.")


def _cv_protocol(plan: dict, runs: pd.DataFrame, metric: str) -> str:
    folds = plan["cv"]
    k, tested = plan.get("k", runs[RECIPE_KEY].nunique()), plan.get("candidates")
    pool = f"the {k} best of {tested} tested search trials" if tested is not None else f"the {k} best tested search trials"
    seeds = plan.get("seeds") or sorted(runs["seed"].dropna().astype(int).unique())
    by = "by label and patient" if folds.get("grouped") else "by label"
    rule = ("the best" if folds.get("choose", cv.DEFAULT_CHOICE) == "best" else
            "among recipes within one standard error of the best, the cheapest to run (seconds per epoch, then "
            "parameters)")
    return (f"Finalists: {pool} by the rule of choice ({metric}, validation only) were cross-validated: each trained "
            f"for its full epochs on {folds['k']} folds of train + val ({folds.get('n_pooled', '?')} images, stratified "
            f"{by}, seed {folds.get('seed', 0)}), with seed(s) {', '.join(map(str, seeds))}; each recipe is ranked on its "
            f"pooled out-of-fold {metric.removeprefix('val_')} (standard error by bootstrap over "
            f"{'patients' if folds.get('grouped') else 'images'}), the winner is {rule}, and the recommended model is "
            f"its {folds['k']} fold models as an ensemble; test figures never select.")


def build_finalists(exp: Experiment, *, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Finalists:
    """Compute the finalist stage of ``exp`` (its finalist part, see :func:`split_stages`)."""
    metric, mode = str(exp.meta["metric"]), str(exp.meta["mode"])
    notes = []
    if exp.trials["experiment"].nunique() > 1:
        first = exp.trials["experiment"].iloc[0]
        notes.append(f"finalists of several experiments: showing {first}'s")
        exp = exp._replace(trials=exp.trials[exp.trials["experiment"] == first].reset_index(drop=True))
    runs = finalist_runs(exp)
    recipes, why = stage_recipes(exp, runs, seed=seed)  # winner first
    config = runs.drop_duplicates(RECIPE_KEY)[[c for c in (RECIPE_KEY, SOURCE_KEY, *RECIPE_COLUMNS) if c in runs]]
    recipes = recipes.merge(config, on=RECIPE_KEY, how="left")
    recipes = recipes[[RECIPE_KEY, *[c for c in config.columns if c != RECIPE_KEY],
                       *[c for c in recipes.columns if c not in config.columns]]]
    planned = runs[RECIPE_KEY].value_counts()
    unit = "fold trials" if cv.is_cv(runs) else "seeds"
    notes += [f"recipe {r}: {n} of {planned[r]} {unit} ran all their epochs"
              for r, n in zip(recipes[RECIPE_KEY], recipes["n_seeds"]) if n < planned[r]]
    ensemble, pred, members = pd.DataFrame(), None, ()
    if len(recipes) and recipes["winner"].iloc[0]:
        ensemble, more, pred, members = _winner_ensemble(runs, int(recipes[RECIPE_KEY].iloc[0]), exp.predictions,
                                                         n_resamples=n_resamples, seed=seed,
                                                         positive=positive_index(exp.meta))
        notes += more
    return Finalists(runs, recipes, ensemble, protocol_text(exp.meta, runs, metric, mode), metric, notes,
                     pred, members, why)


def _mean_std(mean: float, std: float, n: int, over: str = "seed") -> str:
    if pd.isna(mean):
        return "-"
    spread = f" ± {std:.4f}" if pd.notna(std) else f" (one {over})"
    return f"{mean:.4f}{spread} over {n} {over}{'' if n == 1 else 's'}"


def _over_seeds(recipe: pd.Series, figure: str, over: str = "seed") -> str:
    """``figure``'s mean ± std over a recipe's seeds, or its folds' models under ``--cv``
    (``recipe_summary``'s ``<figure>_mean``/``_std``)."""
    return _mean_std(recipe[f"{figure}_mean"], recipe[f"{figure}_std"], recipe["n_seeds"], over)


def _interval(row: pd.Series, name: str) -> str:
    return f"{row[name]:.4f} [{row[name + '_low']:.4f}, {row[name + '_high']:.4f}]"


def finalist_lines(fin: Finalists) -> list[str]:
    """Return the finalist stage as console lines (indented ones belong to the line above).

    One line per recipe (val mean ± std), the winner with its test mean ± std over seeds, and
    the seed ensemble's test figures with their bootstrap intervals.
    """
    lines = []
    column = cv.cv_column(fin.metric)
    folds = column in fin.recipes.columns
    for _, r in fin.recipes.iterrows():
        what = " ".join(str(r[c]) for c in ("backbone", "weights", "freeze") if c in r and pd.notna(r[c]))
        lr = f" lr={r['lr']:.3g}" if "lr" in r and pd.notna(r["lr"]) else ""
        figure = _out_of_fold(r, column) if folds else f"{fin.metric} {_over_seeds(r, 'val')}"
        lines.append(f"  recipe {r[RECIPE_KEY]} (search trial {r.get(SOURCE_KEY, '?')}: {what}{lr}): {figure}")
    if not len(fin.recipes) or not fin.recipes["winner"].iloc[0]:
        return [*lines, "finalist winner: none (no finalist ran all its epochs)"]
    w = fin.recipes.iloc[0]
    why = fin.chosen_by or f"best mean {fin.metric}"
    over = "fold" if folds else "seed"
    # AUC too: for multilabel it is the mean AUC over findings, the figure that says something there
    lines.append(f"finalist winner: recipe {w[RECIPE_KEY]} ({why}); test acc "
                 f"{_over_seeds(w, TEST_ACC, over)}; test AUC {_over_seeds(w, TEST_AUC, over)}")
    if len(fin.ensemble):
        e = fin.ensemble.iloc[0]
        figures = [f"{SHORT_NAMES[name]} {_interval(e, name)}" for name in ENSEMBLE_STATS
                   if name in e and pd.notna(e[name])]
        lines.append(f"  {over} ensemble (mean probabilities of {e['n_seeds']} {over} models, {e['n']} test images, "
                     f"{int(CI_LEVEL * 100)}% bootstrap CI): " + ", ".join(figures))
    return lines


def _out_of_fold(r: pd.Series, column: str) -> str:
    """A cross-validated recipe's figure: out-of-fold value ± SE, coverage, and its distance to the best."""
    if pd.isna(r[column]):
        return f"out-of-fold {column}: none ({int(r['cv_folds'])} folds ran)"
    se = f" ± {r[column + '_se']:.4f} SE" if pd.notna(r[column + "_se"]) else ""
    text = f"out-of-fold {column} {r[column]:.4f}{se} ({int(r['cv_images']):,} images, {int(r['cv_folds'])} folds"
    text += ")" if r["cv_complete"] else ", not all folds ran: not eligible)"
    if pd.notna(r["diff_to_best"]) and r["diff_to_best"] != 0:
        text += f"; {r['diff_to_best']:+.4f} [{r['diff_low']:+.4f}, {r['diff_high']:+.4f}] vs the best"
    return text


def winner_recipe(exp: Experiment) -> int | None:
    """The finalist stage's winning recipe id (None if no finalist ran all its epochs), without
    computing the seed ensemble's bootstrap intervals as :func:`build_finalists` does."""
    recipes, _ = stage_recipes(exp, finalist_runs(exp))
    return int(recipes[RECIPE_KEY].iloc[0]) if len(recipes) and recipes["winner"].iloc[0] else None
