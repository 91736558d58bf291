"""The experiment folder's format: one owner for every file name, writer and reader in it.

An experiment folder is ``<storage>/<name>/`` as Ray Tune 2.x writes it, plus what tl adds:
``tl_search.json`` (the space, arguments, dataset and split audit; written by ``tl.search``),
``split_audit.npz`` (duplicate pairs' thumbnails), ``test_subgroups.csv`` (each test image's
subgroups, when the search was given ``--subgroup-columns``), one folder per trial (``params.json``,
``result.json``, ``error.txt``, ``test_predictions.npz`` and ``val_predictions.npz`` beside its
``checkpoint_*/``), the finalist stage's Tuner in ``finalists/``, and ``explain/`` (the Grad-CAM grid,
and the val and test features with their val-vs-test classifier, that ``tl.export`` wrote). Ray's
``experiment_state-*.json`` is read only for trial statuses, as plain
JSON (its cloudpickle blobs are never unpickled); it is an internal format, so every failure to read
it just means "status unknown". Pure Python, numpy and pandas.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from tl.core.columns import DEFAULT_METRIC, DEFAULT_MODE
from tl.core.errors import TLError

SEARCH_FILE = "tl_search.json"
AUDIT_FILE = "split_audit.npz"  # thumbnails of the duplicate pairs the split audit found
SUBGROUPS_FILE = "test_subgroups.csv"  # each test image's subgroups (--subgroup-columns; tl.core.subgroups)
# A trial folder's files (Ray writes params, result and progress; the trainable the rest).
PARAMS_FILE, RESULT_FILE, PROGRESS_FILE, ERROR_FILE = "params.json", "result.json", "progress.csv", "error.txt"
TRIAL_MARKER = PARAMS_FILE
# A checkpoint's files: the best-by-val weights, and the state a resumed trial continues from.
BEST_WEIGHTS_FILE, RESUME_STATE_FILE = "best_model.pt", "state.pt"
# ... and the metrics the checkpoint's epoch was reported with (tl.train.ended: a trial that ended stays ended).
REPORTED_METRICS_FILE = "reported_metrics.json"
STATE_GLOB = "experiment_state-*.json"
# Saved once a trial is tested, from its best-by-val epoch, in the trial folder and its checkpoint.
PREDICTION_KEYS = ("test_predictions", "val_predictions")
PREDICTION_FILES = {key: f"{key}.npz" for key in PREDICTION_KEYS}
TEST_PREDICTIONS, VAL_PREDICTIONS = PREDICTION_FILES.values()
# Files of the chosen trial logged to its MLflow run (what analysis.summarize needs to rebuild its row).
CHOSEN_ARTIFACTS = (PARAMS_FILE, RESULT_FILE, PROGRESS_FILE, TEST_PREDICTIONS)
FINALIST_DIR = "finalists"  # the finalist stage's Tuner folder inside the experiment folder
STAGE_KEY, STAGE = "stage", "finalist"  # config keys that mark a finalist trial
RECIPE_KEY, SOURCE_KEY = "recipe_id", "source_trial"
# config keys of a cross-validation fold trial (--cv K): its fold, the fold count and the folds' seed
FOLD_KEY, FOLDS_KEY, FOLD_SEED_KEY = "cv_fold", "cv_k", "cv_seed"
# keys a fold trial saves beside its val (out-of-fold) predictions: pooled train+val rows, patient groups
OOF_ROWS, OOF_GROUPS = "rows", "groups"
EXPLAIN_DIR = "explain"  # what tl.export draws into the experiment: the Grad-CAM grid and its trials
GRADCAM_GRID, GRADCAM_RECORD = "gradcam_test.png", "gradcam.json"
# The recommended model's val and test features and its val-vs-test classifier (tl.core.shift), with its trials.
SHIFT_FEATURES, SHIFT_RECORD = "shift_features.npz", "shift.json"
# Sampler bookkeeping in params.json, not hyperparameters.
DROPPED_PARAM_PREFIX = "weights_for_"
# Ray's per-row bookkeeping that says nothing about the trial; "config" repeats params.json.
RAY_NOISE_COLUMNS = (
    "config", "date", "hostname", "node_ip", "pid", "checkpoint_dir_name",
    "should_checkpoint", "time_since_restore", "iterations_since_restore", "node_id",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Predictions(NamedTuple):
    """Saved outputs of one trial on one split (test or val), rows in the dataset's fixed order."""

    probs: np.ndarray  # (N, C) softmax probabilities; multilabel: (N, K) sigmoid per finding
    labels: np.ndarray  # (N,) true class indices; multilabel: (N, K) multi-hot
    fingerprint: str = ""  # the split's fingerprint: equal means the same images in the same order ("" unknown)

    @property
    def multilabel(self) -> bool:
        return np.ndim(self.labels) == 2

    @property
    def correct(self) -> np.ndarray:
        """Boolean (N,): the image is right (argmax; multilabel: every finding at 0.5, exact match)."""
        from tl.core.metrics import correct_mask

        return correct_mask(self.probs, self.labels)


def mean_predictions(predictions: list[Predictions], what: str = "the trials") -> Predictions:
    """Average the probabilities of several models' predictions on one split (an ensemble).

    Raises:
        TLError: no predictions, or they are not of one split (fingerprints, labels or shapes
            differ): averaging them would mix images.
    """
    if not predictions:
        raise TLError(f"{what}: no saved predictions to average")
    known = {p.fingerprint for p in predictions if p.fingerprint}
    if len(known) > 1:
        raise TLError(f"{what}: split fingerprints differ ({', '.join(sorted(known))}): not one split, no ensemble")
    first = predictions[0]
    if any(p.probs.shape != first.probs.shape or not np.array_equal(p.labels, first.labels) for p in predictions):
        raise TLError(f"{what}: labels differ: not one split, no ensemble")
    probs = np.mean(np.stack([np.asarray(p.probs, dtype=np.float64) for p in predictions]), axis=0)
    return Predictions(probs, first.labels, next(iter(known), ""))


# --- tl_search.json --------------------------------------------------------------------------------

def write_search_meta(experiment: Path, meta: dict) -> None:
    """Write ``tl_search.json`` atomically (a temp file renamed): a reader never sees half of it."""
    path = experiment / SEARCH_FILE
    tmp = path.with_name(f".{SEARCH_FILE}.part")
    tmp.write_text(json.dumps(meta, indent=1, default=str))
    os.replace(tmp, path)


def update_search_meta(experiment: Path, key: str, value: Any) -> None:
    """Set one entry of an existing ``tl_search.json`` (the finalist stage records its plan)."""
    meta = json.loads((experiment / SEARCH_FILE).read_text())
    meta[key] = value
    write_search_meta(experiment, meta)


def read_search_meta(experiment: Path) -> tuple[dict[str, Any], list[str]]:
    """Read ``tl_search.json``, filling ``metric`` and ``mode`` with defaults when unknown.

    Returns:
        The metadata dict (``{}`` plus defaults if the file is missing) and notes for the user.
    """
    notes: list[str] = []
    path = experiment / SEARCH_FILE
    meta: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            notes.append(f"{path}: unreadable ({exc}); search settings unknown")
        else:
            if isinstance(loaded, dict):
                meta = loaded
            else:
                notes.append(f"{path}: not a JSON object; search settings unknown")
    else:
        notes.append(f"{experiment.name}: no {SEARCH_FILE}; assuming metric "
                     f"{DEFAULT_METRIC} ({DEFAULT_MODE})")
    meta.setdefault("metric", DEFAULT_METRIC)
    meta.setdefault("mode", DEFAULT_MODE)
    if meta["mode"] not in ("max", "min"):
        raise TLError(f"{path}: mode must be 'max' or 'min', got {meta['mode']!r}")
    return meta, notes



def dataset_record(meta: dict) -> dict:
    """The ``dataset`` entry of ``tl_search.json`` ({} when absent or malformed)."""
    return meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}


def positive_index(meta: dict) -> int:
    """The index of the binary task's positive class from ``tl_search.json`` (1 when not recorded)."""
    positive = dataset_record(meta).get("positive_class")
    return 1 if positive is None else int(positive)


# --- experiment and trial folders ----------------------------------------------------------------

def trial_dirs(experiment: Path) -> list[Path]:
    """Return the trial directories of one experiment (subfolders holding ``params.json``), sorted.

    Args:
        experiment: the experiment folder.
    """
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / TRIAL_MARKER).is_file())


def is_experiment_dir(path: Path) -> bool:
    """Return True if ``path`` holds ``tl_search.json`` or at least one trial directory."""
    return path.is_dir() and ((path / SEARCH_FILE).is_file() or bool(trial_dirs(path)))


def check_experiment_dir(path: Path) -> Path:
    """Return ``path`` resolved if it is an experiment folder.

    Raises:
        TLError: it does not exist or is not an experiment folder; the message names the
            experiment folders inside it when it looks like a storage folder.
    """
    if not path.exists():
        raise TLError(f"{path} does not exist")
    if not path.is_dir():
        raise TLError(f"{path} is not a directory")
    if is_experiment_dir(path):
        return path.resolve()
    inner = sorted(p.name for p in path.iterdir() if is_experiment_dir(p))
    hint = f"; it contains experiment folders: {', '.join(inner)}" if inner else ""
    raise TLError(
        f"{path} is not an experiment folder (no {SEARCH_FILE} and no trial directory "
        f"with {TRIAL_MARKER}){hint}"
    )


def newest_experiment(root: Path) -> Path:
    """Return the most recently modified experiment folder directly under ``root``.

    Raises:
        TLError: ``root`` is missing or holds no experiment folder.
    """
    if not root.is_dir():
        raise TLError(f"no experiment folder given and {root} does not exist")
    candidates = [p for p in root.iterdir() if is_experiment_dir(p)]
    if not candidates:
        raise TLError(f"no experiment folder given and none found under {root}")
    return max(candidates, key=_last_modified).resolve()


def _last_modified(path: Path) -> float:
    # A folder's own mtime only moves when entries are added; state files are rewritten often.
    return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])


def read_ray_statuses(experiment: Path) -> dict[str, str]:
    """Return Ray's trial statuses from the newest ``experiment_state-*.json``.

    Returns:
        A map from trial id and from trial folder name to Ray's status (``PENDING``,
        ``RUNNING``, ``PAUSED``, ``TERMINATED``, ``ERROR``); empty when the file is missing or
        not in the expected shape.
    """
    files = sorted(experiment.glob(STATE_GLOB))
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
        statuses: dict[str, str] = {}
        for trial_json, _runtime_json in state["trial_data"]:
            trial = json.loads(trial_json)
            statuses[str(trial["trial_id"])] = str(trial["status"])
            if trial.get("relative_logdir"):
                statuses[str(trial["relative_logdir"])] = str(trial["status"])
        return statuses
    except (OSError, ValueError, KeyError, TypeError):
        return {}


# --- a trial folder's files ----------------------------------------------------------------------

def read_params(trial_dir: Path) -> dict[str, Any]:
    """Return the trial's config from ``params.json`` without the ``weights_for_*`` keys.

    Non-scalar values become JSON strings so they fit in one column.
    """
    try:
        params = json.loads((trial_dir / PARAMS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise TLError(f"{trial_dir / PARAMS_FILE}: unreadable ({exc})") from exc
    if not isinstance(params, dict):
        raise TLError(f"{trial_dir / PARAMS_FILE}: not a JSON object")
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
    result_file = trial_dir / RESULT_FILE
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
    if frame.empty and (trial_dir / PROGRESS_FILE).is_file():
        try:
            frame = pd.read_csv(trial_dir / PROGRESS_FILE)
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




def save_predictions(predictions: dict[str, dict], directory: Path) -> None:
    """Write ``<key>.npz`` for each of ``PREDICTION_KEYS`` present in ``predictions`` (probs, labels,
    fingerprints); the trainable calls it for the checkpoint and for the trial folder."""
    for key in PREDICTION_KEYS:
        if key in predictions:
            np.savez(directory / PREDICTION_FILES[key], **predictions[key])


def find_predictions_file(trial_dir: Path, name: str = TEST_PREDICTIONS) -> Path | None:
    """Return ``name`` of the trial folder, else of its newest ``checkpoint_*/`` holding one."""
    direct = trial_dir / name
    if direct.is_file():
        return direct
    checkpoints = sorted(p for p in trial_dir.glob("checkpoint_*") if (p / name).is_file())
    return checkpoints[-1] / name if checkpoints else None


def read_predictions(path: Path) -> Predictions:
    """Load and check a ``test_predictions.npz`` or ``val_predictions.npz`` (``probs`` (N, C),
    ``labels`` (N,); multilabel: both (N, K), labels 0/1) with its split's fingerprint.

    Raises:
        TLError: the file is unreadable or the arrays have the wrong shapes.
    """
    split = "val" if Path(path).name == VAL_PREDICTIONS else "test"
    try:
        with np.load(path) as data:
            probs = np.asarray(data["probs"], dtype=np.float64)
            labels = np.asarray(data["labels"]).astype(np.int64)
            if labels.ndim != 2 or labels.shape != probs.shape:  # single-label: (N,) or (N, 1)
                labels = labels.reshape(-1)
            key = f"{split}_fingerprint"
            fingerprint = str(data[key]) if key in data.files else ""
    except (OSError, ValueError, KeyError) as exc:
        raise TLError(f"{path}: unreadable {split} predictions ({exc})") from exc
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0] or probs.shape[1] < 2:
        raise TLError(f"{path}: probs must be (N, C>=2) and labels (N,), got {probs.shape} and {labels.shape}")
    if labels.ndim == 2:
        if labels.size and not np.isin(labels, (-1, 0, 1)).all():
            raise TLError(f"{path}: multilabel labels must be 0 or 1 (-1: uncertain, left out)")
    elif labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise TLError(f"{path}: labels must be in [0, {probs.shape[1] - 1}]")
    return Predictions(probs, labels, fingerprint)


def read_trial_predictions(trial_dir: Path, split: str) -> Predictions | None:
    """The trial's saved predictions on ``split`` (test or val), or None if it saved none."""
    path = find_predictions_file(trial_dir, VAL_PREDICTIONS if split == "val" else TEST_PREDICTIONS)
    return None if path is None else read_predictions(path)


def read_error(trial_dir: Path) -> str | None:
    """Return the last line of ``error.txt`` (the exception), or None if the trial did not fail."""
    path = trial_dir / ERROR_FILE
    if not path.is_file():
        return None
    lines = [_ANSI.sub("", ln).strip() for ln in path.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return (lines[-1][:200] if lines else "error.txt is empty")

