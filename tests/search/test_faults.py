"""Faults: a crashing trial resumes from its checkpoint (R1); a killed driver is resumed (R2)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trial_rows import read_rows, trained_rows

pytestmark = pytest.mark.slow  # starts Ray searches

ROOT = Path(__file__).resolve().parents[2]


def _trial_dirs(exp: Path) -> list[Path]:
    return sorted(p.parent for p in exp.glob("*/params.json"))


def _search_cmd(data_dir: Path, storage: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(data_dir),
            "--storage", str(storage), "--name", "fault", *extra]


def test_trial_that_raises_is_retried_from_its_checkpoint(tmp_path, small_data_dir):
    """R1: fail_at_epoch=2 raises once; Ray restores the epoch-1 checkpoint and the trial goes on at 2."""
    proc = subprocess.run(_search_cmd(small_data_dir, tmp_path, "--num-samples", "2", "--set", "fail_at_epoch=2",
                                      "--set", "batch_size=128"),
                          cwd=ROOT, capture_output=True, text=True, timeout=400, env=os.environ.copy())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "fault injected at epoch 2" in out, "the fault never fired: the test proves nothing"
    # A trial restarted from scratch would hit the fault again at epoch 2 on every retry and end
    # errored; "0 errored" therefore means each retry resumed past epoch 1 from its checkpoint.
    assert "2 trials, 0 errored" in out, out[-2000:]
    assert "from checkpoint" in out and "checkpoint_000000" in out, "no restore from the epoch-1 checkpoint"
    reached_two = [d for d in _trial_dirs(tmp_path / "fault") if any(r["epoch"] >= 2 for r in read_rows(d))]
    assert reached_two, "no trial got past the injected fault"
    for d in reached_two:
        epochs = [r["epoch"] for r in read_rows(d)]
        # Ray re-syncs result.json when it restores a trial and has been seen to drop rows from
        # before the fault, so require order, not completeness: no epoch is ever reported twice.
        assert epochs == sorted(set(epochs)), f"{d.name}: epochs {epochs}; an epoch was re-run"


def test_killed_driver_is_resumed_without_losing_trials(tmp_path, small_data_dir):
    """R2: SIGKILL the driver mid-search; --resume finishes it with exactly num_samples trials."""
    exp = tmp_path / "fault"
    driver = subprocess.Popen(_search_cmd(small_data_dir, tmp_path, "--num-samples", "4"), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
                              start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        started = [d for d in _trial_dirs(exp) if read_rows(d)]
        if len(started) >= 2:
            break
        time.sleep(0.5)
    assert driver.poll() is None, "search ended before it could be killed; make it longer"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(3)
    before = {d.name: read_rows(d) for d in _trial_dirs(exp)}
    finished_before = {n for n, rows in before.items() if rows and "test_acc" in rows[-1]}
    resumed = subprocess.run(_search_cmd(small_data_dir, tmp_path, "--resume"), cwd=ROOT, capture_output=True,
                             text=True, timeout=400, env=os.environ.copy())
    try:
        os.killpg(driver.pid, signal.SIGKILL)  # the killed driver's Ray processes, if any survived
    except ProcessLookupError:
        pass
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    after = {d.name: read_rows(d) for d in _trial_dirs(exp)}
    assert len(after) == 4, f"expected 4 trials after resume (searcher state restored), got {len(after)}"
    for name in finished_before:  # its measured figures (epoch times included) stay: it did not train again
        assert trained_rows(after[name]) == trained_rows(before[name]), f"{name} finished before the kill but changed"
    for name, rows in after.items():
        epochs = [r["epoch"] for r in trained_rows(rows)]
        assert epochs == sorted(set(epochs)), f"{name}: epochs {epochs} after resume; an epoch was re-run"
    assert "4 trials" in resumed.stdout, resumed.stdout[-2000:]
