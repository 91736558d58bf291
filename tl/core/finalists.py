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
from tl.core.results.files import (RECIPE_KEY, SOURCE_KEY, STAGE, STAGE_KEY, Predictions, mean_predictions,
                                   positive_index)
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


def finalist_configs(configs: list[dict], source_trials: list[str], seeds: list[int]) -> list[dict]:
    """Return one trial config per (recipe, seed), recipe ids 1..K in the order given (search rank).

    Each is the search trial's config with a new ``seed``, marked ``stage="finalist"`` and carrying
    its ``recipe_id`` and ``source_trial``; the optimizer's bookkeeping (``weights_for_*``) is dropped.
    """
    out = []
    for recipe_id, (config, source) in enumerate(zip(configs, source_trials), start=1):
        plain = {k: v for k, v in config.items() if not k.startswith("weights_for_")}
        for seed in seeds:
            out.append({**plain, "seed": int(seed), STAGE_KEY: STAGE, RECIPE_KEY: recipe_id,
                        SOURCE_KEY: str(source)})
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
    config = [c for c in (RECIPE_KEY, "seed", SOURCE_KEY, *RECIPE_COLUMNS) if c in exp.trials.columns]
    runs = exp.trials[["trial", *config]].merge(table[[c for c in keep if c in table.columns]], on="trial")
    runs[RECIPE_KEY] = pd.to_numeric(runs[RECIPE_KEY], errors="coerce").astype(int)
    return runs.sort_values([RECIPE_KEY, "seed"], kind="mergesort").reset_index(drop=True)


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
    k = plan.get("k", runs[RECIPE_KEY].nunique())
    seeds = plan.get("seeds") or sorted(runs["seed"].dropna().astype(int).unique())
    tested = plan.get("candidates")
    pool = f"the {k} best of {tested} tested search trials" if tested is not None \
        else f"the {k} best tested search trials"
    return (f"Finalists: {pool} by the rule of choice ({metric}, validation only) were re-trained for their full "
            f"epochs without early stopping, with seeds {', '.join(map(str, seeds))} (none the search used); "
            f"the winner is {recipe_rule_text(metric, mode)}, and test figures never select.")


def build_finalists(exp: Experiment, *, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Finalists:
    """Compute the finalist stage of ``exp`` (its finalist part, see :func:`split_stages`)."""
    metric, mode = str(exp.meta["metric"]), str(exp.meta["mode"])
    notes = []
    if exp.trials["experiment"].nunique() > 1:
        first = exp.trials["experiment"].iloc[0]
        notes.append(f"finalists of several experiments: showing {first}'s")
        exp = exp._replace(trials=exp.trials[exp.trials["experiment"] == first].reset_index(drop=True))
    runs = finalist_runs(exp)
    recipes = recipe_summary(runs, rank_column(metric), mode)  # winner first
    config = runs.drop_duplicates(RECIPE_KEY)[[c for c in (RECIPE_KEY, SOURCE_KEY, *RECIPE_COLUMNS) if c in runs]]
    recipes = recipes.merge(config, on=RECIPE_KEY, how="left")
    recipes = recipes[[RECIPE_KEY, *[c for c in config.columns if c != RECIPE_KEY],
                       *[c for c in recipes.columns if c not in config.columns]]]
    planned = runs[RECIPE_KEY].value_counts()
    notes += [f"recipe {r}: {n} of {planned[r]} seeds ran all their epochs"
              for r, n in zip(recipes[RECIPE_KEY], recipes["n_seeds"]) if n < planned[r]]
    ensemble, pred, members = pd.DataFrame(), None, ()
    if len(recipes) and recipes["winner"].iloc[0]:
        ensemble, more, pred, members = _winner_ensemble(runs, int(recipes[RECIPE_KEY].iloc[0]), exp.predictions,
                                                         n_resamples=n_resamples, seed=seed,
                                                         positive=positive_index(exp.meta))
        notes += more
    return Finalists(runs, recipes, ensemble, protocol_text(exp.meta, runs, metric, mode), metric, notes,
                     pred, members)


def _mean_std(mean: float, std: float, n: int) -> str:
    if pd.isna(mean):
        return "-"
    spread = f" ± {std:.4f}" if pd.notna(std) else " (one seed)"
    return f"{mean:.4f}{spread} over {n} seed{'' if n == 1 else 's'}"


def _over_seeds(recipe: pd.Series, figure: str) -> str:
    """``figure``'s mean ± std over a recipe's seeds (``recipe_summary``'s ``<figure>_mean``/``_std``)."""
    return _mean_std(recipe[f"{figure}_mean"], recipe[f"{figure}_std"], recipe["n_seeds"])


def _interval(row: pd.Series, name: str) -> str:
    return f"{row[name]:.4f} [{row[name + '_low']:.4f}, {row[name + '_high']:.4f}]"


def finalist_lines(fin: Finalists) -> list[str]:
    """Return the finalist stage as console lines (indented ones belong to the line above).

    One line per recipe (val mean ± std), the winner with its test mean ± std over seeds, and
    the seed ensemble's test figures with their bootstrap intervals.
    """
    lines = []
    for _, r in fin.recipes.iterrows():
        what = " ".join(str(r[c]) for c in ("backbone", "weights", "freeze") if c in r and pd.notna(r[c]))
        lr = f" lr={r['lr']:.3g}" if "lr" in r and pd.notna(r["lr"]) else ""
        lines.append(f"  recipe {r[RECIPE_KEY]} (search trial {r.get(SOURCE_KEY, '?')}: {what}{lr}): "
                     f"{fin.metric} {_over_seeds(r, 'val')}")
    if not len(fin.recipes) or not fin.recipes["winner"].iloc[0]:
        return [*lines, "finalist winner: none (no finalist ran all its epochs)"]
    w = fin.recipes.iloc[0]
    # AUC too: for multilabel it is the mean AUC over findings, the figure that says something there
    lines.append(f"finalist winner: recipe {w[RECIPE_KEY]} (best mean {fin.metric}); test acc "
                 f"{_over_seeds(w, TEST_ACC)}; test AUC {_over_seeds(w, TEST_AUC)}")
    if len(fin.ensemble):
        e = fin.ensemble.iloc[0]
        figures = [f"{SHORT_NAMES[name]} {_interval(e, name)}" for name in ENSEMBLE_STATS
                   if name in e and pd.notna(e[name])]
        lines.append(f"  seed ensemble (mean probabilities of {e['n_seeds']} seeds, {e['n']} test images, "
                     f"{int(CI_LEVEL * 100)}% bootstrap CI): " + ", ".join(figures))
    return lines


def winner_recipe(exp: Experiment) -> int | None:
    """The finalist stage's winning recipe id (None if no finalist ran all its epochs), without
    computing the seed ensemble's bootstrap intervals as :func:`build_finalists` does."""
    recipes = recipe_summary(finalist_runs(exp), rank_column(str(exp.meta["metric"])), str(exp.meta["mode"]))
    return int(recipes[RECIPE_KEY].iloc[0]) if len(recipes) and recipes["winner"].iloc[0] else None
