"""``python -m tl.search SPACE.py``: a Ray Tune search (Optuna sampling + ASHA) over a space file.

Order of work, one named phase each in ``run_search``: check the inputs (the space, the storage,
every weights version, the dataset's labels) before Ray starts, so bad input costs seconds; start
or join Ray; decode the data (Ray tasks) and audit its splits; share data and weights with the
trials; run or resume the Tuner; print the search's pick; with ``--finalists``, re-train the top
recipes over seeds (``tl.search.finalist_stage``); print the recommended model. Bad input stops it
with one line and no experiment folder: the space, weights and dataset path before Ray starts, the
files' contents while decoding.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass

from tl.core.errors import TLError
from tl.core.no_space import NO_SPACE, is_no_space
from tl.core.cv import CHOICES
from tl.core.finalists import parse_count
from tl.core.results import AUDIT_FILE, write_search_meta
from tl.core.results.files import SUBGROUPS_FILE
from tl.core.subgroups import META_KEY as SUBGROUPS_META, write_test_subgroups
from tl.core.results.split_audit import TRAIN_COPIES
from tl.core.tasks import check_metric
from tl.data import load_dataset, resolve_dataset_path
from tl.data.audit import audit_lines, audit_splits, save_pairs
from tl.data.dataset import check_labels, listed_once
from tl.data.folds import check_folds, check_k
from tl.data.subgroups import SubgroupPlan, plan_subgroups, subgroups_of_test
from tl.data.table_source import add_table_arguments, table_options_from_args
from tl.search.beside_ray import load_beside_ray
from tl.search.console import (PREFIX, LiveView, dataset_summary, resume_command, run_options, set_restored_options,
                               space_summary)
from tl.search.datasets import datasets_to_search, run_on_datasets
from tl.search.disk import Estimate, ReleaseResumableState, estimate, size_line, storage_warning
from tl.search.full_disk import FullDiskStop, StorageFull
from tl.search.experiment import Experiment, StopSignals
from tl.search.finalist_stage import CV_FINALISTS, run_finalist_stage
from tl.search.nodes import check_cluster_paths
from tl.search.ranking import print_outcome, ranked_results
from tl.search.space import SAMPLERS, SearchSpace, apply_overrides, grid_configs, load_space, pin_uncertain
from tl.search.trackers import DEFAULT_MLFLOW, log_chosen_to_mlflow, mlflow_callback, mlflow_uri, require_mlflow
from tl.search.tuner import init_ray, new_tuner
from tl.train.trainable import train_transfer
from tl.train.weights import preflight


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
    g.add_argument("--dataset", action="append", help="MedMNIST name, .npz file, ImageFolder root, or a .csv/.tsv "
                                                       "label table (overrides the file's DATASET/DATASETS); give it "
                                                       "more than once to search each with the same space")
    g.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR"), help="where named datasets live (env TL_DATA_DIR)")
    g.add_argument("--offline", action="store_true", help="never download; drop (backbone, weights) pairs that are not cached")
    g.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images instead of failing")
    g.add_argument("--drop-duplicates", action="store_true",
                   help="remove val and test images that the split audit finds to be exact or near copies of "
                        "train images, before training (recorded in tl_search.json, said in the report)")
    g.add_argument("--groups", metavar="REGEX", help="patient (group) id: first capture group of REGEX in each file's "
                                                     "path relative to the dataset root (npz: {split}_names); carved "
                                                     "splits become disjoint by group (overrides the file's GROUPS)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="pin one parameter (repeatable)")
    add_table_arguments(p)
    g = p.add_argument_group("subgroups of test (the report's figures per subgroup; they never steer the search)")
    g.add_argument("--subgroup-columns", metavar="COL[,COL...]",
                   help="label-table columns (numbers such as age binned into bands) or DICOM header keywords "
                        "(PatientSex, PatientAge, ViewPosition): the report scores the test images per subgroup "
                        "(overrides the file's SUBGROUP_COLUMNS)")
    g.add_argument("--subgroup-path", metavar="REGEX",
                   help="subgroups from each test image's path: each named group (?P<name>...) is a column, else "
                        "the first group (overrides the file's SUBGROUP_PATH)")
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
    g = p.add_argument_group("finalists over seeds or folds")
    g.add_argument("--finalists", metavar="K", help="after the search, re-train the top K tested recipes for their "
                                                    "full epochs, no early stopping (overrides the file's FINALISTS)")
    g.add_argument("--finalist-seeds", metavar="S", help="seeds per finalist (per fold with --cv), none the search "
                                                         "used (default: the file's FINALIST_SEEDS, else 3; with --cv 1)")
    g.add_argument("--cv", metavar="FOLDS", help="finalists by cross-validation: each trains on FOLDS folds of train + "
                                                 "val (patient-grouped when groups are known) and is ranked on its "
                                                 "pooled out-of-fold predictions; the winner's fold models are the "
                                                 "recommended ensemble (overrides the file's CV; --finalists defaults "
                                                 f"to {CV_FINALISTS})")
    g.add_argument("--choose", choices=CHOICES, help="with --cv: best (the best out-of-fold figure) or one-se (among "
                                                     "recipes within one standard error of the best, the cheapest to "
                                                     "run); default: the file's CHOOSE, else best")


def _with_finalist_args(space: SearchSpace, args: argparse.Namespace) -> SearchSpace:
    """Apply --finalists / --finalist-seeds over the file's FINALISTS / FINALIST_SEEDS."""
    if args.finalists is not None:
        space.finalists = parse_count("--finalists", args.finalists)
    if args.finalist_seeds is not None:
        space.finalist_seeds = parse_count("--finalist-seeds", args.finalist_seeds)
    if args.cv is not None:
        try:
            space.cv = check_k(int(str(args.cv).strip()))
        except ValueError:
            raise TLError(f"--cv must be an integer >= 2 (the number of folds), got {args.cv!r}") from None
    if args.choose is not None:
        space.choose = args.choose
    if space.cv and not space.finalists:  # cross-validation is a finalist stage: which recipes it compares
        space.finalists = CV_FINALISTS
    return space


def _space_from_args(args: argparse.Namespace) -> SearchSpace:
    space = load_space(args.space)
    pins = list(args.set)
    if args.dataset:
        space.dataset = args.dataset
    if args.subgroup_columns is not None:
        space.subgroup_columns = args.subgroup_columns
    if args.subgroup_path is not None:
        space.subgroup_path = args.subgroup_path
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
    space = pin_uncertain(space, args.uncertain)  # before the --set pins: --set uncertain=... beats it
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
    for line in dataset_summary(first, space.uncertain_policy()):
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


@dataclass
class _Prepared:
    """What the checks before Ray leave: the completed space, where the experiment lives, the resolved
    weights (state dicts by (backbone, weights)) and the MLflow store, if any."""

    space: SearchSpace
    where: Experiment
    weights: dict
    mlflow_uri: str | None
    subgroups: SubgroupPlan | None = None  # --subgroup-columns / --subgroup-path, checked; for the report only


def _check_inputs(args: argparse.Namespace) -> _Prepared:
    """Every check that needs neither the pixels nor Ray: the space and its overrides, the storage,
    each (backbone, weights) pair, and the dataset's labels against the task and METRIC. A missing
    dataset, a bad label table, a task or a metric the labels do not fit all cost seconds."""
    if args.mlflow is not None:
        require_mlflow()
    space = _space_from_args(args)
    where = Experiment(args)
    weights = _complete_space(space, args)  # the space and its weights need neither data nor Ray
    uri = mlflow_uri(args.mlflow) if args.mlflow is not None else None
    task = check_labels(space.dataset, args.data_dir, offline=args.offline, groups=space.groups, task=space.task,
                        positive_class=space.positive_class, table=space.fixed.get("table"))
    check_metric(space.metric, task.kind, f"{args.space}: METRIC")
    if space.cv:  # fewer patients than folds, or nothing to fold, stops here: before Ray, nothing written
        for line in check_folds(space.dataset, args.data_dir, space.cv, args.seed or 0, offline=args.offline,
                                groups=space.groups, table=space.fixed.get("table")):
            print(f"{PREFIX} {line}")
    return _Prepared(space, where, weights, uri, _plan_subgroups(space, args))


def _plan_subgroups(space: SearchSpace, args: argparse.Namespace) -> SubgroupPlan | None:
    """The test subgroups' columns checked against the dataset (an unknown column stops the search here)."""
    return plan_subgroups(space.dataset, args.data_dir, offline=args.offline, table=space.fixed.get("table"),
                          columns=space.subgroup_columns, pattern=space.subgroup_path)


def _decode_and_audit(space: SearchSpace, args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Decode the dataset (Ray tasks on every core, every node with ``--address``) and audit its splits.
    Returns (arrays by image size, the audit record, the example pairs the report shows)."""
    datasets = _load_data(space, args)
    if args.address:  # other nodes may not see this disk: the pixels go through the object store, not paths
        datasets = {size: arrays.by_value() for size, arrays in datasets.items()}
    first = next(iter(datasets.values()))
    audit, audit_pairs = audit_splits(first.images, names=first.names, groups=first.split_record.get("groups"),
                                      fingerprints=first.image_fingerprints)
    for line in audit_lines(audit):
        print(f"{PREFIX} {line}")
    if args.drop_duplicates:
        datasets, audit_pairs = _drop_copies(datasets, audit_pairs)
    return datasets, audit, audit_pairs


def _drop_copies(datasets: dict, audit_pairs: dict) -> tuple[dict, dict]:
    """--drop-duplicates: val and test without the images the audit found copied from train. The
    copies' indices leave the saved pairs too: they index the splits as they were."""
    rows = {s: audit_pairs.pop(f"{TRAIN_COPIES}{s}") for s in ("val", "test") if f"{TRAIN_COPIES}{s}" in audit_pairs}
    why = "exact or near copies of train images (--drop-duplicates)"
    dropped = {id(a): a.without(rows, why) for a in datasets.values()}
    datasets = {size: dropped[id(a)] for size, a in datasets.items()}
    for arrays in dropped.values():  # computed once here, they travel to the trials with the arrays
        for split in ("test", "val"):
            arrays.split_fingerprint(split)
    first = next(iter(datasets.values()))
    print(f"{PREFIX} --drop-duplicates: removed " + ", ".join(f"{len(r):,} {s}" for s, r in rows.items())
          + f" images copied from train; left {', '.join(f'{s} {len(first.labels[s]):,}' for s in ('val', 'test'))}")
    return datasets, audit_pairs


def _shared_trainable(space: SearchSpace, datasets: dict, weights: dict):
    """The trainable with the decoded splits and the pretrained weights put in Ray's object store once,
    and each trial's CPUs and GPUs. Trials on this machine get the splits as memory-mapped files."""
    import ray
    from ray import tune

    weight_refs = {f"{b}|{w}": ray.put(sd) for (b, w), sd in weights.items() if sd is not None}
    return tune.with_resources(tune.with_parameters(train_transfer, datasets=datasets, weight_refs=weight_refs),
                               {"cpu": space.cpus_per_trial, "gpu": space.gpus_per_trial})


def _start_experiment(args: argparse.Namespace, p: _Prepared, first, audit: dict, audit_pairs: dict) -> None:
    """Create the experiment folder with ``tl_search.json`` (space, arguments, dataset, audit) and the
    audit's example pairs; nothing for remote storage, where Ray writes the folder itself."""
    if p.where.folder is None:
        return
    # each test image's subgroups, in the test split's order, for the report (read before anything is written)
    subgroups = subgroups_of_test(p.subgroups, first) if p.subgroups is not None else None
    p.where.folder.mkdir(parents=True)
    space = p.space
    write_search_meta(p.where.folder, {
        "space_file": str(args.space), "space": space.echo(), "args": vars(args),
        "metric": space.metric, "mode": space.mode, "max_epochs": space.max_epochs,
        "num_samples": space.num_samples, "dataset": first.describe(), "split_audit": audit,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        **({SUBGROUPS_META: {**p.subgroups.describe(), "file": SUBGROUPS_FILE, "images": len(subgroups),
                             "test_fingerprint": first.test_fingerprint}} if subgroups is not None else {})})
    save_pairs(p.where.folder / AUDIT_FILE, audit_pairs)  # thumbnails of duplicate pairs, for the report
    if subgroups is not None:
        write_test_subgroups(p.where.folder, subgroups)
        counts = ", ".join(f"{c} {subgroups[c].nunique()}" for c in p.subgroups.columns)
        print(f"{PREFIX} subgroups of the {len(subgroups):,} test images ({counts}) in {SUBGROUPS_FILE}: the report "
              "scores the recommended model on each; they never steer the search")


def _tuner(args: argparse.Namespace, p: _Prepared, trainable, callbacks: list):
    """A new Tuner, or with ``--resume`` the saved one with this run's console and trackers."""
    from ray import tune

    if args.resume:
        where = p.where
        tuner = tune.Tuner.restore(str(where.folder) if where.folder else where.where, trainable,
                                   resume_unfinished=True, resume_errored=True)
        set_restored_options(tuner, run_options(callbacks, args.verbose))
        return tuner
    return new_tuner(trainable, p.space, name=p.where.name, storage=p.where.storage, seed=args.seed or 0,
                     repeatable=args.repeatable, time_budget_s=args.time_budget_s, verbose=args.verbose,
                     callbacks=callbacks)


def _fit(tuner, args: argparse.Namespace, p: _Prepared, live: LiveView, argv: list[str], resume_name: str):
    """Run the Tuner. Returns its results, or exit code 130 when it was interrupted (the state is saved
    and the console says how to ``--resume``). A full ``--storage`` raises ``StorageFull`` (the state
    saved too: ``tl.search.full_disk``), ending with the command that continues the search."""
    if args.repeatable:
        print(f"{PREFIX} --repeatable: one trial at a time"
              + (", but --time-budget-s ends the search by the clock, so a rerun may get more or fewer trials"
                 if args.time_budget_s else ""))
    print(f"{PREFIX} experiment {p.where.name}: {p.space.num_samples} trials; "
          + ("Ray's full output (--verbose)" if args.verbose else f"a status line every {live.interval_s:.0f} s"))
    stop = StopSignals()
    resume_hint = f"  {resume_command(argv, resume_name)}"
    try:
        results = tuner.fit()
    except StorageFull as exc:  # FullDiskStop stopped the Tuner: its state is saved, the line says how to go on
        raise exc.with_resume(resume_hint.strip()) from None
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stops without its last save
        print(f"\n{PREFIX} interrupted; continue from the last saved state with:\n{resume_hint}")
        return 130
    done = results.num_terminated + results.num_errors
    budget_hit = args.time_budget_s is not None and live.clock() - live.started >= args.time_budget_s
    if stop.received or ((done < len(results) or len(results) < p.space.num_samples) and not budget_hit):
        # After a graceful stop Tune reports unfinished trials as terminated: no count is trustworthy.
        print(f"{PREFIX} interrupted; the experiment state is saved. Continue with:\n{resume_hint}")
        return 130
    if not args.verbose:
        print(live.status_line())
        if budget_hit and live.running:
            print(f"{PREFIX} time budget reached: {len(live.running)} running trial(s) stopped there, not tested")
    return results


def _console_callbacks(args: argparse.Namespace, p: _Prepared) -> tuple[LiveView, list, list]:
    """(the live view, its callbacks with the trackers, the trackers alone: the finalists log there too)."""
    live = LiveView(p.space.metric, p.space.mode, p.space.num_samples, args.time_budget_s)
    if not args.verbose:
        # Ray's new output engine prints its experiment box and a TensorBoard hint into the temp
        # session folder even at verbose=0 and ignores progress reporters; the classic engine with
        # a reporter that never reports prints nothing, and LiveView speaks instead.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # For the search and the finalist stage alike: trackers, and a trial's resumable state removed once it ends.
    # Last: a full disk stops the Tuner, and its on_experiment_end raises after the others have run.
    full_disk = FullDiskStop(p.where.storage, p.where.name, _storage_estimate(p))
    full_disk.hold()  # before the experiment folder is written: no room for Ray's last save fails here
    trackers = ([mlflow_callback(p.mlflow_uri, p.where.name)] if p.mlflow_uri else []) + [ReleaseResumableState(),
                                                                                          full_disk]
    return live, ([] if args.verbose else [live]) + trackers, trackers


def run_search(args: argparse.Namespace, argv: list[str] | None = None, resume_name: str | None = None) -> int:
    """The search, phase by phase (see the module's docstring). Returns the exit code.

    ``resume_name``: the ``--name`` that ``--resume`` takes (a several-dataset search's, whose datasets
    are experiments inside it); default this experiment's."""
    argv = argv if argv is not None else sys.argv[1:]
    p = _check_inputs(args)
    # Pixels the store holds load beside a local Ray's start; what needs decoding waits for Ray: the
    # decode store's chunks are Ray tasks on every core (every node with --address).
    beside = load_beside_ray(lambda: _decode_and_audit(p.space, args)) if _starts_local_ray(args) else None
    init_ray(args.address, args.verbose)
    check_cluster_paths(args, p.space, p.where.storage)  # on a cluster: every node sees --storage and the data
    datasets, audit, audit_pairs = (beside and beside.result()) or _decode_and_audit(p.space, args)
    trainable = _shared_trainable(p.space, datasets, p.weights)
    live, callbacks, trackers = _console_callbacks(args, p)
    if not args.resume:
        _start_experiment(args, p, next(iter(datasets.values())), audit, audit_pairs)
    _warn_if_storage_short(p)
    results = _fit(_tuner(args, p, trainable, callbacks), args, p, live, argv, resume_name or p.where.name)
    if isinstance(results, int):
        return results
    ranked = ranked_results(results, p.space.metric, p.space.mode)  # once: printed, finalists
    status = print_outcome(results, ranked, p.space, p.where.where)
    if status == 0 and p.space.finalists:
        status = run_finalist_stage(trainable, results, ranked, p.space, p.where.where, p.where.folder,
                                    verbose=args.verbose, trackers=trackers,
                                    arrays=next(iter(datasets.values())), data_seed=args.seed or 0)
    if status == 0:
        _print_recommendation(p.where, p.mlflow_uri, len(results))
    if p.where.folder is not None and p.where.folder.is_dir():
        print(f"{PREFIX} {size_line(p.where.folder)}")
    return status


def _starts_local_ray(args: argparse.Namespace) -> bool:
    """True when this search starts a local Ray (not ``--address``, not a second dataset's search)."""
    import ray

    return not args.address and not ray.is_initialized()


def _storage_estimate(p: _Prepared) -> Estimate:
    """What the search may write (``tl.search.disk.estimate``), with as many trials at once as Ray's
    CPUs (and GPUs) allow."""
    import ray

    resources = ray.cluster_resources()
    concurrent = int(resources.get("CPU", 1) // p.space.cpus_per_trial)
    if p.space.gpus_per_trial:
        concurrent = min(concurrent, int(resources.get("GPU", 0) // p.space.gpus_per_trial))
    return estimate(p.space, concurrent)


def _warn_if_storage_short(p: _Prepared) -> None:
    """Before the first trial: warn when --storage has less free space than the search may need."""
    warning = storage_warning(p.where.storage, _storage_estimate(p))
    if warning:
        print(f"{PREFIX} warning: {warning}")


def _print_recommendation(where: Experiment, tracking_uri: str | None, n_runs: int) -> None:
    """Print what the experiment recommends (``tl.core.recommend``: what the report describes and
    ``tl.export`` ships) and tag its MLflow runs ``tl.chosen``."""
    if where.folder is None:
        print(f"{PREFIX} copy {where.where} down and run analysis.summarize on it for the recommended model")
        return
    from tl.core.recommend import recommend, recommendation_lines
    from tl.core.results.split_audit import train_copies
    from tl.core.results import load_experiments

    try:
        exp = load_experiments([where.folder])
        rec = recommend(exp)
    except TLError as exc:
        print(f"{PREFIX} no recommended model: {exc}")
        return
    for line in recommendation_lines(exp, rec, copies=train_copies(where.folder)):
        print(line if line.startswith("  ") else f"{PREFIX} {line}")
    print(f"{PREFIX} use it: python -m tl.export {where.where} --out BUNDLE, then python -m tl.predict BUNDLE IMAGES... "
          "--out predictions.csv")
    if tracking_uri:
        members = [(t.rsplit("/", 1)[-1], str(d)) for t, d in zip(rec.trials, rec.trial_dirs)]
        run_ids = log_chosen_to_mlflow(tracking_uri, where.name, members)
        print(f"{PREFIX} MLflow: {n_runs} runs in experiment {where.name!r} at {tracking_uri}"
              + (f"; the recommended model = run(s) {', '.join(run_ids)} (tag tl.chosen, their files as artifacts)"
                 if run_ids else ""))
        if run_ids:
            print(f"{PREFIX} attach the report to it: python -m analysis.summarize {where.where} && "
                  f"MLFLOW_TRACKING_URI={tracking_uri} mlflow artifacts log-artifacts -l {where.where}/summary "
                  f"-r {run_ids[0]} -a report")


def _check_dataset(args: argparse.Namespace) -> None:
    """One dataset's labels against its task and METRIC, without Ray (before a several-dataset search)."""
    space = _space_from_args(args)
    task = check_labels(space.dataset, args.data_dir, offline=args.offline, groups=space.groups, task=space.task,
                        positive_class=space.positive_class, table=space.fixed.get("table"))
    check_metric(space.metric, task.kind, f"{args.space}: METRIC ({space.dataset})")
    if space.cv:
        check_folds(space.dataset, args.data_dir, space.cv, args.seed or 0, offline=args.offline,
                    groups=space.groups, table=space.fixed.get("table"))
    _plan_subgroups(space, args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    try:
        with listed_once():  # the checks before Ray and the decode share each dataset's listing
            datasets = datasets_to_search(args)
            if len(datasets) > 1:
                return run_on_datasets(args, argv, datasets, check=_check_dataset, run=run_search)
            args.dataset = datasets[0]
            return run_search(args, argv)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a write of ours on a full disk (Ray's on --storage are FullDiskStop's)
        if not is_no_space(exc):
            raise
        where = getattr(exc, "filename", None) or f"--storage {args.storage} or the cache (TL_CACHE_DIR)"
        print(f"error: the disk is full ({NO_SPACE}) writing {where}: free space there and run the command "
              "again (with --resume if the experiment had started)", file=sys.stderr)
        return 2
