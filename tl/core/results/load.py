"""Read one or more experiment folders into one ``Experiment``: a tidy trial x epoch frame, one row
per trial, and each trial's saved test predictions.

Trials of the finalist stage sit one level down, in ``finalists/``; their ``stage`` column says
``finalist``, and :func:`split_stages` separates them from the search's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from tl.core.columns import is_tested
from tl.core.errors import TLError
from tl.core.results.files import (
    FINALIST_DIR, RECIPE_KEY, RESULT_FILE, SOURCE_KEY, STAGE, STAGE_KEY, TEST_PREDICTIONS, TRIAL_MARKER, Predictions,
    check_experiment_dir,
    dataset_record, find_predictions_file, read_error, read_params, read_predictions, read_ray_statuses,
    read_results, read_search_meta, trial_dirs,
)

# A result column named like a config key (e.g. the epoch's ``lr`` vs the configured ``lr``)
# is renamed with this prefix so the config column keeps its name.
COLLISION_PREFIX = "epoch_"
# Trial statuses we assign; Ray's own statuses map onto these.
COMPLETED, STOPPED, ERROR, RUNNING, PENDING, UNKNOWN = (
    "COMPLETED", "STOPPED", "ERROR", "RUNNING", "PENDING", "STOPPED/RUNNING",
)
FINALIST_KEYS = (STAGE_KEY, RECIPE_KEY, SOURCE_KEY)
# Trial ids in folder names: Ray's default "<trainable>_<id>_<n>_<tag>_<date>", or a custom
# name that starts with the id (tl's "<id>_<backbone>_<weights>_<freeze>").
_TRIAL_ID = re.compile(r"^([0-9a-f]{8})_|_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_\d+_")


class Experiment(NamedTuple):
    """Everything read from one or more experiment folders."""

    frame: pd.DataFrame  # tidy: one row per (trial, epoch), config flattened into columns
    trials: pd.DataFrame  # one row per trial, including trials that never reported an epoch
    predictions: dict[str, Predictions]  # by trial key
    meta: dict[str, Any]  # tl_search.json of the first experiment, metric/mode filled in
    config_columns: list[str]  # hyperparameter columns (params.json keys we keep)
    notes: list[str]  # per-trial problems worth telling the user


def trial_status(
    *, failed: bool, has_test: bool, epochs_run: int, planned: float, last_done: bool,
    ray_status: str | None,
) -> str:
    """Return COMPLETED, STOPPED, ERROR, RUNNING, PENDING or STOPPED/RUNNING for one trial.

    In order: Ray's saved status says ERROR -> ERROR; test metrics or all planned epochs run
    -> COMPLETED; ``error.txt`` and no word from Ray -> ERROR; Ray marked the last row ``done``
    (a trial the scheduler stopped) -> STOPPED; Ray's saved status (TERMINATED -> STOPPED,
    RUNNING/PAUSED -> RUNNING, PENDING); else STOPPED/RUNNING (cannot tell). ``error.txt``
    stays after a failure that Ray retried (``max_failures``), so Ray's word beats it.
    """
    if ray_status == "ERROR":
        return ERROR
    if has_test or (epochs_run > 0 and not np.isnan(planned) and epochs_run >= planned):
        return COMPLETED
    if failed and ray_status is None:
        return ERROR
    if last_done:
        return STOPPED
    return {"TERMINATED": STOPPED, "RUNNING": RUNNING, "PAUSED": RUNNING,
            "PENDING": PENDING}.get(ray_status or "", UNKNOWN)


def _trial_id(trial_dir: Path, results: pd.DataFrame) -> str:
    if "trial_id" in results.columns and results["trial_id"].notna().any():
        return str(results["trial_id"].dropna().iloc[-1])
    match = _TRIAL_ID.search(trial_dir.name)
    return (match.group(1) or match.group(2)) if match else trial_dir.name


def _load_trial(
    trial_dir: Path, experiment: str, ray_statuses: dict[str, str], meta: dict, notes: list[str],
) -> tuple[dict[str, Any], list[str], pd.DataFrame, Predictions | None]:
    params = read_params(trial_dir)
    results, bad_lines = read_results(trial_dir)
    trial_id = _trial_id(trial_dir, results)
    if bad_lines:
        notes.append(f"trial {trial_id}: skipped {bad_lines} unreadable line(s) of {RESULT_FILE}")
    error = read_error(trial_dir)
    ray_status = ray_statuses.get(trial_id, ray_statuses.get(trial_dir.name))
    last = results.iloc[-1] if len(results) else pd.Series(dtype=object)
    planned = pd.to_numeric(pd.Series([params.get("epochs", meta.get("max_epochs"))]),
                            errors="coerce").iloc[0]
    status = trial_status(
        failed=error is not None,
        has_test=is_tested(last),
        epochs_run=len(results),
        planned=float(planned),
        last_done=bool(last.get("done", False) is True or str(last.get("done")) == "True"),
        ray_status=ray_status,
    )
    if error is not None and status != ERROR:
        notes.append(f"trial {trial_id}: has error.txt ({error}) but is {status}: "
                     "Ray retried it after the failure")
    predictions = None
    pred_file = find_predictions_file(trial_dir)
    if pred_file is not None:
        try:
            predictions = read_predictions(pred_file)
            if not predictions.fingerprint:  # saved before trials stored it: the experiment's own
                predictions = predictions._replace(fingerprint=_test_fingerprint(meta))
        except TLError as exc:
            notes.append(f"trial {trial_id}: {exc}")
    elif status == COMPLETED:
        notes.append(f"trial {trial_id} (completed): no {TEST_PREDICTIONS} in its folder or "
                     "checkpoints; left out of paired comparisons, ROC and confusion matrix")
    info = {
        "experiment": experiment, "trial_id": trial_id, "status": status,
        "ray_status": ray_status,
        "epochs_run": len(results), "error": error, "trial_dir": str(trial_dir),
        "stage": "search", **params,  # a finalist trial's params.json says stage "finalist"
    }
    return info, list(params), results, predictions


def _load_one(
    path: Path,
) -> tuple[pd.DataFrame, list[pd.DataFrame], dict, dict, list[str], list[str]]:
    meta, notes = read_search_meta(path)
    dirs = trial_dirs(path)
    if not dirs:
        raise TLError(f"{path} has no trials yet (no subfolder with {TRIAL_MARKER})")
    statuses = read_ray_statuses(path)
    stage_dir = path / FINALIST_DIR  # the finalist stage's own Tuner folder, when there is one
    if stage_dir.is_dir():
        dirs += trial_dirs(stage_dir)
        statuses.update(read_ray_statuses(stage_dir))
    infos, curves, predictions, config_keys = [], [], {}, []
    for trial_dir in dirs:
        info, keys, results, pred = _load_trial(trial_dir, path.name, statuses, meta, notes)
        config_keys += [k for k in keys if k not in config_keys]
        infos.append(info)
        curves.append(results.assign(trial_id=info["trial_id"]))
        if pred is not None:
            predictions[info["trial_id"]] = pred
    return pd.DataFrame(infos), curves, predictions, meta, notes, config_keys


def load_experiments(paths: Sequence[Path]) -> Experiment:
    """Read one or more experiment folders into one :class:`Experiment`.

    Several folders are merged for comparison; the ``experiment`` column says where each trial
    came from, and trial keys are prefixed with it only if ids collide.

    Raises:
        TLError: a path is not an experiment folder, has no trials, or no trial at all
            reported an epoch.
    """
    if not paths:
        raise TLError("no experiment folder given")
    resolved = [check_experiment_dir(Path(p)) for p in paths]
    names = [p.name if [q.name for q in resolved].count(p.name) == 1 else str(p) for p in resolved]
    all_trials, all_curves, all_preds, notes, config_columns = [], [], {}, [], []
    meta: dict[str, Any] = {}
    for name, path in zip(names, resolved):
        trials, curves, preds, one_meta, one_notes, keys = _load_one(path)
        trials["experiment"] = name
        if meta:
            _note_other_test_split(meta, one_meta, names[0], name, notes)
        else:
            meta = one_meta
        if (one_meta["metric"], one_meta["mode"]) != (meta["metric"], meta["mode"]):
            notes.append(f"{name}: metric {one_meta['metric']} ({one_meta['mode']}) differs "
                         f"from {meta['metric']} ({meta['mode']}) of the first experiment; "
                         "using the first")
        all_trials.append(trials)
        all_curves += [c.assign(experiment=name) for c in curves]
        all_preds.update({(name, k): v for k, v in preds.items()})
        notes += one_notes
        config_columns += [k for k in keys if k not in config_columns]
    trials = pd.concat(all_trials, ignore_index=True)
    duplicated = trials["trial_id"].duplicated(keep=False)
    trials.insert(0, "trial", np.where(duplicated, trials["experiment"] + "/" + trials["trial_id"],
                                       trials["trial_id"]))
    key = dict(zip(zip(trials["experiment"], trials["trial_id"]), trials["trial"]))
    predictions = {key[k]: v for k, v in all_preds.items()}
    frame = _tidy_frame(trials, all_curves, config_columns)
    if frame.empty:
        where = ", ".join(str(p) for p in resolved)
        raise TLError(f"no trial in {where} has reported an epoch yet "
                      f"({len(trials)} trial folder(s), statuses: "
                      f"{', '.join(sorted(set(trials['status'])))})")
    return Experiment(frame, trials, predictions, meta, config_columns, notes)


def _test_fingerprint(meta: dict) -> str:
    return str(dataset_record(meta).get("test_fingerprint") or "")


def _note_other_test_split(first: dict, other: dict, first_name: str, name: str, notes: list[str]) -> None:
    """Say once when two merged experiments were tested on different test splits."""
    a, b = _test_fingerprint(first), _test_fingerprint(other)
    if a and b and a != b:
        notes.append(f"{name} was tested on another test split than {first_name} (test fingerprint "
                     f"{b} vs {a}): paired comparisons across them are refused")


def _tidy_frame(trials: pd.DataFrame, curves: list[pd.DataFrame],
                config_columns: list[str]) -> pd.DataFrame:
    curves = [c for c in curves if len(c)]
    if not curves:
        return pd.DataFrame()
    results = pd.concat(curves, ignore_index=True)
    results = results.rename(columns={c: COLLISION_PREFIX + c for c in results.columns
                                      if c in config_columns or c in ("status", "trial")})
    head = ["experiment", "trial", "trial_id", "status"] + config_columns
    frame = trials[head].merge(results, on=["experiment", "trial_id"], how="inner")
    first = head + ["epoch"]
    return frame[first + [c for c in frame.columns if c not in first]].reset_index(drop=True)




def split_stages(exp: Experiment) -> tuple[Experiment, Experiment | None]:
    """Return (the search's trials, the finalist stage's trials or None) of one loaded experiment.

    Finalist trials are re-runs of search recipes with new seeds; ranking them beside the search
    trials would count a recipe several times, so Table 1 and everything else gets the search part.
    """
    if STAGE_KEY not in exp.trials.columns or not exp.trials[STAGE_KEY].eq(STAGE).any():
        return exp, None
    final = exp.trials[STAGE_KEY].eq(STAGE)

    def part(mask: pd.Series, config_columns: list[str]) -> Experiment:
        trials = exp.trials[mask].reset_index(drop=True)
        keys = set(trials["trial"])
        frame = exp.frame[exp.frame["trial"].isin(keys)].reset_index(drop=True)
        return exp._replace(trials=trials, frame=frame, config_columns=config_columns,
                            predictions={k: v for k, v in exp.predictions.items() if k in keys})

    search_columns = [c for c in exp.config_columns if c not in FINALIST_KEYS]
    search = part(~final, search_columns)
    search = search._replace(frame=search.frame.drop(columns=[c for c in (RECIPE_KEY, SOURCE_KEY)
                                                              if c in search.frame.columns]),
                             trials=search.trials.drop(columns=[c for c in (RECIPE_KEY, SOURCE_KEY)
                                                                if c in search.trials.columns]))
    return search, part(final, list(exp.config_columns))
