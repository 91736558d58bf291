"""The finalist stage on Ray: after the search, re-train its top K tested recipes with S new seeds.

It runs through the search's own trainable, as a second Tuner named ``finalists`` inside the
experiment folder: Ray's generator gets the K x S configs as points, and the FIFO scheduler lets
every trial run all its epochs. ``--resume`` restores that Tuner when it exists (finished trials
kept, unfinished ones continued from their checkpoints), so no finalist runs twice.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tl.core.finalists import finalist_configs, finalist_seeds
from tl.core.results import ERROR_FILE, FINALIST_DIR, RECIPE_KEY, update_search_meta
from tl.core.results.files import FOLD_KEY
from tl.data.folds import POOLED, assignment_for
from tl.search.space import points_param_space

PLAN_KEY = "finalists"  # the plan's record in tl_search.json
CV_FINALISTS = 3  # recipes --cv cross-validates when neither --finalists nor FINALISTS says


def plan_finalists(results, ranked: list, k: int, n_seeds: int,
                   folds: dict | None = None) -> tuple[list[dict], dict, list[str]]:
    """Return (trial configs, the plan to record, lines to print) for the top ``k`` tested trials.

    Args:
        results: every search Result (their seeds are the ones finalists must not reuse).
        ranked: ``tl.search.ranking.ranked_results``: (trial id, Result, best val, tested), best first.
        k, n_seeds: recipes and seeds per recipe (per fold) asked for; fewer recipes when fewer were tested.
        folds: ``--cv``: the folds' record (``k``, ``seed``, ``choose``, ...): one trial per recipe, fold and seed.
    """
    tested = [(trial, result, best) for trial, result, best, was_tested in ranked if was_tested]
    chosen = tested[:k]
    lines = []
    if len(chosen) < k:
        lines.append(f"--finalists {k}: only {len(tested)} search trial(s) ran all their epochs and were tested; "
                     f"re-training {len(chosen)}")
    seeds = finalist_seeds([r.config.get("seed", 0) for r in results if r.config], n_seeds)
    configs = finalist_configs([r.config for _, r, _ in chosen], [t for t, _, _ in chosen], seeds,
                               (folds["k"], folds["seed"]) if folds else None)
    plan = {"k": len(chosen), "asked": k, "candidates": len(tested), "seeds": seeds,
            "search_seeds": sorted({int(r.config.get("seed", 0)) for r in results if r.config}),
            "recipes": [{RECIPE_KEY: i, "source_trial": t, "best_val": b} for i, (t, _, b) in enumerate(chosen, 1)]}
    if folds:
        plan["cv"] = folds
    return configs, plan, lines


def fold_plan(arrays, k: int, seed: int, choose: str) -> dict:
    """The folds' record for ``tl_search.json``: what the trials will recompute (``tl.data.folds``)."""
    folds, note = assignment_for(arrays, k, seed)
    return {"k": k, "seed": seed, "choose": choose, "n_pooled": int(len(folds)),
            "fold_sizes": np.bincount(folds, minlength=k).tolist(),
            "grouped": all(s in arrays.groups for s in POOLED), "strata_note": note}


def cost_line(chosen_results: list, space, n_trials: int, share: float) -> str:
    """What the stage will cost, from the search's own measured seconds per epoch: trials, and an
    estimate of the wall time at the concurrency the machine allows (``share``: the fraction of the
    search's training images each finalist trains on; folds train on (K-1)/K of train + val)."""
    import ray

    per_epoch = [r.metrics_dataframe["epoch_time_s"].mean() for r in chosen_results
                 if r.metrics_dataframe is not None and "epoch_time_s" in r.metrics_dataframe]
    epochs = [int(r.config.get("epochs", space.max_epochs)) for r in chosen_results]
    if not per_epoch:
        return f"{n_trials} trials (no measured epoch time to estimate from)"
    per_trial = float(np.mean(per_epoch)) * float(np.mean(epochs)) * share
    cpus = ray.cluster_resources().get("CPU", 1)
    slots = max(1, int(cpus // max(space.cpus_per_trial, 1e-9)))
    if space.gpus_per_trial:
        slots = min(slots, max(1, int(ray.cluster_resources().get("GPU", 0) // space.gpus_per_trial)))
    minutes = per_trial * n_trials / min(slots, n_trials) / 60
    return (f"{n_trials} trials, about {per_trial:.0f} s each by the search's own seconds per epoch; about "
            f"{minutes:.1f} min with {min(slots, n_trials)} at a time")


def finalist_dirname(trial) -> str:
    """Trial folders name their recipe, fold (with --cv) and seed."""
    fold = trial.config.get(FOLD_KEY)
    return (f"{trial.trial_id}_finalist_r{trial.config.get(RECIPE_KEY)}"
            + (f"_f{fold}" if fold is not None else "") + f"_s{trial.config.get('seed')}")


def _console(space, n_trials: int, verbose: bool, trackers: list) -> dict:
    """The search's console for this stage too (a status line and one line per trial, or Ray's own),
    and its trackers (``--mlflow``: every finalist trial is a run too)."""
    from tl.search.console import LiveView, run_options

    return run_options(([] if verbose else [LiveView(space.metric, space.mode, n_trials)]) + trackers, verbose)


def _new_tuner(trainable, configs: list[dict], space, where: str, verbose: bool, trackers: list):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from tl.train.trainable import trial_run_options

    return tune.Tuner(
        trainable,
        param_space=points_param_space(configs),
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=configs), scheduler=FIFOScheduler(),
            metric=space.metric, mode=space.mode, num_samples=len(configs), reuse_actors=True,
            trial_dirname_creator=finalist_dirname),
        run_config=tune.RunConfig(
            name=FINALIST_DIR, storage_path=where, **_console(space, len(configs), verbose, trackers),
            **trial_run_options(space.metric, space.mode, space.max_failures)))


def run_finalist_stage(trainable, results, ranked: list, space, where: str, exp_dir: Path | None,
                       verbose: bool = False, trackers: list | None = None, arrays=None, data_seed: int = 0) -> int:
    """Run (or continue) the finalist stage and print its outcome; return the exit status.

    Args:
        trainable: the search's trainable, resources and shared data included.
        results, ranked: the search's Results and ``tl.search.ranking.ranked_results`` of them.
        where: the experiment folder (path or URI); the stage's Tuner lives in ``where/finalists``.
        exp_dir: the same as a local Path, None for cloud storage.
        verbose: Ray's full output instead of the status lines (``--verbose``).
        trackers: the search's logger callbacks (MLflow), so finalist trials are logged too.
        arrays, data_seed: the decoded dataset and the carve's seed, which ``--cv`` folds (the folds'
            seed is the carve's, so another --seed is another carve and other folds).
    """
    trackers = trackers or []
    from ray import tune

    path = f"{where}/{FINALIST_DIR}"
    if tune.Tuner.can_restore(path):
        print(f"[tl.search] finalists: continuing the stage in {path} (finished trials are kept)")
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        from tl.search.console import set_restored_options

        set_restored_options(tuner, _console(space, space.stage_trials(), verbose, trackers))
    else:
        folds = fold_plan(arrays, space.cv, data_seed, space.choose) if space.cv else None
        configs, plan, lines = plan_finalists(results, ranked, space.finalists, space.seeds_per_recipe(), folds)
        for line in lines:
            print(f"[tl.search] {line}")
        if not configs:
            print("[tl.search] finalists: no search trial was tested, so there is nothing to re-train")
            return 0
        if exp_dir is not None:  # the report's protocol sentence reads it
            update_search_meta(exp_dir, PLAN_KEY, plan)
        chosen = [r for _, r, _, tested in ranked if tested][:plan["k"]]
        if folds:
            n_train = len(arrays.labels["train"])
            cost = cost_line(chosen, space, len(configs), folds["n_pooled"] * (folds["k"] - 1) / folds["k"] / n_train)
            print(f"[tl.search] finalists: {plan['k']} recipe(s) x {folds['k']} folds of train + val "
                  f"({folds['n_pooled']:,} images, fold sizes {folds['fold_sizes']}) x seeds {plan['seeds']}, full "
                  f"epochs, no early stopping; choose {folds['choose']}: {cost}")
        else:
            print(f"[tl.search] finalists: {plan['k']} recipe(s) x seeds {plan['seeds']}, full epochs, no early "
                  f"stopping: {cost_line(chosen, space, len(configs), 1.0)}")
        tuner = _new_tuner(trainable, configs, space, where, verbose, trackers)
    done = tuner.fit()
    print(f"\n[tl.search] finalists: {len(done)} trials, {len(done.errors)} errored. Folder: {path}")
    if len(done.errors) == len(done):
        print(f"error: every finalist trial errored; see {ERROR_FILE} in their folders", file=sys.stderr)
        return 1
    return print_finalists(exp_dir)


def print_finalists(exp_dir: Path | None) -> int:
    """Print the finalists as the report computes them (``tl.core.finalists``: one code path, they agree)."""
    if exp_dir is None:
        print("[tl.search] finalists: copy the folder down and run analysis.summarize for their figures")
        return 0
    from tl.core.errors import TLError
    from tl.core.finalists import build_finalists, finalist_lines
    from tl.core.results import load_experiments, split_stages

    try:
        _, stage = split_stages(load_experiments([exp_dir]))
    except TLError as exc:
        print(f"[tl.search] finalists: cannot read them back ({exc})")
        return 1
    if stage is None:
        print("[tl.search] finalists: no finalist trial folder found")
        return 1
    fin = build_finalists(stage)
    for line in finalist_lines(fin) + [f"note: {n}" for n in fin.notes]:
        print(line if line.startswith("  ") else f"[tl.search] {line}")
    return 0
