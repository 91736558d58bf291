"""A two-node Ray cluster on one machine: trials run on both nodes, and survive losing one (R3)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trial_rows import read_rows

pytestmark = pytest.mark.slow  # starts Ray searches

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, worker
    cluster.shutdown()


def test_search_uses_both_nodes_and_survives_losing_one(two_node_cluster, tmp_path, small_data_dir):
    cluster, worker = two_node_cluster
    exp = tmp_path / "multi"
    search = subprocess.Popen(
        [sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--data-dir", str(small_data_dir),
         "--storage", str(tmp_path), "--name", "multi", "--num-samples", "3", "--set", "batch_size=128",
         # 6 epochs and no ASHA stop: on tests/fixtures's 960 training images a trial on the worker is mid-run
         # for several seconds, a wide window to kill it in (polled every 0.2 s)
         "--set", "epochs=6", "--max-epochs", "6", "--grace-period", "6",
         "--address", cluster.address],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    # Wait until a trial on the worker has reported an epoch but not finished, then take the node away.
    # (Waiting for both nodes instead let a slow head start outlast the worker's whole trial in CI.)
    mid_run_on_worker = False
    deadline = time.time() + 240
    while time.time() < deadline and search.poll() is None:
        last_rows = [rows[-1] for d in exp.glob("*/") if (rows := read_rows(d))]
        mid_run_on_worker = any(r["node_id"] == worker.node_id and "test_acc" not in r and not r.get("done")
                                for r in last_rows)
        if mid_run_on_worker:
            break
        time.sleep(0.2)
    assert mid_run_on_worker, f"no trial ran on the worker node {worker.node_id}"
    cluster.remove_node(worker)  # R3: the second node dies mid-search
    out, _ = search.communicate(timeout=400)
    assert search.returncode == 0, out[-3000:]
    assert "3 trials, 0 errored" in out, out[-2000:]
    moved = []
    for d in exp.glob("*/"):
        rows = read_rows(d)
        epochs = [r["epoch"] for r in rows]
        assert epochs == sorted(set(epochs)), f"{d.name}: an epoch was re-run after the node died: {epochs}"
        if rows and rows[0]["node_id"] == worker.node_id and rows[-1]["node_id"] != worker.node_id:
            moved.append(d.name)
    worker_trials = [d.name for d in exp.glob("*/") if any(r["node_id"] == worker.node_id for r in read_rows(d))]
    unfinished_on_worker = [n for n in worker_trials if n not in moved and
                            read_rows(exp / n)[-1]["node_id"] == worker.node_id and
                            "test_acc" not in read_rows(exp / n)[-1] and not read_rows(exp / n)[-1].get("done")]
    assert not unfinished_on_worker, f"trials stranded on the dead node: {unfinished_on_worker}"
    assert moved, f"no trial moved from the dead worker to the head (worker trials: {worker_trials})"
