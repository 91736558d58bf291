"""A trial's result.json rows for the live-search tests, read by tl.core.results (one parser for all)."""
from __future__ import annotations

from pathlib import Path

from tl.core.results import read_result_rows


def read_rows(trial_dir: Path) -> list[dict]:
    """Every complete row as Ray wrote it; a last line cut short (being written, or its writer killed) is skipped."""
    return read_result_rows(trial_dir)[0]


# What Ray adds to each row about when, where and how often it was reported, not what the trial measured.
RAY_BOOKKEEPING = ("config", "date", "hostname", "node_ip", "pid", "checkpoint_dir_name", "should_checkpoint",
                   "time_since_restore", "iterations_since_restore", "timestamp", "training_iteration",
                   "time_total_s", "time_this_iter_s", "done")


def trained_rows(rows: list[dict]) -> list[dict]:
    """The rows a trial's training produced: Ray's bookkeeping dropped, and a row that repeats the one
    before it removed (a trial that had ended before its driver died reports its last row again on
    ``--resume``, ``tl.train.ended``, without training)."""
    measured = [{k: v for k, v in r.items() if k not in RAY_BOOKKEEPING} for r in rows]
    return [r for i, r in enumerate(measured) if i == 0 or r != measured[i - 1]]
