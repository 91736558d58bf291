"""On a cluster, a search whose --storage or data one node cannot see stops before any trial (issue 27).

How "one node cannot see it" is made honestly on one machine: the worker node's Ray processes run in
their own mount namespace (``unshare -m``) with an empty tmpfs mounted over the folder that holds the
storage and the data. The head sees the real folder; the worker sees an empty one at the same path —
what a node without the NFS mount sees. A different env var or HOME read by the check would only test
the check against itself; a mount difference is what a real cluster gets wrong. ``unshare`` and
``mount`` need root (or unprivileged user namespaces), so the test skips elsewhere.

test_cluster.py's ``ray.cluster_utils.Cluster`` starts nodes inside Ray's own code, which cannot put one
in another namespace; here both nodes are ``ray start --block`` processes, each in its own process
group (stopped by signalling that group), with a private Ray temp dir.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def _stop(proc: subprocess.Popen) -> None:
    """Stop one ``ray start --block`` and its node: SIGTERM to its process group, SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(8)  # an idle node drains in about a second
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def cluster_with_a_blind_worker(tmp_path):
    """(address, env, the folder the worker cannot see, the worker's node id): a head and a worker node,
    1 CPU each; the worker runs in a mount namespace where ``hidden`` is an empty tmpfs."""
    if not _can_unshare_mounts():
        pytest.skip("needs unshare -m and mount (root or unprivileged user namespaces)")
    hidden = tmp_path / "shared"
    hidden.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="tl-nodes-", dir="/tmp"))  # Ray's socket paths must stay short
    home = tmp_path / "home"
    home.mkdir()
    env = os.environ.copy() | {"RAY_TMPDIR": str(ray_tmp), "HOME": str(home), "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, check=True)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    node = ["--num-cpus", "1", "--disable-usage-stats", "--dashboard-agent-listen-port", "0",
            "--metrics-export-port", "0", "--block"]
    logs = tmp_path / "nodes.log"
    procs = []
    try:
        with logs.open("w") as sink:
            procs.append(subprocess.Popen(
                [RAY, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                 "--include-dashboard=false", "--dashboard-port", str(_free_port())] + node,
                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
            worker_cmd = " ".join([RAY, "start", "--address", address] + node)
            procs.append(subprocess.Popen(
                ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {hidden} && exec {worker_cmd}"],
                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
        worker_id = _wait_for_worker(address, env, logs)
        yield address, env, hidden, worker_id
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _wait_for_worker(address: str, env: dict, logs: Path) -> str:
    """The worker's node id, once both nodes are alive (asked from a short-lived driver)."""
    script = ("import sys, time, ray\n"
              f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
              "deadline = time.time() + 60\n"
              "while len(alive := [n for n in ray.nodes() if n['Alive']]) < 2 and time.time() < deadline:\n"
              "    time.sleep(0.5)\n"
              "print(*[n['NodeID'] for n in alive if 'node:__internal_head__' not in n['Resources']])\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    ids = out.stdout.split()
    assert len(ids) == 1, f"the worker node did not join: {out.stdout}{out.stderr[-1500:]}\n{logs.read_text()[-2000:]}"
    return ids[0]


@pytest.mark.slow  # starts a two-node Ray cluster
def test_search_stops_before_any_trial_when_a_node_cannot_see_storage_or_data(cluster_with_a_blind_worker,
                                                                               small_data_dir):
    address, env, hidden, worker_id = cluster_with_a_blind_worker
    storage = hidden / "results"
    data = hidden / "data" / "chest_xray"  # a real copy: the head sees it, the worker sees an empty tmpfs
    shutil.copytree(small_data_dir / "chest_xray", data)
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--dataset", str(data), "--storage", str(storage),
         "--name", "blind", "--num-samples", "2", "--max-epochs", "1", "--address", address],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    took = time.time() - started
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2, f"rc {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert len(errors) == 1, f"want one error: line, got {errors}\n{out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    line = errors[0]
    assert f"--storage {storage} is not usable on 1 of 2 nodes" in line, line
    assert f"the dataset folder {data} is not usable on 1 of 2 nodes" in line, line
    assert line.count(f"id {worker_id[:8]}") == 2, f"the worker {worker_id[:8]} must be named for both: {line}"
    assert "mount" in line and "s3://" in line, f"the fix is missing: {line}"
    assert not (storage / "blind").exists(), "the experiment folder was created before the check stopped it"
    assert not list(storage.glob(".tl_node_probe*")), "the driver's probe file was left behind"
    assert "experiment blind" not in out.stdout, "the Tuner started"
    print(f"stopped in {took:.1f} s: {line}")


def test_decode_root_is_the_folder_nodes_open(small_data_dir):
    from tl.search.nodes import decode_root
    from tl.search.space import load_space

    space = load_space(str(ROOT / "search_spaces" / "smoke.py"))
    assert decode_root(space, str(small_data_dir), offline=True) is None, "an .npz is read by the driver alone"
    space.dataset = str(small_data_dir / "chest_xray")
    assert decode_root(space, None, offline=True) == small_data_dir / "chest_xray"
    space.dataset = str(small_data_dir / "nih_cxr14_small" / "Data_Entry_2017.csv")
    assert decode_root(space, None, offline=True) == small_data_dir / "nih_cxr14_small", "a table's images: its folder"
    space.fixed["table"] = {"image_root": str(small_data_dir / "nih_cxr14_small" / "images")}
    assert decode_root(space, None, offline=True) == small_data_dir / "nih_cxr14_small" / "images"


def test_probe_tells_a_look_alike_folder_from_the_shared_one(tmp_path):
    from tl.search.nodes import listing_digest, probe_node

    shared, look_alike = tmp_path / "shared", tmp_path / "local"
    for d in (shared, look_alike):
        d.mkdir()
        (d / "NORMAL").mkdir()
    (shared / ".tl_node_probe-x").write_text("driver")
    (shared / "PNEUMONIA").mkdir()
    digest = listing_digest(str(shared))
    good = probe_node(str(shared), ".tl_node_probe-x", str(shared), digest)
    assert (good.storage, good.data) == (None, None), good
    assert sorted(p.name for p in shared.iterdir()) == [".tl_node_probe-x", "NORMAL", "PNEUMONIA"], \
        "the node's own probe file must be removed"
    bad = probe_node(str(look_alike), ".tl_node_probe-x", str(look_alike), digest)
    assert bad.storage == "a different folder there (the driver's probe file is not in it)", bad
    assert bad.data == "its files differ from the driver's", bad
    gone = probe_node(str(tmp_path / "absent"), ".tl_node_probe-x", str(tmp_path / "absent"), digest)
    assert (gone.storage, gone.data) == ("the folder does not exist there",) * 2, gone
