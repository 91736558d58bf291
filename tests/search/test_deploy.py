"""deploy/: the KubeRay RayJob parses and agrees with itself, and the SLURM script runs a search.

Nothing here reaches Kubernetes or SLURM: the RayJob is checked as data (its entrypoint through
tl.search's own parser), and the sbatch script runs on this machine under stand-in ``srun`` and
``scontrol`` that start its head and worker as two local Ray nodes.
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from trial_rows import read_rows

from tl.search.cli import get_args_parser
from tl.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
RAYJOB = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
SBATCH = ROOT / "deploy" / "slurm" / "tl-search.sbatch"


def _rayjob() -> dict:
    return yaml.safe_load(RAYJOB.read_text())


def _entrypoint_args():
    argv = shlex.split(_rayjob()["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "tl.search"], f"the entrypoint must run python -m tl.search, got {argv[:3]}"
    return get_args_parser().parse_args(argv[3:])


def test_rayjob_entrypoint_parses_with_the_search_parser_and_names_a_space():
    job = _rayjob()
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True, "the Ray cluster must go away with the search"
    args = _entrypoint_args()
    assert (ROOT / args.space).is_file(), f"the entrypoint's space {args.space} is not in this repository"
    load_space(str(ROOT / args.space))  # raises on a space the search would refuse
    assert "://" in args.storage or args.storage.startswith("/"), \
        f"--storage must be an absolute shared path or a URI, got {args.storage}"
    if "://" not in args.storage:  # a path must be a volume mounted on every pod
        pods = [spec["rayClusterSpec"]["headGroupSpec"]] + spec["rayClusterSpec"]["workerGroupSpecs"]
        for pod in pods:
            mounts = [m["mountPath"] for c in pod["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])]
            assert any(args.storage == m or args.storage.startswith(m.rstrip("/") + "/") for m in mounts), \
                f"--storage {args.storage} is not on a volume of {pod.get('groupName', 'the head')}: {mounts}"
            if args.data_dir:
                assert any(args.data_dir.startswith(m) for m in mounts), f"--data-dir {args.data_dir} not mounted"


def test_rayjob_gpu_numbers_agree():
    spec = _rayjob()["spec"]
    args = _entrypoint_args()
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert groups, "no worker group"
    for group in groups:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus = float(limits.get("nvidia.com/gpu", 0))
        assert gpus >= 1, f"worker group {group['groupName']} has no GPU limit"
        declared = group.get("rayStartParams", {}).get("num-gpus")
        if declared is not None:
            assert float(declared) == gpus, f"{group['groupName']}: rayStartParams num-gpus {declared} != GPU limit {gpus}"
        assert args.gpus_per_trial is not None and 0 < args.gpus_per_trial <= gpus, \
            f"--gpus-per-trial {args.gpus_per_trial} does not fit a worker with {gpus} GPU(s)"
        if args.cpus_per_trial is not None:
            assert args.cpus_per_trial <= float(limits["cpu"]), \
                f"--cpus-per-trial {args.cpus_per_trial} > the worker's {limits['cpu']} CPUs"


# --- the sbatch script under stand-in srun / scontrol ------------------------------------------------

SRUN = """#!/bin/bash
# Stand-in srun: runs the command on this machine. -w NAME gives it that node's own /tmp (RAY_TMPDIR),
# as a real node would have; --nodes/--ntasks are ignored.
node=unknown
while [[ $# -gt 0 ]]; do
    case "$1" in
        -w|--nodelist) node=$2; shift 2 ;;
        -w*) node=${1#-w}; shift ;;
        --nodelist=*) node=${1#*=}; shift ;;
        -N|-n) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
export RAY_TMPDIR="$STANDIN_ROOT/$node"
mkdir -p "$RAY_TMPDIR"
echo "srun -w $node: $*" >> "$STANDIN_ROOT/srun.log"
exec "$@"
"""

SCONTROL = """#!/bin/bash
# Stand-in scontrol: `scontrol show hostnames LIST` prints two node names.
if [[ "$1 $2" == "show hostnames" ]]; then printf 'tlnode1\\ntlnode2\\n'; exit 0; fi
echo "stand-in scontrol: unsupported: $*" >&2; exit 1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_under(folder: Path) -> list[int]:
    """Pids of processes whose command line names ``folder`` (this test's Ray nodes, nobody else's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(folder).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
def test_sbatch_runs_a_two_node_search_under_stand_in_slurm(tmp_path, small_data_dir):
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    for d in (bin_dir, home):
        d.mkdir()
    # Each stand-in node's /tmp: short, since Ray's socket paths under it must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="tl-slurm-", dir="/tmp"))
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = os.environ.copy()
    env.update({
        "PATH": f"{bin_dir}:{ROOT / '.venv' / 'bin'}:{env['PATH']}", "TL_VENV": str(ROOT / ".venv"),
        "STANDIN_ROOT": str(root), "HOME": str(home),  # the script's Ray auth token goes to this HOME
        "RAY_TMPDIR": str(root / "tlnode1"),  # the batch script (the driver) runs on the first node
        "SLURM_JOB_NODELIST": "tlnode[1-2]",
        "SLURM_CPUS_PER_TASK": "1", "SLURM_GPUS_PER_TASK": "0",
        # Two nodes on one machine: a free GCS port, and no fixed per-node ports to collide on.
        "RAY_PORT": str(_free_port()),
        "RAY_START_ARGS": "--dashboard-agent-listen-port=0 --metrics-export-port=0",
        "WAIT_FOR_NODES_S": "90"})
    env.pop("RAY_ADDRESS", None)
    (root / "tlnode1").mkdir()
    storage = tmp_path / "results"  # on one machine both nodes see it: the node check must pass
    cmd = ["bash", str(SBATCH), "search_spaces/smoke.py", "--data-dir", str(small_data_dir),
           "--storage", str(storage), "--name", "sbatch", "--num-samples", "2", "--max-epochs", "1"]
    log = tmp_path / "job.log"  # a file, not a pipe: a stray Ray process holding a pipe would block the read
    started = time.time()
    with log.open("w") as sink:
        job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        job.wait(timeout=240)
    finally:
        if job.poll() is None:  # the script's own trap stops its Ray nodes on SIGTERM
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(60)
        out = log.read_text()
        ran = (root / "srun.log").read_text() if (root / "srun.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        leftovers = _processes_under(root)
        for pid in leftovers:  # only processes that name this test's node folders
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    print(f"sbatch under stand-ins: {time.time() - started:.0f} s\n{out[-3000:]}")
    assert job.returncode == 0, out[-4000:]
    assert "2 of 2 nodes joined Ray" in out, out[-3000:]
    assert "cluster: 2 nodes see --storage" in out, out[-3000:]
    assert "2 trials, 0 errored" in out, out[-3000:]
    trials = [d for d in (storage / "sbatch").glob("*/") if read_rows(d)]
    assert len(trials) == 2, f"two trial folders with results, got {trials}"
    # Which node ran which trial is Tune's choice (1-epoch trials often reuse one actor); the worker node
    # answered the storage check above ("2 nodes"), and test_cluster.py pins trials spreading over nodes.
    assert "srun -w tlnode1: ray start --head" in ran and "srun -w tlnode2: ray start --address=" in ran, ran
    assert not leftovers, f"the script left Ray processes running after it exited: {leftovers}"
