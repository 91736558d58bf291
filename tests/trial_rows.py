"""A trial's result.json rows for the live-search tests, read by tl.core.results (one parser for all)."""
from __future__ import annotations

from pathlib import Path

from tl.core.results import read_result_rows


def read_rows(trial_dir: Path) -> list[dict]:
    """Every complete row as Ray wrote it; a last line cut short (being written, or its writer killed) is skipped."""
    return read_result_rows(trial_dir)[0]
