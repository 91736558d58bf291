"""Before a search on a Ray cluster decodes or runs a trial: every node that will write results sees
the driver's ``--storage`` folder and can write there, and every node that will decode sees the
dataset's files.

Since Ray 2.7 nothing syncs trial folders to the head node: each trial writes its results and
checkpoints to ``storage_path`` from the node it runs on, so a local path must be one shared folder
(NFS, a PVC) mounted at the same path on every node; an object-store URI (``s3://``, ``gs://``) is
not checked here. The decode store's chunks are Ray tasks on every node with a CPU
(``tl.data.store``) that open the image files by the driver's paths; an ``.npz`` is read by the
driver alone, and with ``--address`` the pixels reach the trials through Ray's object store.

The check is a tiny task pinned to each alive node (``NodeAffinitySchedulingStrategy``, no CPU, so a
busy node answers too). Writable is not enough: a node without the shared mount writes happily into
its own local folder of the same name, and its trials' results would be lost with it. So the driver
writes a probe file first, and each node must see that very file and then create and remove its own.
For the data, each node must list the same top-level names under the dataset's folder as the driver.
Nodes that join later (an autoscaler) are not checked.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from tl.core.errors import TLError
from tl.data import resolve_dataset_path
from tl.data.table_source import is_table
from tl.search.console import PREFIX
from tl.search.space import SearchSpace

ANSWER_TIMEOUT_S = 60.0  # a probe is a stat and two small writes; a node that takes longer is unusable


@dataclass
class NodeAnswer:
    """What one node saw: its host name, and why the storage or the data failed there (None: fine)."""

    host: str
    storage: str | None = None
    data: str | None = None


def decode_root(space: SearchSpace, data_dir: str | None, offline: bool) -> Path | None:
    """The folder whose files the decode tasks open on every node: an ImageFolder root, or a label
    table's image root (its ``image_root`` option, else the table's folder). None for an ``.npz``,
    which only the driver reads."""
    source = resolve_dataset_path(space.dataset, data_dir, offline)
    if is_table(source):
        root = (space.fixed.get("table") or {}).get("image_root")
        return Path(root).expanduser().absolute() if root else source.absolute().parent
    return None if source.is_file() else source.absolute()


def listing_digest(folder: str) -> str:
    """A hash of the sorted names directly under ``folder``: two nodes that agree see the same data.
    The probe files are left out: the data may sit in the storage folder while nodes write theirs."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".tl_node_probe"))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def probe_node(storage: str | None, driver_probe: str, data: str | None, digest: str | None) -> NodeAnswer:
    """Run on one node: does it see the driver's probe file under ``storage`` and can it write there;
    does it list ``data`` as the driver does. Touches nothing but its own probe file."""
    answer = NodeAnswer(host=socket.gethostname())
    if storage is not None:
        root = Path(storage)
        if not root.is_dir():
            answer.storage = "the folder does not exist there"
        elif not (root / driver_probe).is_file():
            answer.storage = "a different folder there (the driver's probe file is not in it)"
        else:
            mine = root / f"{driver_probe}-{uuid.uuid4().hex[:8]}"
            try:
                mine.write_text("ok")
                mine.unlink()
            except OSError as exc:
                answer.storage = f"not writable there: {exc.strerror or exc}"
    if data is not None:
        if not Path(data).is_dir():
            answer.data = "the folder does not exist there"
        else:
            try:
                if listing_digest(data) != digest:
                    answer.data = "its files differ from the driver's"
            except OSError as exc:
                answer.data = f"cannot be listed there: {exc.strerror or exc}"
    return answer


def _fits(node: dict, cpus: float, gpus: float) -> bool:
    have = node.get("Resources", {})
    return have.get("CPU", 0) >= cpus and have.get("GPU", 0) >= gpus


def _name(node: dict) -> str:
    return f"node {node['NodeManagerAddress']} (id {node['NodeID'][:8]})"


def _ask_nodes(nodes: list[dict], storage: str | None, driver_probe: str, data: str | None,
               digest: str | None) -> dict[str, NodeAnswer | str]:
    """Each node's answer by node id; a string where the node could not be asked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(storage if n["_storage"] else None, driver_probe, data if n["_data"] else None, digest): n["NodeID"]
            for n in nodes}
    done, late = ray.wait(list(refs), num_returns=len(refs), timeout=ANSWER_TIMEOUT_S)
    answers: dict[str, NodeAnswer | str] = {refs[r]: f"did not answer in {ANSWER_TIMEOUT_S:.0f} s" for r in late}
    for ref in done:
        try:
            answers[refs[ref]] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            answers[refs[ref]] = f"could not run the check ({str(exc).splitlines()[0]})"
    for ref in late:
        ray.cancel(ref, force=True)
    return answers


def check_cluster_paths(args: argparse.Namespace, space: SearchSpace, storage: str) -> None:
    """With ``--address``: every node a trial fits on sees ``storage`` (the resolved ``--storage``) and
    can write there, and every node with a CPU (the decode tasks' nodes) sees the dataset's folder.
    Prints one line when they do.

    Raises:
        TLError: one line naming each node that does not, and the fix.
    """
    if not args.address:
        return
    import ray

    local_storage = None if "://" in storage else storage
    data = decode_root(space, args.data_dir, args.offline)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for n in nodes:
        n["_storage"] = local_storage is not None and _fits(n, space.cpus_per_trial, space.gpus_per_trial)
        n["_data"] = data is not None and _fits(n, 1, 0)
    nodes = [n for n in nodes if n["_storage"] or n["_data"]]
    here = ray.get_runtime_context().get_node_id()
    if not nodes or [n["NodeID"] for n in nodes] == [here]:
        return  # one node, this one: the driver's own checks covered it
    driver_probe = f".tl_node_probe-{uuid.uuid4().hex[:12]}"
    probe = Path(local_storage) / driver_probe if local_storage else None
    try:
        if probe is not None:
            probe.write_text("the driver's probe: every node must see this file")
        answers = _ask_nodes(nodes, local_storage, driver_probe, str(data) if data else None,
                             listing_digest(str(data)) if data else None)
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
    problems = []
    for kind, what, fix in (
            ("storage", f"--storage {storage}",
             f"mount one shared folder (NFS, a PVC) at {storage} on every node, or pass --storage s3://BUCKET/PATH"),
            ("data", f"the dataset folder {data}",
             "mount the data at the same path on every node (the decode runs as Ray tasks on each node; "
             "tl.search has no switch to decode on the driver alone)")):
        bad = []
        for n in nodes:
            if not n[f"_{kind}"]:
                continue
            answer = answers[n["NodeID"]]
            why = answer if isinstance(answer, str) else getattr(answer, kind)
            if why:
                host = "" if isinstance(answer, str) else f", host {answer.host}"
                bad.append(f"{_name(n)}{host}: {why}")
        if bad:
            checked = sum(n[f"_{kind}"] for n in nodes)
            problems.append(f"{what} is not usable on {len(bad)} of {checked} nodes: {'; '.join(bad)}. Fix: {fix}")
    if problems:
        raise TLError(" | ".join(problems))
    seen = [w for w, on in (("--storage", local_storage), ("the dataset", data)) if on]
    if seen:
        print(f"{PREFIX} cluster: {len(nodes)} nodes see {' and '.join(seen)}")
