"""Read a trial's result.json while a live search may still be appending to it."""
from __future__ import annotations

import json
from pathlib import Path


def read_rows(trial_dir: Path) -> list[dict]:
    """Every complete row; a last line cut short (being written, or its writer killed) is skipped."""
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows
