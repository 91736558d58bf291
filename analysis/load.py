"""Read trial folders into one tidy frame (trial x epoch) plus one row per trial and predictions.

Per trial folder (Ray Tune's layout): ``params.json`` (flat config), ``result.json`` (one JSON
line per reported epoch; ``progress.csv`` as fallback), ``error.txt`` if the trial failed and
``test_predictions.npz`` (in the folder or its newest ``checkpoint_*/``). Trials of the finalist
stage sit one level down, in ``finalists/``; their ``stage`` column says ``finalist``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.experiments import (
    FINALIST_DIR,
    SEARCH_FILE,
    check_experiment_dir,
    read_ray_statuses,
    read_search_meta,
    trial_dirs,
)

PREDICTIONS_FILE = "test_predictions.npz"
# Sampler bookkeeping in params.json, not hyperparameters.
DROPPED_PARAM_PREFIX = "weights_for_"
# Ray's per-row bookkeeping that says nothing about the trial; "config" repeats params.json.
RAY_NOISE_COLUMNS = (
    "config", "date", "hostname", "node_ip", "pid", "checkpoint_dir_name",
    "should_checkpoint", "time_since_restore", "iterations_since_restore", "node_id",
)
# A result column named like a config key (e.g. the epoch's ``lr`` vs the configured ``lr``)
# is renamed with this prefix so the config column keeps its name.
COLLISION_PREFIX = "epoch_"
# Trial statuses we assign; Ray's own statuses map onto these.
COMPLETED, STOPPED, ERROR, RUNNING, PENDING, UNKNOWN = (
    "COMPLETED", "STOPPED", "ERROR", "RUNNING", "PENDING", "STOPPED/RUNNING",
)
# Trial ids in folder names: Ray's default "<trainable>_<id>_<n>_<tag>_<date>", or a custom
# name that starts with the id (tl's "<id>_<backbone>_<weights>_<freeze>").
_TRIAL_ID = re.compile(r"^([0-9a-f]{8})_|_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_\d+_")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Predictions(NamedTuple):
    """Saved test-split outputs of one trial, rows in the dataset's fixed test order."""

    probs: np.ndarray  # (N, C) softmax probabilities; multilabel: (N, K) sigmoid per finding
    labels: np.ndarray  # (N,) true class indices; multilabel: (N, K) multi-hot
    fingerprint: str = ""  # tl's test_fingerprint: equal means the same test split ("" unknown)

    @property
    def multilabel(self) -> bool:
        return np.ndim(self.labels) == 2

    @property
    def correct(self) -> np.ndarray:
        """Boolean (N,): whether the argmax prediction equals the label; multilabel: whether every
        finding is right at 0.5 (exact match)."""
        if self.multilabel:
            return ((self.probs >= 0.5) == self.labels.astype(bool)).all(axis=1)
        return self.probs.argmax(axis=1) == self.labels


class Experiment(NamedTuple):
    """Everything read from one or more experiment folders."""

    frame: pd.DataFrame  # tidy: one row per (trial, epoch), config flattened into columns
    trials: pd.DataFrame  # one row per trial, including trials that never reported an epoch
    predictions: dict[str, Predictions]  # by trial key
    meta: dict[str, Any]  # tl_search.json of the first experiment, metric/mode filled in
    config_columns: list[str]  # hyperparameter columns (params.json keys we keep)
    notes: list[str]  # per-trial problems worth telling the user


def positive_index(meta: dict) -> int:
    """The index of the binary task's positive class from ``tl_search.json`` (1 when not recorded)."""
    dataset = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    positive = dataset.get("positive_class")
    return 1 if positive is None else int(positive)


def read_params(trial_dir: Path) -> dict[str, Any]:
    """Return the trial's config from ``params.json`` without the ``weights_for_*`` keys.

    Non-scalar values become JSON strings so they fit in one column.
    """
    try:
        params = json.loads((trial_dir / "params.json").read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{trial_dir / 'params.json'}: unreadable ({exc})") from exc
    if not isinstance(params, dict):
        raise AnalysisError(f"{trial_dir / 'params.json'}: not a JSON object")
    return {
        k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
        for k, v in params.items()
        if not k.startswith(DROPPED_PARAM_PREFIX)
    }


def read_result_rows(trial_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Return the rows of the trial's ``result.json`` as written, and the number of unreadable lines.

    Every Ray column is kept and nothing is sorted or merged, so callers can check what Ray wrote
    (tests, benchmarks). A half-written last line of a running trial, or a line cut short by a
    killed writer, is counted as unreadable and skipped. No ``result.json`` gives ``([], 0)``.
    """
    rows: list[dict[str, Any]] = []
    bad = 0
    result_file = trial_dir / "result.json"
    if not result_file.is_file():
        return rows, bad
    for line in result_file.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows, bad


def read_results(trial_dir: Path) -> tuple[pd.DataFrame, int]:
    """Return the trial's reported rows sorted by ``epoch`` and the number of unreadable lines.

    Reads ``result.json`` (JSON lines, see :func:`read_result_rows`), falling back to
    ``progress.csv``; a half-written last line of a running trial is skipped. ``epoch`` falls
    back to ``training_iteration``; a repeated epoch (a restored trial) keeps its last report.
    """
    rows, bad = read_result_rows(trial_dir)
    frame = pd.DataFrame(rows)
    if frame.empty and (trial_dir / "progress.csv").is_file():
        try:
            frame = pd.read_csv(trial_dir / "progress.csv")
        except (ValueError, OSError):
            frame = pd.DataFrame()
    if frame.empty:
        return pd.DataFrame(), bad
    frame = frame.drop(columns=[c for c in RAY_NOISE_COLUMNS if c in frame.columns])
    if "epoch" not in frame.columns and "training_iteration" in frame.columns:
        frame["epoch"] = frame["training_iteration"]
    if "epoch" not in frame.columns:
        frame["epoch"] = np.arange(1, len(frame) + 1)
    frame["epoch"] = pd.to_numeric(frame["epoch"], errors="coerce")
    frame = frame.dropna(subset=["epoch"]).astype({"epoch": int})
    frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch")
    return frame.reset_index(drop=True), bad


def find_predictions_file(trial_dir: Path, name: str = PREDICTIONS_FILE) -> Path | None:
    """Return ``name`` (``test_predictions.npz``) of the trial folder, else of its newest ``checkpoint_*/``."""
    direct = trial_dir / name
    if direct.is_file():
        return direct
    checkpoints = sorted(p for p in trial_dir.glob("checkpoint_*") if (p / name).is_file())
    return checkpoints[-1] / name if checkpoints else None


def read_predictions(path: Path) -> Predictions:
    """Load and check a ``test_predictions.npz`` (``probs`` (N, C), ``labels`` (N,); multilabel:
    ``probs`` and ``labels`` both (N, K), labels 0/1).

    Raises:
        AnalysisError: the file is unreadable or the arrays have the wrong shapes.
    """
    try:
        with np.load(path) as data:
            probs = np.asarray(data["probs"], dtype=np.float64)
            labels = np.asarray(data["labels"]).astype(np.int64)
            if labels.ndim != 2 or labels.shape != probs.shape:  # single-label: (N,) or (N, 1)
                labels = labels.reshape(-1)
            fingerprint = str(data["test_fingerprint"]) if "test_fingerprint" in data.files else ""
    except (OSError, ValueError, KeyError) as exc:
        raise AnalysisError(f"{path}: unreadable test predictions ({exc})") from exc
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or probs.shape[1] < 2:
        raise AnalysisError(
            f"{path}: probs must be (N, C>=2) and labels (N,), got {probs.shape} and {labels.shape}"
        )
    if labels.ndim == 2:
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise AnalysisError(f"{path}: multilabel labels must be 0 or 1")
    elif labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise AnalysisError(f"{path}: labels must be in [0, {probs.shape[1] - 1}]")
    return Predictions(probs, labels, fingerprint)


def read_error(trial_dir: Path) -> str | None:
    """Return the last line of ``error.txt`` (the exception), or None if the trial did not fail."""
    path = trial_dir / "error.txt"
    if not path.is_file():
        return None
    lines = [_ANSI.sub("", ln).strip() for ln in path.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return (lines[-1][:200] if lines else "error.txt is empty")


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
        notes.append(f"trial {trial_id}: skipped {bad_lines} unreadable line(s) of result.json")
    error = read_error(trial_dir)
    ray_status = ray_statuses.get(trial_id, ray_statuses.get(trial_dir.name))
    last = results.iloc[-1] if len(results) else pd.Series(dtype=object)
    planned = pd.to_numeric(pd.Series([params.get("epochs", meta.get("max_epochs"))]),
                            errors="coerce").iloc[0]
    status = trial_status(
        failed=error is not None,
        has_test=bool(pd.notna(last.get("test_acc"))),
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
        except AnalysisError as exc:
            notes.append(f"trial {trial_id}: {exc}")
    elif status == COMPLETED:
        notes.append(f"trial {trial_id} (completed): no {PREDICTIONS_FILE} in its folder or "
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
        raise AnalysisError(f"{path} has no trials yet (no subfolder with params.json)")
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
        AnalysisError: a path is not an experiment folder, has no trials, or no trial at all
            reported an epoch.
    """
    if not paths:
        raise AnalysisError("no experiment folder given")
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
        raise AnalysisError(f"no trial in {where} has reported an epoch yet "
                            f"({len(trials)} trial folder(s), statuses: "
                            f"{', '.join(sorted(set(trials['status'])))})")
    return Experiment(frame, trials, predictions, meta, config_columns, notes)


def _test_fingerprint(meta: dict) -> str:
    dataset = meta.get("dataset")
    return str(dataset.get("test_fingerprint") or "") if isinstance(dataset, dict) else ""


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


__all__ = [
    "Experiment", "Predictions", "PREDICTIONS_FILE", "SEARCH_FILE", "load_experiments",
    "read_params", "read_result_rows", "read_results", "read_predictions", "find_predictions_file", "read_error",
    "trial_status",
]
