"""The finalist stage on Ray: after the search, re-train its top K tested recipes with S new seeds.

It runs through the search's own trainable, as a second Tuner named ``finalists`` inside the
experiment folder: Ray's generator gets the K x S configs as points, and the FIFO scheduler lets
every trial run all its epochs. ``--resume`` restores that Tuner when it exists (finished trials
kept, unfinished ones continued from their checkpoints), so no finalist runs twice.
"""
from __future__ import annotations

import sys
from pathlib import Path

from tl.core.finalists import finalist_configs, finalist_seeds
from tl.core.results import ERROR_FILE, FINALIST_DIR, RECIPE_KEY, update_search_meta
from tl.search.space import points_param_space

PLAN_KEY = "finalists"  # the plan's record in tl_search.json


def plan_finalists(results, ranked: list, k: int, n_seeds: int) -> tuple[list[dict], dict, list[str]]:
    """Return (trial configs, the plan to record, lines to print) for the top ``k`` tested trials.

    Args:
        results: every search Result (their seeds are the ones finalists must not reuse).
        ranked: ``tl.search.ranking.ranked_results``: (trial id, Result, best val, tested), best first.
        k, n_seeds: recipes and seeds per recipe asked for; fewer recipes when fewer were tested.
    """
    tested = [(trial, result, best) for trial, result, best, was_tested in ranked if was_tested]
    chosen = tested[:k]
    lines = []
    if len(chosen) < k:
        lines.append(f"--finalists {k}: only {len(tested)} search trial(s) ran all their epochs and were tested; "
                     f"re-training {len(chosen)}")
    seeds = finalist_seeds([r.config.get("seed", 0) for r in results if r.config], n_seeds)
    configs = finalist_configs([r.config for _, r, _ in chosen], [t for t, _, _ in chosen], seeds)
    plan = {"k": len(chosen), "asked": k, "candidates": len(tested), "seeds": seeds,
            "search_seeds": sorted({int(r.config.get("seed", 0)) for r in results if r.config}),
            "recipes": [{RECIPE_KEY: i, "source_trial": t, "best_val": b} for i, (t, _, b) in enumerate(chosen, 1)]}
    return configs, plan, lines


def finalist_dirname(trial) -> str:
    """Trial folders name their recipe and seed."""
    return f"{trial.trial_id}_finalist_r{trial.config.get(RECIPE_KEY)}_s{trial.config.get('seed')}"


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
                       verbose: bool = False, trackers: list | None = None) -> int:
    """Run (or continue) the finalist stage and print its outcome; return the exit status.

    Args:
        trainable: the search's trainable, resources and shared data included.
        results, ranked: the search's Results and ``tl.search.ranking.ranked_results`` of them.
        where: the experiment folder (path or URI); the stage's Tuner lives in ``where/finalists``.
        exp_dir: the same as a local Path, None for cloud storage.
        verbose: Ray's full output instead of the status lines (``--verbose``).
        trackers: the search's logger callbacks (MLflow), so finalist trials are logged too.
    """
    trackers = trackers or []
    from ray import tune

    path = f"{where}/{FINALIST_DIR}"
    if tune.Tuner.can_restore(path):
        print(f"[tl.search] finalists: continuing the stage in {path} (finished trials are kept)")
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        from tl.search.console import set_restored_options

        set_restored_options(tuner, _console(space, space.finalists * space.finalist_seeds, verbose, trackers))
    else:
        configs, plan, lines = plan_finalists(results, ranked, space.finalists, space.finalist_seeds)
        for line in lines:
            print(f"[tl.search] {line}")
        if not configs:
            print("[tl.search] finalists: no search trial was tested, so there is nothing to re-train")
            return 0
        if exp_dir is not None:  # the report's protocol sentence reads it
            update_search_meta(exp_dir, PLAN_KEY, plan)
        print(f"[tl.search] finalists: {plan['k']} recipe(s) x seeds {plan['seeds']}, full epochs, no early stopping")
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
