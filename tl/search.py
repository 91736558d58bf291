"""``python -m tl.search SPACE.py``: a Ray Tune search (Optuna sampling + ASHA) over a space file.

Order of work: load and validate the space, resolve the dataset and every weights version on the
driver (preflight), start or join Ray, share data and weights through the object store, run the
Tuner, print the best trial; with ``--finalists``, re-train the top recipes over seeds
(``tl.finalist_stage``). Bad input stops it before Ray starts, with one line.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from tl.audit import AUDIT_FILE, audit_lines, audit_splits, save_pairs
from tl.data import load_dataset, resolve_dataset_path
from tl.errors import TLError
from tl.finalist_stage import run_finalist_stage
from tl.finalists import parse_count
from tl.space import SAMPLERS, SearchSpace, SpaceSampler, apply_overrides, grid_configs, load_space, optuna_points
from tl.trainable import train_transfer
from tl.weights import preflight

SEARCH_FILE = "tl_search.json"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl.search", description=__doc__.splitlines()[0])
    p.add_argument("space", help="search-space file (plain Python constants), e.g. search_spaces/xray.py")
    g = p.add_argument_group("budget")
    g.add_argument("--num-samples", type=int, help="trials (default: the file's NUM_SAMPLES)")
    g.add_argument("--max-epochs", type=int, help="ASHA max_t and cap on each trial's epochs")
    g.add_argument("--grace-period", type=int, help="ASHA grace period in epochs")
    g.add_argument("--reduction-factor", type=int, help="ASHA reduction factor")
    g.add_argument("--time-budget-s", type=float, help="stop the whole search after this many seconds (running trials end unfinished)")
    g.add_argument("--sampler", choices=list(SAMPLERS), help="Optuna sampler, or grid: every combination once")
    g.add_argument("--seed", type=int, help="seed of the sampler and of every trial (default 0; a PARAMS seed "
                                            "list in the file repeats each recipe per seed instead)")
    g = p.add_argument_group("data and weights")
    g.add_argument("--dataset", help="MedMNIST name, .npz file or ImageFolder root (overrides the file)")
    g.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR"), help="where named datasets live (env TL_DATA_DIR)")
    g.add_argument("--offline", action="store_true", help="never download; drop (backbone, weights) pairs that are not cached")
    g.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    g.add_argument("--groups", metavar="REGEX", help="patient (group) id: first capture group of REGEX in each file's "
                                                     "path relative to the dataset root (npz: {split}_names); carved "
                                                     "splits become disjoint by group (overrides the file's GROUPS)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pin one parameter (repeatable)")
    g = p.add_argument_group("where it runs")
    g.add_argument("--storage", default="./results", help="results root: local path, NFS path or cloud URI")
    g.add_argument("--name", help="experiment name (default: SPACE-TIMESTAMP)")
    g.add_argument("--resume", action="store_true", help="continue the experiment --name after a crash or kill")
    g.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster to join (env RAY_ADDRESS); local Ray otherwise")
    g.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (torch threads follow)")
    g.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share one GPU")
    _add_finalist_args(p)
    return p


def _add_finalist_args(p: argparse.ArgumentParser) -> None:
    # Strings, checked by tl.finalists.parse_count: bad values get one error: line, like every other input.
    g = p.add_argument_group("finalists over seeds")
    g.add_argument("--finalists", metavar="K", help="after the search, re-train the top K tested recipes for their "
                                                    "full epochs, no early stopping (overrides the file's FINALISTS)")
    g.add_argument("--finalist-seeds", metavar="S", help="seeds per finalist, none the search used "
                                                         "(default: the file's FINALIST_SEEDS, else 3)")


def _with_finalist_args(space: SearchSpace, args: argparse.Namespace) -> SearchSpace:
    """Apply --finalists / --finalist-seeds over the file's FINALISTS / FINALIST_SEEDS."""
    if args.finalists is not None:
        space.finalists = parse_count("--finalists", args.finalists)
    if args.finalist_seeds is not None:
        space.finalist_seeds = parse_count("--finalist-seeds", args.finalist_seeds)
    return space


def _space_from_args(args: argparse.Namespace) -> SearchSpace:
    space = load_space(args.space)
    pins = list(args.set)
    if args.dataset:
        space.dataset = args.dataset
    if args.groups is not None:
        space.groups = args.groups
    for attr in ("num_samples", "max_epochs", "grace_period", "reduction_factor", "sampler",
                 "cpus_per_trial", "gpus_per_trial"):
        if getattr(args, attr) is not None:
            setattr(space, attr, getattr(args, attr))
    # Trials take --seed too, unless the file lists seeds or --set seed=... pins them apart from the sampler's.
    pinned = any(pin.startswith("seed=") for pin in pins)
    if not pinned and (args.seed is not None or "seed" not in space.params):
        pins.append(f"seed={args.seed or 0}")
    return _with_finalist_args(apply_overrides(space, pins), args)


def _drop_missing(space: SearchSpace, missing: dict, offline: bool) -> None:
    """Fail listing every missing pair, or with --offline drop them from the space."""
    if not missing:
        return
    lines = "; ".join(f"{b} {w}: {why}" for (b, w), why in missing.items())
    if not offline:
        raise TLError(f"weights unavailable for {len(missing)} pair(s): {lines}. Fix: connect to the "
                      "internet once to fill the cache, remove them from BACKBONES, or pass --offline to drop them")
    for b, w in missing:
        space.backbones[b] = [x for x in space.backbones[b] if x != w]
    space.backbones = {b: ws for b, ws in space.backbones.items() if ws}
    print(f"[tl.search] --offline: dropped {', '.join(f'{b}:{w}' for b, w in missing)}")
    if not space.backbones:
        raise TLError("--offline left no (backbone, weights) pair to search")


def _check_storage(storage: str) -> str:
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".tl_write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TLError(f"--storage {storage} is not writable: {exc.strerror or exc}") from None
    return str(path)


def _probe_address(address: str) -> None:
    """Fail in seconds on a dead ``host:port`` (ray.init would wait minutes for the GCS)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms: Ray resolves them and fails fast itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise TLError(f"cannot reach Ray at --address {address}: {exc.strerror or exc}") from None


def _init_ray(address: str | None) -> None:
    import ray

    if address:
        _probe_address(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(include_dashboard=False, dashboard_host="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TLError(f"cannot reach Ray at --address {address}: {str(exc).splitlines()[0]}") from None


def _make_searcher(space: SearchSpace, seed: int):
    import optuna
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    if space.sampler == "grid":  # Ray's own generator: each listed config replaces one sample
        return BasicVariantGenerator(points_to_evaluate=grid_configs(space))

    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, space.num_samples // 3))),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
                "qmc": lambda: optuna.samplers.QMCSampler(seed=seed)}
    return OptunaSearch(SpaceSampler(space), metric=space.metric, mode=space.mode, sampler=samplers[space.sampler](),
                        points_to_evaluate=optuna_points(space) or None)


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default embeds every constant of the config)."""
    c = trial.config
    return f"{trial.trial_id}_{str(c.get('backbone', '')).replace('/', '-')}_{c.get('weights', '')}_{c.get('freeze', '')}"


def run_search(args: argparse.Namespace) -> int:
    space = _space_from_args(args)
    print(f"[tl.search] space {args.space}: {json.dumps(space.echo(), default=str)}")
    storage = _check_storage(args.storage)
    name = args.name or f"{Path(args.space).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    exp_dir = Path(storage) / name if "://" not in storage else None
    if args.resume and exp_dir is not None and not (exp_dir / SEARCH_FILE).exists():
        raise TLError(f"--resume: no experiment {name!r} under {storage}")
    if not args.resume and exp_dir is not None and exp_dir.exists():
        raise TLError(f"experiment {exp_dir} exists; pass --resume to continue it or choose another --name")
    source = resolve_dataset_path(space.dataset, args.data_dir, args.offline)
    # An .npz is stored at one size (trials resize batches): load it once, share it for every size.
    sizes = space.image_sizes()[:1] if source.is_file() else space.image_sizes()
    loaded = {size: load_dataset(space.dataset, size, args.data_dir, offline=args.offline, seed=args.seed or 0,
                                 skip_bad=args.skip_bad_images, groups=space.groups) for size in sizes}
    datasets = {size: loaded.get(size, loaded[sizes[0]]) for size in space.image_sizes()}
    for arrays in loaded.values():  # computed once here, it travels to the trials with the arrays
        arrays.test_fingerprint  # noqa: B018
    first = next(iter(datasets.values()))
    batch_sizes = space.params.get("batch_size", [space.fixed.get("batch_size", 64)])
    if isinstance(batch_sizes, list) and min(batch_sizes) > len(first.labels["train"]):
        raise TLError(f"batch_size {min(batch_sizes)} is larger than the training set ({len(first.labels['train'])} images)")
    audit, audit_pairs = audit_splits(first.images, names=first.names, groups=first.split_record.get("groups"))
    for line in audit_lines(audit):
        print(f"[tl.search] {line}")
    weights, missing = preflight(space.weight_pairs(), args.offline)
    _drop_missing(space, missing, args.offline)
    if space.sampler == "grid":
        space.num_samples = len(grid_configs(space))
        print(f"[tl.search] grid: {space.num_samples} trials, every combination once")
    space.fixed.update({"dataset": space.dataset, "data_dir": args.data_dir})
    if space.groups:  # a trial that decodes for itself carves the same grouped split
        space.fixed["groups"] = space.groups

    _init_ray(args.address)
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    weight_refs = {f"{b}|{w}": ray.put(sd) for (b, w), sd in weights.items() if sd is not None}
    trainable = tune.with_resources(tune.with_parameters(train_transfer, datasets=datasets, weight_refs=weight_refs),
                                    {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial})
    if args.resume:
        tuner = tune.Tuner.restore(str(Path(storage) / name) if exp_dir else f"{storage}/{name}", trainable,
                                   resume_unfinished=True, resume_errored=True)
    else:
        if exp_dir is not None:
            exp_dir.mkdir(parents=True)
            (exp_dir / SEARCH_FILE).write_text(json.dumps({
                "space_file": str(args.space), "space": space.echo(), "args": vars(args),
                "metric": space.metric, "mode": space.mode, "max_epochs": space.max_epochs,
                "num_samples": space.num_samples, "dataset": first.describe(), "split_audit": audit,
                "started": dt.datetime.now().isoformat(timespec="seconds")}, indent=1, default=str))
            save_pairs(exp_dir / AUDIT_FILE, audit_pairs)  # thumbnails of duplicate pairs, for the report
        # Grid points replace samples of param_space, so it must hold every key they set.
        param_space = grid_configs(space)[0] if space.sampler == "grid" else None
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=_make_searcher(space, args.seed or 0),
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=space.max_epochs,
                                        grace_period=space.grace_period, reduction_factor=space.reduction_factor),
                metric=space.metric, mode=space.mode, num_samples=space.num_samples,
                time_budget_s=args.time_budget_s,
                # A finished trial's process (torch and the project already imported) runs the next one.
                reuse_actors=True,
                trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=1,
                sync_config=tune.SyncConfig(sync_artifacts=True),  # test_predictions.npz beside the trial
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=space.metric,
                                                        checkpoint_score_order=space.mode),
                failure_config=tune.FailureConfig(max_failures=space.max_failures)))
    results = tuner.fit()
    status = _print_outcome(results, space, f"{storage}/{name}")
    if status == 0 and space.finalists:
        status = run_finalist_stage(trainable, results, ranked_results(results, space.metric, space.mode), space,
                                    f"{storage}/{name}", exp_dir, SEARCH_FILE)
    return status


def chosen_trial(results, metric: str, mode: str):
    """Return (the Result a user walks away with, its best ``metric``), or (None, None).

    The rule is :func:`tl.choice.rank_trials`, the one ``analysis.summarize`` ranks Table 1 and
    the chosen model by; errored trials and trials that never reported ``metric`` are left out.
    """
    ranked = ranked_results(results, metric, mode)
    return (ranked[0][1], ranked[0][2]) if ranked else (None, None)


def ranked_results(results, metric: str, mode: str) -> list[tuple[str, object, float, bool]]:
    """Return (trial id, Result, best ``metric``, tested) per trial, best first by :func:`tl.choice.rank_trials`.

    Errored trials and trials that never reported ``metric`` are left out; the finalists are
    the top tested ones.
    """
    import numpy as np
    import pandas as pd

    from tl.choice import rank_trials

    rows, by_trial = [], {}
    for i, result in enumerate(results):
        frame = result.metrics_dataframe
        if result.error or frame is None or metric not in frame or frame[metric].dropna().empty:
            continue
        trial = str(frame["trial_id"].dropna().iloc[-1]) if "trial_id" in frame else f"{i:08d}"
        test = frame["test_acc"].dropna() if "test_acc" in frame else pd.Series(dtype=float)
        rows.append({"trial": trial, "best": frame[metric].max() if mode == "max" else frame[metric].min(),
                     "best_val_loss": frame["val_loss"].min() if "val_loss" in frame else np.nan,
                     "test_acc": test.iloc[-1] if len(test) else np.nan})
        by_trial[trial] = result
    if not rows:
        return []
    ranked = rank_trials(pd.DataFrame(rows), "best", mode)
    return [(t, by_trial[t], float(b), bool(pd.notna(a))) for t, b, a in zip(ranked["trial"], ranked["best"], ranked["test_acc"])]


def _print_outcome(results, space: SearchSpace, where: str) -> int:
    n_err = len(results.errors)
    print(f"\n[tl.search] {len(results)} trials, {n_err} errored. Experiment folder: {where}")
    best, best_value = chosen_trial(results, space.metric, space.mode)
    if best is None:
        what = "every trial errored" if n_err == len(results) else f"no trial reported {space.metric}"
        print(f"error: {what}; see error.txt in the trial folders", file=sys.stderr)
        return 1
    shown = {k: best.config[k] for k in ("backbone", "weights", "freeze", "lr", "batch_size", "weight_decay",
                                         "epochs", "image_size") if k in best.config}
    print(f"[tl.search] best trial by {space.metric} (val only): {json.dumps(shown, default=str)}")
    m = best.metrics or {}
    figures = [f"best {space.metric}={best_value:.4f}"]
    figures += [f"{k}={m[k]:.4f}" for k in ("test_acc", "test_auc", "test_sensitivity", "test_specificity") if k in m]
    print("  " + "  ".join(figures) + ("" if "test_acc" in m else "  (stopped early: not tested)"))
    print(f"  trial folder: {best.path}")
    print(f"[tl.search] next: python -m analysis.summarize {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return run_search(args)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
