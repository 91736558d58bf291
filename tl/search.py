"""``python -m tl.search SPACE.py``: a Ray Tune search (Optuna sampling + ASHA) over a space file.

Order of work: load and validate the space, resolve every weights version and the dataset on the
driver (preflight), start or join Ray, decode the data (Ray tasks) and audit it, share data and
weights with the trials, run the Tuner, print the best trial; with ``--finalists``, re-train the top
recipes over seeds (``tl.finalist_stage``). Bad input stops it with one line and no experiment
folder: the space, weights and dataset path before Ray starts, the files' contents while decoding.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
from pathlib import Path

from tl.audit import audit_lines, audit_splits, save_pairs
from tl.console import (PREFIX, LiveView, dataset_summary, resume_command, run_options, set_restored_options,
                        space_summary)
from tl.core.errors import TLError
from tl.core.finalists import parse_count
from tl.core.results import AUDIT_FILE, SEARCH_FILE, write_search_meta
from tl.core.tasks import check_metric
from tl.data import load_dataset, resolve_dataset_path
from tl.data.load import check_labels
from tl.data.tabular import add_table_arguments, table_options_from_args
from tl.finalist_stage import run_finalist_stage
from tl.space import (SAMPLERS, SearchSpace, SpaceSampler, apply_overrides, grid_configs, load_space, optuna_points,
                      points_param_space)
from tl.trainable import train_transfer, trial_run_options
from tl.weights import preflight

DEFAULT_MLFLOW = "./mlruns"
# Files of the chosen trial logged to its MLflow run (what analysis.summarize needs to rebuild its row).
CHOSEN_ARTIFACTS = ("params.json", "result.json", "progress.csv", "test_predictions.npz")


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
    g.add_argument("--dataset", help="MedMNIST name, .npz file, ImageFolder root, or a .csv/.tsv label table "
                                     "(overrides the file)")
    g.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR"), help="where named datasets live (env TL_DATA_DIR)")
    g.add_argument("--offline", action="store_true", help="never download; drop (backbone, weights) pairs that are not cached")
    g.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    g.add_argument("--groups", metavar="REGEX", help="patient (group) id: first capture group of REGEX in each file's "
                                                     "path relative to the dataset root (npz: {split}_names); carved "
                                                     "splits become disjoint by group (overrides the file's GROUPS)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pin one parameter (repeatable)")
    add_table_arguments(p)
    g = p.add_argument_group("where it runs")
    g.add_argument("--storage", default="./results", help="results root: local path, NFS path or cloud URI")
    g.add_argument("--name", help="experiment name (default: SPACE-TIMESTAMP)")
    g.add_argument("--resume", action="store_true", help="continue the experiment --name after a crash or kill")
    g.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster to join (env RAY_ADDRESS); local Ray otherwise")
    g.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (torch threads follow)")
    g.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share one GPU")
    g.add_argument("--repeatable", action="store_true",
                   help="run one trial at a time, so ASHA and the sampler see results in a fixed order and the "
                        "same command repeats the same trials and choice (concurrent trials make both depend on "
                        "timing); give the trial all CPUs with --cpus-per-trial")
    g = p.add_argument_group("console and trackers")
    g.add_argument("--verbose", action="store_true", help="Ray's full output: per-trial config boxes, progress "
                                                          "tables, worker logs (default: a status line every 30 s)")
    g.add_argument("--mlflow", nargs="?", const=DEFAULT_MLFLOW, metavar="URI",
                   help=f"log every trial as an MLflow run (bare flag: a local store in {DEFAULT_MLFLOW}/); "
                        "needs pip install -e '.[mlflow]'")
    _add_finalist_args(p)
    return p


def _add_finalist_args(p: argparse.ArgumentParser) -> None:
    # Strings, checked by tl.core.finalists.parse_count: bad values get one error: line, like every other input.
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
    elif args.group_column is not None:  # a patient column on the command line beats the file's GROUPS regex
        space.groups = None
    for attr in ("num_samples", "max_epochs", "grace_period", "reduction_factor", "sampler",
                 "cpus_per_trial", "gpus_per_trial"):
        if getattr(args, attr) is not None:
            setattr(space, attr, getattr(args, attr))
    # Trials take --seed too, unless the file lists seeds or --set seed=... pins them apart from the sampler's.
    pinned = any(pin.startswith("seed=") for pin in pins)
    if not pinned and (args.seed is not None or "seed" not in space.params):
        pins.append(f"seed={args.seed or 0}")
    # The uncertain-label policy: --uncertain, else the file's UNCERTAIN, unless PARAMS searches over it.
    uncertain = args.uncertain or space.uncertain
    if uncertain and not any(pin.startswith("uncertain=") for pin in pins):
        if args.uncertain or "uncertain" not in space.params:
            pins.append(f"uncertain={uncertain}")
    space = _with_finalist_args(apply_overrides(space, pins), args)
    table = table_options_from_args(args, space.table_options())
    if table is not None:  # every trial (and tl.export) reads the table as the driver did
        space.fixed["table"] = table
    return space


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


def _quiet_ray() -> None:
    """Silence Ray's and Optuna's chatter: the token-auth notice, study creation, MLflow's DB set-up and
    the "failed to fetch metrics" warning for trials a time budget left unstarted, and the
    "snapshotting ... may become a bottleneck" warning that fixed-extractor trials (an epoch a
    second, a checkpoint each) set off at every epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray._private.authentication", "ray.tune.analysis.experiment_analysis",
                 "ray.tune.execution.experiment_state", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _init_ray(address: str | None, verbose: bool = False) -> None:
    import ray

    if address:
        _probe_address(address)
    if not verbose:
        _quiet_ray()
    # Quiet: worker stdout stays in Ray's session logs; the LiveView callback reports trials instead.
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **({"log_to_driver": True} | quiet))
        else:  # a new local instance: never join a cluster some other job started with `ray start`
            ray.init(address="local", include_dashboard=False, dashboard_host="127.0.0.1", **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TLError(f"cannot reach Ray at --address {address}: {str(exc).splitlines()[0]}") from None


def _make_searcher(space: SearchSpace, seed: int, max_concurrent: int = 0):
    """The search algorithm; ``max_concurrent`` > 0 caps trials at once (``--repeatable``: 1).

    The cap goes on the searcher itself: Ray ignores ``TuneConfig.max_concurrent_trials`` for a
    ``BasicVariantGenerator`` passed in."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    if space.sampler == "grid":  # Ray's own generator: each listed config replaces one sample
        return BasicVariantGenerator(points_to_evaluate=grid_configs(space), max_concurrent=max_concurrent)

    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, space.num_samples // 3))),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
                "qmc": lambda: optuna.samplers.QMCSampler(seed=seed)}
    searcher = OptunaSearch(SpaceSampler(space), metric=space.metric, mode=space.mode,
                            sampler=samplers[space.sampler](), points_to_evaluate=optuna_points(space) or None)
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default embeds every constant of the config)."""
    c = trial.config
    return f"{trial.trial_id}_{str(c.get('backbone', '')).replace('/', '-')}_{c.get('weights', '')}_{c.get('freeze', '')}"


def _mlflow_uri(where: str) -> str:
    """Return the tracking URI for ``--mlflow``: a URI as given, a folder as a SQLite store inside it.

    MLflow 3 refuses a plain-folder (file) store unless ``MLFLOW_ALLOW_FILE_STORE=true``;
    ``file:`` URIs are passed through for users who set it.
    """
    if "://" in where or where.startswith("file:"):
        return where
    folder = Path(where).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLError(f"--mlflow {where} is not writable: {exc.strerror or exc}") from None
    return f"sqlite:///{folder / 'mlflow.db'}"


def _mlflow_callback(uri: str, experiment: str):
    """Ray's MLflowLoggerCallback on ``experiment``; a SQLite store keeps artifacts beside its database."""
    import mlflow
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    client = mlflow.MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:///") and client.get_experiment_by_name(experiment) is None:
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
        client.create_experiment(experiment, artifact_location=artifacts.as_uri())
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, tags={"tl.experiment": experiment})


def _log_chosen_to_mlflow(uri: str, experiment: str, trials: list[tuple[str, str]]) -> list[str]:
    """Tag the MLflow runs of the recommended model's trials ``tl.chosen`` and attach their files.

    Args:
        trials: (trial id, trial folder) of each member: one for a single pick, the seeds of a
            finalist ensemble.
    Returns:
        The tagged run ids (a member without a run, e.g. logged to no experiment, is skipped).
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id])
    tagged = []
    for trial_id, trial_dir in trials:
        # MLflowLoggerCallback names each run after its trial: "<trainable>_<trial_id>".
        mine = [r for r in runs if r.info.run_name.endswith(f"_{trial_id}")]
        if not mine:
            continue
        run_id = mine[0].info.run_id
        client.set_tag(run_id, "tl.chosen", "true")
        for name in CHOSEN_ARTIFACTS:
            if (Path(trial_dir) / name).is_file():
                client.log_artifact(run_id, str(Path(trial_dir) / name))
        tagged.append(run_id)
    return tagged


def _require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TLError("--mlflow needs MLflow: pip install -e '.[mlflow]'") from None


class _StopSignals:
    """Ctrl-C and SIGTERM ask Tune to stop gracefully (save the experiment state and return), and
    remember that they did, so the search can say how to ``--resume`` it; a second one stops at once.

    Tune's own SIGINT handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``) and Tune is asked
    through SIGUSR1, the other signal its graceful stop listens to: after such a stop its results
    cannot tell an interrupted trial from a finished one, but this flag can.
    """

    def __init__(self) -> None:
        import threading

        self.received = False
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = True
        os.kill(os.getpid(), signal.SIGUSR1)


class _Experiment:
    """Where this search lives: its name, the storage root and (local storage) its folder."""

    def __init__(self, args: argparse.Namespace):
        self.storage = _check_storage(args.storage)
        self.name = args.name or f"{Path(args.space).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        self.folder = Path(self.storage) / self.name if "://" not in self.storage else None
        self.where = f"{self.storage}/{self.name}"
        if args.resume and self.folder is not None and not (self.folder / SEARCH_FILE).exists():
            raise TLError(f"--resume: no experiment {self.name!r} under {self.storage}")
        if not args.resume and self.folder is not None and self.folder.exists():
            raise TLError(f"experiment {self.folder} exists; pass --resume to continue it or choose another --name")


def _load_data(space: SearchSpace, args: argparse.Namespace) -> dict:
    """Decode the dataset once per image size the space asks for, check the task and batch sizes."""
    source = resolve_dataset_path(space.dataset, args.data_dir, args.offline)
    # An .npz is stored at one size (trials resize batches): load it once, share it for every size.
    sizes = space.image_sizes()[:1] if source.is_file() else space.image_sizes()
    loaded = {size: load_dataset(space.dataset, size, args.data_dir, offline=args.offline, seed=args.seed or 0,
                                 skip_bad=args.skip_bad_images, groups=space.groups, task=space.task,
                                 positive_class=space.positive_class, table=space.fixed.get("table"))
              for size in sizes}
    datasets = {size: loaded.get(size, loaded[sizes[0]]) for size in space.image_sizes()}
    for arrays in loaded.values():  # computed once here, they travel to the trials with the arrays
        for split in ("test", "val"):
            arrays.split_fingerprint(split)
    first = next(iter(datasets.values()))
    check_metric(space.metric, first.task, f"{args.space}: METRIC")
    uncertain = space.params.get("uncertain") or space.fixed.get("uncertain") or "ignore"
    for line in dataset_summary(first, uncertain):
        print(f"{PREFIX} {line}")
    batch_sizes = space.params.get("batch_size", [space.fixed.get("batch_size", 64)])
    if isinstance(batch_sizes, list) and min(batch_sizes) > len(first.labels["train"]):
        raise TLError(f"batch_size {min(batch_sizes)} is larger than the training set ({len(first.labels['train'])} images)")
    return datasets


def _complete_space(space: SearchSpace, args: argparse.Namespace) -> dict:
    """Resolve every (backbone, weights) pair (drop missing ones with --offline) and pin what each trial
    must share: the dataset, its task and its grouping. Returns the resolved state dicts."""
    weights, missing = preflight(space.weight_pairs(), args.offline)
    _drop_missing(space, missing, args.offline)
    if space.sampler == "grid":
        space.num_samples = len(grid_configs(space))
        print(f"{PREFIX} grid: {space.num_samples} trials, every combination once")
    space.fixed.update({"dataset": space.dataset, "data_dir": args.data_dir})
    # A trial that loads for itself resolves the same task.
    space.fixed.update({"task": space.task, "positive_class": space.positive_class})
    if space.groups:  # a trial that decodes for itself carves the same grouped split
        space.fixed["groups"] = space.groups
    for line in space_summary(space):
        print(f"{PREFIX} {line}")
    return weights


def _new_tuner(trainable, space: SearchSpace, args: argparse.Namespace, where: _Experiment, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    param_space = points_param_space(grid_configs(space)) if space.sampler == "grid" else None
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=_make_searcher(space, args.seed or 0, max_concurrent=1 if args.repeatable else 0),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=space.max_epochs,
                                    grace_period=space.grace_period, reduction_factor=space.reduction_factor),
            metric=space.metric, mode=space.mode, num_samples=space.num_samples,
            time_budget_s=args.time_budget_s,
            # A finished trial's process (torch and the project already imported) runs the next one.
            reuse_actors=True,
            trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=where.name, storage_path=where.storage,
            # no per-trial config boxes or tables (LiveView prints instead); --verbose: Ray's all
            **run_options(callbacks, args.verbose),
            **trial_run_options(space.metric, space.mode, space.max_failures)))


def run_search(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """The search, phase by phase: check the inputs, the weights and the dataset's labels (before Ray
    starts, so bad input costs seconds), start or join Ray, decode (Ray tasks) and audit the data, run or resume the
    Tuner, print the search's pick, run the finalist stage if asked, and print the recommended model.
    Trials on this machine get the decoded splits as memory-mapped files (one copy in the page cache);
    with ``--address`` the pixels travel through the object store, one copy per node."""
    if args.mlflow is not None:
        _require_mlflow()
    space = _space_from_args(args)
    where = _Experiment(args)
    weights = _complete_space(space, args)  # the space and its weights need neither data nor Ray
    mlflow_uri = _mlflow_uri(args.mlflow) if args.mlflow is not None else None
    # The dataset's labels, task and metric, before Ray too: a missing dataset, a bad label table, a task
    # or a metric the labels do not fit all cost seconds. Decoding the pixels waits for Ray.
    task = check_labels(space.dataset, args.data_dir, offline=args.offline, groups=space.groups, task=space.task,
                        positive_class=space.positive_class, table=space.fixed.get("table"))
    check_metric(space.metric, task.kind, f"{args.space}: METRIC")
    # Ray before the pixels: the decode store's chunks are Ray tasks on every core (every node with --address).
    _init_ray(args.address, args.verbose)
    datasets = _load_data(space, args)
    if args.address:  # other nodes may not see this disk: the pixels go through the object store, not paths
        datasets = {size: arrays.by_value() for size, arrays in datasets.items()}
    first = next(iter(datasets.values()))
    audit, audit_pairs = audit_splits(first.images, names=first.names, groups=first.split_record.get("groups"),
                                      fingerprints=first.image_fingerprints)
    for line in audit_lines(audit):
        print(f"{PREFIX} {line}")

    import ray
    from ray import tune

    weight_refs = {f"{b}|{w}": ray.put(sd) for (b, w), sd in weights.items() if sd is not None}
    trainable = tune.with_resources(tune.with_parameters(train_transfer, datasets=datasets, weight_refs=weight_refs),
                                    {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial})
    live = LiveView(space.metric, space.mode, space.num_samples, args.time_budget_s)
    if not args.verbose:
        # Ray's new output engine prints its experiment box and a TensorBoard hint into the temp
        # session folder even at verbose=0 and ignores progress reporters; the classic engine with
        # a reporter that never reports prints nothing, and LiveView speaks instead.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    trackers = [_mlflow_callback(mlflow_uri, where.name)] if mlflow_uri else []
    callbacks = ([] if args.verbose else [live]) + trackers
    if args.resume:
        tuner = tune.Tuner.restore(str(where.folder) if where.folder else where.where, trainable,
                                   resume_unfinished=True, resume_errored=True)
        set_restored_options(tuner, run_options(callbacks, args.verbose))
    else:
        if where.folder is not None:
            where.folder.mkdir(parents=True)
            write_search_meta(where.folder, {
                "space_file": str(args.space), "space": space.echo(), "args": vars(args),
                "metric": space.metric, "mode": space.mode, "max_epochs": space.max_epochs,
                "num_samples": space.num_samples, "dataset": first.describe(), "split_audit": audit,
                "started": dt.datetime.now().isoformat(timespec="seconds")})
            save_pairs(where.folder / AUDIT_FILE, audit_pairs)  # thumbnails of duplicate pairs, for the report
        tuner = _new_tuner(trainable, space, args, where, callbacks)
    if args.repeatable:
        print(f"{PREFIX} --repeatable: one trial at a time"
              + (", but --time-budget-s ends the search by the clock, so a rerun may get more or fewer trials"
                 if args.time_budget_s else ""))
    print(f"{PREFIX} experiment {where.name}: {space.num_samples} trials; "
          + ("Ray's full output (--verbose)" if args.verbose else f"a status line every {live.interval_s:.0f} s"))
    stop = _StopSignals()
    resume_hint = f"  {resume_command(argv if argv is not None else sys.argv[1:], where.name)}"
    try:
        results = tuner.fit()
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stops without its last save
        print(f"\n{PREFIX} interrupted; continue from the last saved state with:\n{resume_hint}")
        return 130
    done = results.num_terminated + results.num_errors
    budget_hit = args.time_budget_s is not None and live.clock() - live.started >= args.time_budget_s
    if stop.received or ((done < len(results) or len(results) < space.num_samples) and not budget_hit):
        # After a graceful stop Tune reports unfinished trials as terminated: no count is trustworthy.
        print(f"{PREFIX} interrupted; the experiment state is saved. Continue with:\n{resume_hint}")
        return 130
    if not args.verbose:
        print(live.status_line())
        if budget_hit and live.running:
            print(f"{PREFIX} time budget reached: {len(live.running)} running trial(s) stopped there, not tested")
    ranked = ranked_results(results, space.metric, space.mode)  # once: printed, finalists
    status = _print_outcome(results, ranked, space, where.where)
    if status == 0 and space.finalists:
        status = run_finalist_stage(trainable, results, ranked, space, where.where, where.folder,
                                    verbose=args.verbose, trackers=trackers)
    if status == 0:
        _print_recommendation(where, mlflow_uri, len(results))
    return status


def _print_recommendation(where: _Experiment, mlflow_uri: str | None, n_runs: int) -> None:
    """Print what the experiment recommends (``tl.core.recommend``: what the report describes and
    ``tl.export`` ships) and tag its MLflow runs ``tl.chosen``."""
    if where.folder is None:
        print(f"{PREFIX} copy {where.where} down and run analysis.summarize on it for the recommended model")
        return
    from tl.core.recommend import recommend, recommendation_lines
    from tl.core.results import load_experiments

    try:
        exp = load_experiments([where.folder])
        rec = recommend(exp)
    except TLError as exc:
        print(f"{PREFIX} no recommended model: {exc}")
        return
    for line in recommendation_lines(exp, rec):
        print(line if line.startswith("  ") else f"{PREFIX} {line}")
    print(f"{PREFIX} use it: python -m tl.export {where.where} --out BUNDLE, then python -m tl.predict BUNDLE IMAGES... "
          "--out predictions.csv")
    if mlflow_uri:
        members = [(t.rsplit("/", 1)[-1], str(d)) for t, d in zip(rec.trials, rec.trial_dirs)]
        run_ids = _log_chosen_to_mlflow(mlflow_uri, where.name, members)
        print(f"{PREFIX} MLflow: {n_runs} runs in experiment {where.name!r} at {mlflow_uri}"
              + (f"; the recommended model = run(s) {', '.join(run_ids)} (tag tl.chosen, their files as artifacts)"
                 if run_ids else ""))
        if run_ids:
            print(f"{PREFIX} attach the report to it: python -m analysis.summarize {where.where} && "
                  f"MLFLOW_TRACKING_URI={mlflow_uri} mlflow artifacts log-artifacts -l {where.where}/summary "
                  f"-r {run_ids[0]} -a report")


def chosen_trial(results, metric: str, mode: str):
    """Return (the Result the search picks, its best ``metric``), or (None, None).

    The rule is :func:`tl.core.choice.rank_trials` over :func:`tl.core.results.trial_row` rows, as
    the report ranks Table 1; errored trials and trials that never reported ``metric`` are left out.
    """
    ranked = ranked_results(results, metric, mode)
    return (ranked[0][1], ranked[0][2]) if ranked else (None, None)


def ranked_results(results, metric: str, mode: str) -> list[tuple[str, object, float, bool]]:
    """Return (trial id, Result, best ``metric``, tested) per trial, best first by the rule of choice.

    Each Result's reported rows become a ``tl.core.results.trial_row`` (the rows the report's Table 1
    is made of) and are ranked by ``tl.core.choice.rank_trials``. Errored trials and trials that
    never reported ``metric`` are left out; the finalists are the top tested ones.
    """
    import pandas as pd

    from tl.core.choice import rank_trials
    from tl.core.results import rank_column, trial_row

    rows, by_trial = [], {}
    for i, result in enumerate(results):
        frame = result.metrics_dataframe
        if result.error or frame is None or metric not in frame or frame[metric].dropna().empty:
            continue
        trial = str(frame["trial_id"].dropna().iloc[-1]) if "trial_id" in frame else f"{i:08d}"
        curve = frame if "epoch" in frame else frame.assign(epoch=range(1, len(frame) + 1))
        rows.append({"trial": trial, **trial_row(curve, metric, mode, status="COMPLETED")})
        by_trial[trial] = result
    if not rows:
        return []
    column = rank_column(metric)
    ranked = rank_trials(pd.DataFrame(rows), column, mode)
    return [(t, by_trial[t], float(b), bool(pd.notna(a)))
            for t, b, a in zip(ranked["trial"], ranked[column], ranked["test_acc"])]


def _print_outcome(results, ranked: list, space: SearchSpace, where: str) -> int:
    """Print the chosen trial (``ranked``'s first, see :func:`ranked_results`); 1 if there is none."""
    n_err = len(results.errors)
    print(f"\n[tl.search] {len(results)} trials, {n_err} errored. Experiment folder: {where}")
    if not ranked:
        what = "every trial errored" if n_err == len(results) else f"no trial reported {space.metric}"
        print(f"error: {what}; see error.txt in the trial folders", file=sys.stderr)
        return 1
    _, best, best_value, _ = ranked[0]
    shown = {k: best.config[k] for k in ("backbone", "weights", "freeze", "lr", "batch_size", "weight_decay",
                                         "epochs", "image_size") if k in best.config}
    print(f"[tl.search] best trial by {space.metric} (val only): {json.dumps(shown, default=str)}")
    m = best.metrics or {}
    figures = [f"best {space.metric}={best_value:.4f}"]
    figures += [f"{k}={m[k]:.4f}" for k in ("test_acc", "test_auc", "test_sensitivity", "test_specificity") if k in m]
    print("  " + "  ".join(figures) + ("" if "test_acc" in m else "  (stopped early: not tested)"))
    print(f"  trial folder: {best.path}")
    print(f"[tl.search] next: python -m analysis.summarize {where}")
    if "://" not in where:
        print(f"[tl.search] curves per trial: tensorboard --logdir {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    try:
        return run_search(args, argv)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
