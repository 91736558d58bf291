"""Find experiment folders and read their experiment-level files (ours and Ray Tune's).

An experiment folder is ``<storage>/<name>/`` as Ray Tune 2.x writes it: it holds our
``tl_search.json`` and/or one directory per trial (any subdirectory with ``params.json``).
Ray's ``experiment_state-*.json`` is read only for trial statuses, as plain JSON (its
cloudpickle blobs are never unpickled); it is an internal format, so every failure to read it
just means "status unknown".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from tl.finalists import FINALIST_DIR  # pure module: the folder name has one home

SEARCH_FILE = "tl_search.json"
TRIAL_MARKER = "params.json"
STATE_GLOB = "experiment_state-*.json"
# What we assume when tl_search.json is missing: the search's documented default.
DEFAULT_METRIC = "val_acc"
DEFAULT_MODE = "max"


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
        AnalysisError: it does not exist or is not an experiment folder; the message names the
            experiment folders inside it when it looks like a storage folder.
    """
    if not path.exists():
        raise AnalysisError(f"{path} does not exist")
    if not path.is_dir():
        raise AnalysisError(f"{path} is not a directory")
    if is_experiment_dir(path):
        return path.resolve()
    inner = sorted(p.name for p in path.iterdir() if is_experiment_dir(p))
    hint = f"; it contains experiment folders: {', '.join(inner)}" if inner else ""
    raise AnalysisError(
        f"{path} is not an experiment folder (no {SEARCH_FILE} and no trial directory "
        f"with {TRIAL_MARKER}){hint}"
    )


def newest_experiment(root: Path) -> Path:
    """Return the most recently modified experiment folder directly under ``root``.

    Raises:
        AnalysisError: ``root`` is missing or holds no experiment folder.
    """
    if not root.is_dir():
        raise AnalysisError(f"no experiment folder given and {root} does not exist")
    candidates = [p for p in root.iterdir() if is_experiment_dir(p)]
    if not candidates:
        raise AnalysisError(f"no experiment folder given and none found under {root}")
    return max(candidates, key=_last_modified).resolve()


def _last_modified(path: Path) -> float:
    # A folder's own mtime only moves when entries are added; state files are rewritten often.
    return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])


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
        raise AnalysisError(f"{path}: mode must be 'max' or 'min', got {meta['mode']!r}")
    return meta, notes


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
