"""A search's disk: what it will need, what it keeps, and how big it ended up.

A running trial keeps one resumable checkpoint (Ray's ``CheckpointConfig(num_to_keep=1)``: the
latest, which also holds the best-by-val weights, ``best_model.pt``). The resumable part,
``state.pt`` (weights, optimizer moments, scheduler, RNG), is worth keeping only while the trial may
continue: when a trial ends (finished, or stopped by ASHA), ``ReleaseResumableState`` removes it,
and what export, ensembles, Grad-CAM and the report read stays (best weights, predictions,
metrics). A trial that errored keeps its state, so ``--resume`` can continue it.

Before the first trial the search estimates what it needs from the models' sizes, the trials and
how many run at once, and warns when ``--storage`` has less free.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from ray import tune

from tl.core.results import RESUME_STATE_FILE
from tl.data.store.layout import folder_bytes, human_bytes
from tl.search.space import SearchSpace

MB = 1024 ** 2
SLACK_BYTES = 20 * MB  # predictions, results, the experiment state: what is not weights
# state.pt holds the weights and, for Adam(W), two moments per weight: 3x the weights, an upper
# bound for SGD with momentum (2x).
STATE_TO_WEIGHTS = 3


def weights_bytes(backbone: str, num_classes: int = 2) -> int:
    """float32 bytes of one model's weights, built on PyTorch's meta device (no memory, no download)."""
    import torch

    from tl.train.models import build_model

    with torch.device("meta"):
        model = build_model(backbone, num_classes)
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


class Estimate(NamedTuple):
    """What a search will write: ``needed`` bytes at its peak, and how that figure is made."""

    needed: int
    how: str


def estimate(space: SearchSpace, concurrent: int) -> Estimate:
    """The search's peak footprint: every trial's best weights kept (the largest backbone's, an upper
    bound), plus the resumable state of the trials running at once, plus the finalists, plus slack."""
    largest = max(weights_bytes(b) for b in space.backbones)
    trials = space.num_samples + space.stage_trials()
    running = max(1, min(concurrent, space.num_samples))
    needed = trials * largest + running * STATE_TO_WEIGHTS * largest + SLACK_BYTES
    how = (f"{trials} trials x best weights up to {human_bytes(largest)} + {running} running x resumable state "
           f"{human_bytes(STATE_TO_WEIGHTS * largest)} + {human_bytes(SLACK_BYTES)}")
    return Estimate(needed, how)


def storage_warning(storage: str, est: Estimate) -> str | None:
    """A warning when local ``storage`` has less free space than ``est`` needs, else None."""
    if "://" in storage:
        return None
    free = shutil.disk_usage(storage).free
    if free >= est.needed:
        return None
    return (f"--storage {storage} has {human_bytes(free)} free; this search may need about {human_bytes(est.needed)} "
            f"({est.how}): free space, or pass --storage on a larger disk")


def size_line(folder: Path) -> str:
    """The experiment folder's size, and how much of it is best weights."""
    best = sum(p.stat().st_size for p in folder.rglob("best_model.pt"))
    return f"experiment folder {human_bytes(folder_bytes(folder))} on disk, {human_bytes(best)} of it best-by-val weights"


class ReleaseResumableState(tune.Callback):
    """Remove a finished trial's resumable state (``state.pt``) from its checkpoint; keep the rest.

    Called on the driver when Tune marks a trial complete (all its epochs, or stopped by ASHA); an
    errored trial keeps its state for ``--resume``. Only storage this machine can see (a path).
    """

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        path = getattr(trial, "path", None)
        if not path or "://" in str(path) or not Path(path).is_dir():
            return
        for state in Path(path).glob(f"checkpoint_*/{RESUME_STATE_FILE}"):
            try:
                state.unlink()
            except OSError:
                pass
