"""A trial that ended before its driver died is reported again, not trained again (tl.train.ended)."""
from __future__ import annotations

import json

import numpy as np

from tl.core.results.files import BEST_WEIGHTS_FILE, REPORTED_METRICS_FILE, RESUME_STATE_FILE
from tl.train.ended import ended_metrics, write_reported_metrics

LAST = {"epoch": 3, "val_acc": 0.75, "test_acc": 0.7, "test_n": 120, "val_auc": float("nan"), "node_id": "n1"}
MIDWAY = {"epoch": 1, "val_acc": 0.6}


def _checkpoint(folder, metrics, state=True):
    folder.mkdir(parents=True)
    (folder / BEST_WEIGHTS_FILE).write_bytes(b"w")
    if state:
        (folder / RESUME_STATE_FILE).write_bytes(b"s")
    if metrics is not None:
        write_reported_metrics(metrics, folder)
    return folder


def test_a_finished_checkpoint_is_reported_again_as_it_was(tmp_path):
    restored = ended_metrics(str(_checkpoint(tmp_path / "checkpoint_000002", LAST)), None)
    assert restored["test_n"] == 120 and restored["test_acc"] == 0.7 and restored["node_id"] == "n1"
    assert restored["val_auc"] != restored["val_auc"], "NaN survives the round trip"


def test_a_checkpoint_whose_resumable_state_was_released_ended_the_trial(tmp_path):
    assert ended_metrics(str(_checkpoint(tmp_path / "c", MIDWAY, state=False)), None) == MIDWAY


def test_a_running_trials_checkpoint_resumes_training(tmp_path):
    assert ended_metrics(str(_checkpoint(tmp_path / "c", MIDWAY)), None) is None


def test_a_checkpoint_from_before_reported_metrics_keeps_rays_behaviour(tmp_path):
    assert ended_metrics(str(_checkpoint(tmp_path / "c", None, state=False)), None) is None


def test_a_fresh_start_looks_at_the_newest_checkpoint_in_its_own_folder(tmp_path):
    trial = tmp_path / "trial"
    _checkpoint(trial / "checkpoint_000000", MIDWAY)
    assert ended_metrics(None, str(trial)) is None
    _checkpoint(trial / "checkpoint_000002", LAST)
    assert ended_metrics(None, str(trial))["epoch"] == 3
    assert ended_metrics(None, str(tmp_path / "new_trial")) is None
    assert ended_metrics(None, "s3://bucket/exp/trial") is None, "remote storage: Ray restores what it knows"


def test_reported_metrics_are_plain_json(tmp_path):
    write_reported_metrics({"val_acc": np.float32(0.5), "epoch": np.int64(2)}, tmp_path)
    assert json.loads((tmp_path / REPORTED_METRICS_FILE).read_text()) == {"val_acc": 0.5, "epoch": 2}
