"""A trial that ended before its driver died stays ended on ``--resume``.

Ray saves the experiment's state every 10 s or so and at trial checkpoints, not when a trial ends.
A driver killed between a trial's last report and the next save comes back believing the trial
still runs, and restarts it: from scratch when the saved state predates its checkpoints (a finished
trial trains again and a second run replaces its figures), or from the checkpoint the saved state
names, whose resumable state ``tl.search.disk.ReleaseResumableState`` may already have removed (an
ASHA-stopped trial would then fail). So every checkpoint carries the metrics its epoch was reported
with, and a (re)started trial first looks at its own folder: a newest checkpoint with test figures
(the trial finished) or without resumable state (the trial ended) is reported again as it was, and
the trial returns without training.
"""
from __future__ import annotations

import json
from pathlib import Path

from tl.core.columns import is_tested
from tl.core.results.files import BEST_WEIGHTS_FILE, REPORTED_METRICS_FILE, RESUME_STATE_FILE


def write_reported_metrics(metrics: dict, directory: Path) -> None:
    """Save ``metrics`` (one epoch's report) into the checkpoint ``directory`` it is reported with."""
    plain = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
    (directory / REPORTED_METRICS_FILE).write_text(json.dumps(plain, allow_nan=True))


def _newest_checkpoint(trial_dir: str | None) -> Path | None:
    if not trial_dir or "://" in str(trial_dir) or not Path(trial_dir).is_dir():
        return None  # remote storage: Ray restores what it knows; nothing to look at from here
    checkpoints = sorted(p for p in Path(trial_dir).glob("checkpoint_*") if p.is_dir())
    return checkpoints[-1] if checkpoints else None


def ended_metrics(restore_dir: str | None, trial_dir: str | None) -> dict | None:
    """The metrics to report again if this trial had already ended, else None (train as usual).

    ``restore_dir`` is the checkpoint Ray restores (None for a fresh start); ``trial_dir`` the trial's
    folder in storage, looked at when Ray gives no checkpoint."""
    checkpoint = Path(restore_dir) if restore_dir else _newest_checkpoint(trial_dir)
    if checkpoint is None or not (checkpoint / REPORTED_METRICS_FILE).is_file():
        return None  # a checkpoint written before reported metrics were saved: Ray's behaviour as it was
    metrics = json.loads((checkpoint / REPORTED_METRICS_FILE).read_text())
    finished = is_tested(metrics)  # only a trial's last epoch reports test figures
    released = (checkpoint / BEST_WEIGHTS_FILE).is_file() and not (checkpoint / RESUME_STATE_FILE).is_file()
    return metrics if finished or released else None
