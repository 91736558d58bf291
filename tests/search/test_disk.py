"""A search's disk (issue 28): one checkpoint per trial, the resumable state released when a trial
ends, the footprint estimated before the first trial, the folder's size said at the end."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tl.core.results import BEST_WEIGHTS_FILE, RESUME_STATE_FILE
from tl.search.disk import ReleaseResumableState, estimate, storage_warning, weights_bytes
from tl.search.space import load_space


def test_a_finished_trial_keeps_its_best_weights_and_drops_its_resumable_state(tmp_path: Path):
    trial_dir = tmp_path / "trial"
    (trial_dir / "checkpoint_000002").mkdir(parents=True)
    for name, size in ((RESUME_STATE_FILE, 300), (BEST_WEIGHTS_FILE, 100), ("test_predictions.npz", 10)):
        (trial_dir / "checkpoint_000002" / name).write_bytes(b"x" * size)
    ReleaseResumableState().on_trial_complete(iteration=3, trials=[], trial=SimpleNamespace(path=str(trial_dir)))
    left = sorted(p.name for p in (trial_dir / "checkpoint_000002").iterdir())
    assert left == [BEST_WEIGHTS_FILE, "test_predictions.npz"], left


def test_remote_storage_is_left_alone(tmp_path: Path):
    ReleaseResumableState().on_trial_complete(iteration=1, trials=[], trial=SimpleNamespace(path="s3://b/exp/t"))


def test_weights_are_counted_without_building_them_in_memory():
    # ResNet-18: 11.7 M float32 parameters (torchvision's figure) plus BatchNorm buffers.
    assert 44_000_000 < weights_bytes("resnet18", num_classes=1000) < 47_500_000
    assert weights_bytes("resnet18", 2) < weights_bytes("resnet18", 1000)


def test_a_short_disk_gets_a_warning_with_both_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    space = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "xray.py")
    est = estimate(space, concurrent=2)
    largest = max(weights_bytes(b) for b in space.backbones)
    assert est.needed >= space.num_samples * largest + 2 * 3 * largest, est
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(free=est.needed - 1, total=0, used=0))
    warning = storage_warning(str(tmp_path), est)
    assert warning and str(tmp_path) in warning and "free" in warning and "may need about" in warning, warning
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(free=est.needed, total=0, used=0))
    assert storage_warning(str(tmp_path), est) is None
    assert storage_warning("s3://bucket/results", est) is None
