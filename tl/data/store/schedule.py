"""Where the store's chunks are decoded: ``run_chunks`` runs ``decode_chunk`` over (index, paths) jobs
and yields each result as it finishes, on Ray when this process is a Ray driver (every node of a
cluster), else in a local process pool, else in this process.

``TL_DECODE_SCHEDULER`` picks the Ray path: ``tasks`` (default: one Ray task per chunk, at most two
per CPU in flight, ``ray.wait`` for the next to finish) or ``ray-data`` (``ray.data.from_items(jobs)
.map(...)``, Ray Data's streaming executor; when Ray is not running it starts a local Ray instead of
the process pool).

Why the tasks (and the pool) stay the default: ``python -m benchmarks.scale --n 10000 --scheduler
tasks|ray-data``, ten runs interleaved on 2 cores (docs/results/scale/n10000-raydata.txt). With the
cores quiet, all 10,000 files at 128 px in a Ray driver: tasks 1,432 and 1,362 img/s, Ray Data 688
and 686; in a fresh process: pool 1,449 and 1,407, Ray Data (starting Ray) 584 and 580, with the
loader's peak RSS 0.27 GB instead of 0.07. Under load Ray Data was behind in a Ray driver in every
pair. ``ray-data`` is kept to measure again where it may pay (many nodes); docs/guide/scale.md.
"""
from __future__ import annotations

import math
import os
import pickle
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator

from tl.core.errors import TLError
from tl.data.store.chunks import local_decode_chunk, ray_decode_chunk

MAX_CHUNK = 512  # images per chunk file: ~2 s of decoding at 256-320 px, 8 MB at 128 px grey
MIN_CHUNK = 64
MIN_PARALLEL = 1024  # fewer images to decode (about a second's work) go faster in this process than in workers
SCHEDULERS = ("tasks", "ray-data")

Jobs = list[tuple[int, list[str]]]


def chunk_size_for(n_files: int) -> int:
    """Images per chunk for a store of ``n_files``: at least 64 chunks' worth of parallelism for
    small sets, at most ``MAX_CHUNK`` per chunk. A function of N alone, so a store is resumed with
    the chunks it was started with on any machine."""
    return int(min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(n_files / 64))))


def local_cpus() -> int:
    """CPUs this process may use (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ray_driver() -> bool:
    """Whether this process is a Ray driver (the search), not a Ray worker (a trial that decodes for
    itself, whose CPUs are the trial's: it must not wait on tasks that need more)."""
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.SCRIPT_MODE


def ray_worker() -> bool:
    """Whether this process is a Ray worker (a trial), whose CPUs are the ones Ray gave it."""
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and not ray_driver()


def cpus_given() -> int:
    """CPUs Ray assigned to this worker (a trial), else this process's CPUs."""
    if ray_worker():
        import ray

        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    return local_cpus()


def decode_scheduler() -> str:
    """``$TL_DECODE_SCHEDULER`` (``tasks`` when unset); TLError naming the allowed ones otherwise."""
    name = os.environ.get("TL_DECODE_SCHEDULER", "").strip() or "tasks"
    if name not in SCHEDULERS:
        raise TLError(f"TL_DECODE_SCHEDULER must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    return name


def run_with_ray(jobs: Jobs, image_size: int) -> Iterator[tuple[int, dict]]:
    """Chunks as Ray tasks spread over the cluster's nodes, at most two per CPU in flight; results
    as they finish (``ray.wait``). Pending tasks are cancelled when the caller stops early."""
    import ray

    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD", max_retries=2)(ray_decode_chunk)
    in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    todo, running = list(jobs), {}
    try:
        while todo or running:
            while todo and len(running) < in_flight:
                index, paths = todo.pop(0)
                running[task.remote(paths, image_size)] = index
            done, _ = ray.wait(list(running), num_returns=1)
            index = running.pop(done[0])
            yield index, ray.get(done[0])
    finally:
        for ref in running:
            ray.cancel(ref)


def decode_row(row: dict, image_size: int) -> dict:
    """One Ray Data row (a chunk's ``index`` and ``paths``) decoded: the result pickled whole, as a
    Ray task's return value is, since its arrays' shapes differ from chunk to chunk."""
    out = ray_decode_chunk([str(p) for p in row["paths"]], image_size)
    return {"index": int(row["index"]), "out": pickle.dumps(out, protocol=5)}


def run_with_ray_data(jobs: Jobs, image_size: int, workers: int) -> Iterator[tuple[int, dict]]:
    """Chunks through Ray Data: one row (and one block) per chunk, ``map(decode_row)`` at one CPU a
    row, results as the streaming executor hands them over. Starts a local Ray of ``workers`` CPUs
    when none runs; Ray Data's own progress bars are off (``Progress`` counts the images)."""
    import ray

    if not ray.is_initialized():
        # address="local": a new instance, never a cluster some other job started with `ray start`
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    rows = [{"index": index, "paths": paths} for index, paths in jobs]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    for row in ds.map(decode_row, fn_kwargs={"image_size": image_size}, num_cpus=1).iter_rows():
        yield int(row["index"]), pickle.loads(row["out"])


def run_with_pool(jobs: Jobs, image_size: int, workers: int) -> Iterator[tuple[int, dict]]:
    """Chunks in a local process pool (spawned workers: the caller may hold threads), as they finish.

    A pool that breaks (a worker killed; a script without ``if __name__ == "__main__":``, which
    spawned workers re-run) leaves the remaining chunks to this process, with a notice.
    """
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    todo, running = list(jobs), {}
    try:
        while todo or running:
            while todo and len(running) < 2 * workers:
                index, paths = todo.pop(0)
                running[pool.submit(local_decode_chunk, paths, image_size)] = index
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield running[future], future.result()
                del running[future]
    except BrokenProcessPool as exc:
        print(f"[tl.data] the decode pool broke ({exc}; a script needs if __name__ == '__main__': to use it); "
              "decoding the rest in this process", file=sys.stderr, flush=True)
        left = sorted(set(running.values()) | {index for index, _ in todo})
        paths = dict(jobs)
        running.clear()
        yield from run_here([(i, paths[i]) for i in left], image_size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_here(jobs: Jobs, image_size: int) -> Iterator[tuple[int, dict]]:
    """Chunks one after another in this process."""
    for index, paths in jobs:
        yield index, local_decode_chunk(paths, image_size)


def run_chunks(jobs: Jobs, image_size: int, workers: int | None = None) -> Iterator[tuple[int, dict]]:
    """``decode_chunk`` over ``jobs`` ((chunk index, paths)), yielding (index, result) as chunks finish.

    Where: Ray when this process is a Ray driver (the search starts or joins Ray before decoding:
    ``TL_DECODE_SCHEDULER`` picks tasks or Ray Data); else a local process pool of ``workers``
    (default: the CPUs this process may use; in a Ray worker, the CPUs Ray gave it), or Ray Data on a
    local Ray when ``TL_DECODE_SCHEDULER=ray-data``; in this process when ``workers`` is 1, there is a
    single chunk, or (``workers`` None) fewer than ``MIN_PARALLEL`` images, which decode faster here.
    """
    scheduler = decode_scheduler()
    if workers is None:
        workers = cpus_given()
        if sum(len(paths) for _, paths in jobs) < MIN_PARALLEL:
            workers = 1
    if len(jobs) <= 1 or workers <= 1:
        return run_here(jobs, image_size)
    if ray_driver():
        return run_with_ray_data(jobs, image_size, workers) if scheduler == "ray-data" else run_with_ray(jobs, image_size)
    if scheduler == "ray-data" and not ray_worker():
        return run_with_ray_data(jobs, image_size, workers)
    return run_with_pool(jobs, image_size, min(workers, len(jobs)))
