"""The decode store: a dataset's image files decoded once per (content, image size, decoder), in
parallel, and each carve's splits gathered into memory-mappable ``.npy`` files.

MONAI's ``PersistentDataset`` keys its cache by content and transform, and ``CacheDataset`` fills it
with a worker pool and a progress bar; this is that, on disk and shared by every process of a node:

- The key (``store_key``) is the content (every file's name relative to the dataset root, size and
  mtime, sorted), the image size, the decode options and ``DECODER_VERSION``: never the carve seed
  or the grouping, so another seed decodes nothing.
- Files are decoded in chunks (``decode_chunk``, one function for every backend) by Ray tasks when
  this process runs Ray (``--address``: on every node of the cluster, which must see the image
  files at the same paths), else by a local process pool; chunks are written atomically as they
  finish, so an interrupted decode resumes from the chunks already written.
- Grey images keep one channel (the batcher expands them); the store is 3-channel only when some
  image really is colour.
- A carve (row indices per split) is gathered from the chunks into split-contiguous ``.npy`` files,
  keyed by a hash of the rows, which ``np.load(mmap_mode="r")`` opens as ndarray views: every
  trial of a node shares one copy through the page cache (``DatasetArrays`` pickles them as paths).

Layout under ``cache_dir()/decoded/``::

    <name>-<key>/store.json                 what the key covers (files, size, options, decoder version)
    <name>-<key>/chunks-<C>/<i>.npy         images (n, 1|3, S, S) uint8 of files i*C..(i+1)*C-1
    <name>-<key>/chunks-<C>/<i>.json        which decoded (ok), each file's decode record and error, who
                                            decoded it; written last: the chunk exists once it does
    <name>-<key>/splits/<carve>/<split>.npy  (n, 1|3, S, S) uint8 per split, in the carve's order
    <name>-<key>/splits/<carve>/meta.json    decode summary, skipped files
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from filelock import FileLock

from tl.core.errors import TLError
from tl.data.arrays import SPLITS
from tl.data.locate import relative_name
from tl.data.decode import DECODER_VERSION, decode_image, summarize_decode_records

# What decode_image is asked for, and what each chunk holds besides pixels; part of the key. channels
# None: 1 for grey content, 3 for colour. The audit's fingerprints (tl.data.fingerprints.image_fingerprints) are
# computed by the workers as they decode, so a search's driver never reads the pixels to audit them.
DECODE_OPTIONS = {"channels": "content", "resize": "PIL bilinear", "fingerprints": "dHash-256 (integer cells) + blake2b-16"}
MAX_CHUNK = 512  # images per chunk file: ~2 s of decoding at 256-320 px, 8 MB at 128 px grey
MIN_CHUNK = 64
MIN_PARALLEL = 1024  # fewer images to decode (about a second's work) go faster in this process than in workers
PROGRESS_EVERY_S = 10.0  # off a terminal: a progress line every 10 s or 10 % of the images


def chunk_size_for(n_files: int) -> int:
    """Images per chunk for a store of ``n_files``: at least 64 chunks' worth of parallelism for
    small sets, at most ``MAX_CHUNK`` per chunk. A function of N alone, so a store is resumed with
    the chunks it was started with on any machine."""
    return int(min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(n_files / 64))))


@dataclass
class ChunkDone:
    """One chunk decoded by this call: where (Ray node id or host name, process id) and how long."""

    index: int
    images: int
    node: str
    pid: int
    seconds: float


@dataclass
class StoredSplits:
    """A carve's splits read from the store: ``images[split]`` are read-only memmaps of
    ``folder/<split>.npy`` (in-memory copies when the store was temporary), ``fingerprints[split]``
    the audit's (hashes, digests) of the same images."""

    images: dict[str, np.ndarray]
    fingerprints: dict[str, tuple[np.ndarray, np.ndarray]]
    kept: dict[str, list[int]]  # per split: indices into the given files that decoded
    bad: dict[str, list[str]]  # per split: files that did not decode (skipped)
    summary: dict  # summarize_decode_records over the kept files
    key: str  # the store's key and the carve's: identifies these pixels
    folder: Path | None  # the carve's folder (None: a temporary store, gone)
    store: Path | None
    decoded: list[ChunkDone] = field(default_factory=list)  # chunks this call decoded (empty: all cached)


# --- the key -------------------------------------------------------------------------------------

def file_entries(paths: list[Path], root: Path) -> list[tuple[str, int, int]]:
    """(name relative to ``root``, size, mtime in ns) of each distinct file, sorted by name: the
    content part of the key, and the order of the store's rows."""
    entries, root = {}, os.path.normpath(str(root))
    for p in paths:
        name = relative_name(p, root)
        if name not in entries:
            try:
                st = os.stat(p)
                entries[name] = (name, st.st_size, st.st_mtime_ns)
            except OSError:  # missing: decode_chunk names it as unreadable
                entries[name] = (name, -1, -1)
    return sorted(entries.values())


def store_key(entries: list[tuple[str, int, int]], image_size: int, options: dict | None = None,
              version: int = DECODER_VERSION) -> str:
    """Hash of what the decoded pixels depend on: the files (``file_entries``), the image size, the
    decode options and the decoder's version. Not the carve: a carve is indices over the store."""
    h = hashlib.sha256(json.dumps({"version": version, "size": image_size, "options": options or DECODE_OPTIONS},
                                  sort_keys=True).encode())
    for name, size, mtime in entries:
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:16]


def carve_key(rows: dict[str, np.ndarray]) -> str:
    """Hash of each split's rows (indices into the store, in split order)."""
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(split.encode() + np.ascontiguousarray(rows[split], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


# --- decoding chunks -----------------------------------------------------------------------------

def decode_chunk(paths: list[str], image_size: int) -> dict:
    """Decode ``paths`` at ``image_size`` as their content is (grey: 1 channel, colour: 3).

    The one chunk function every backend runs (Ray task, process pool, this process).

    Returns:
        ``images`` uint8 (n, C, S, S): C is 3 if any image of the chunk is colour (grey ones
        repeated), else 1; a file that did not decode is zeros. ``hashes`` uint64 (n, 4) and
        ``digests`` uint8 (n, 16): the split audit's fingerprints of each image. ``ok`` bool (n,);
        ``records`` (JSON: each file's decode record, None where it failed); ``errors`` (JSON: the
        failure messages, None where it decoded); ``pid`` and ``seconds``.
    """
    from tl.data.fingerprints import image_fingerprints

    t0 = time.perf_counter()
    pixels, records, errors = [], [], []
    for p in paths:
        try:
            px, record = decode_image(p, image_size, channels=None)
        except TLError as exc:
            px, record = None, None
            errors.append(str(exc))
        else:
            errors.append(None)
        pixels.append(px)
        records.append(record)
    channels = 3 if any(px is not None and len(px) == 3 for px in pixels) else 1
    images = np.zeros((len(paths), channels, image_size, image_size), dtype=np.uint8)
    for i, px in enumerate(pixels):
        if px is not None:
            images[i] = px  # a 1-channel image broadcasts to 3
    hashes, digests = image_fingerprints(images)
    return {"images": images, "hashes": hashes, "digests": digests, "ok": np.array([e is None for e in errors], dtype=bool),
            "records": json.dumps(records, default=str), "errors": json.dumps(errors),
            "pid": os.getpid(), "seconds": time.perf_counter() - t0}


def _ray_decode_chunk(paths: list[str], image_size: int) -> dict:
    import ray

    out = decode_chunk(paths, image_size)
    out["node"] = ray.get_runtime_context().get_node_id()
    return out


def _local_decode_chunk(paths: list[str], image_size: int) -> dict:
    import socket

    out = decode_chunk(paths, image_size)
    out["node"] = socket.gethostname()
    return out


def _ray_driver() -> bool:
    """Whether this process is a Ray driver (the search), not a Ray worker (a trial that decodes for
    itself, whose CPUs are the trial's: it must not wait on tasks that need more)."""
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.SCRIPT_MODE


def _cpus_given() -> int:
    """CPUs Ray assigned to this worker (a trial), else this process's CPUs."""
    import ray

    if ray.is_initialized() and not _ray_driver():
        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    return local_cpus()


def local_cpus() -> int:
    """CPUs this process may use (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run_with_ray(jobs: list[tuple[int, list[str]]], image_size: int) -> Iterator[tuple[int, dict]]:
    """Chunks as Ray tasks spread over the cluster's nodes, at most two per CPU in flight; results
    as they finish (``ray.wait``). Pending tasks are cancelled when the caller stops early."""
    import ray

    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD", max_retries=2)(_ray_decode_chunk)
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


def _run_with_pool(jobs: list[tuple[int, list[str]]], image_size: int, workers: int) -> Iterator[tuple[int, dict]]:
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
                running[pool.submit(_local_decode_chunk, paths, image_size)] = index
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
        yield from _run_here([(i, paths[i]) for i in left], image_size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_here(jobs: list[tuple[int, list[str]]], image_size: int) -> Iterator[tuple[int, dict]]:
    for index, paths in jobs:
        yield index, _local_decode_chunk(paths, image_size)


def run_chunks(jobs: list[tuple[int, list[str]]], image_size: int, workers: int | None = None
               ) -> Iterator[tuple[int, dict]]:
    """``decode_chunk`` over ``jobs`` ((chunk index, paths)), yielding (index, result) as chunks finish.

    Where: Ray tasks when this process is a Ray driver (the search starts or joins Ray before
    decoding); else a local process pool of ``workers`` (default: the CPUs this process may use; in
    a Ray worker, the CPUs Ray gave it); in this process when ``workers`` is 1, there is a single
    chunk, or (``workers`` None) fewer than ``MIN_PARALLEL`` images, which decode faster than workers start.
    """
    if workers is None:
        workers = local_cpus() if "ray" not in sys.modules else _cpus_given()
        if sum(len(paths) for _, paths in jobs) < MIN_PARALLEL:
            workers = 1
    if len(jobs) <= 1 or workers <= 1:
        return _run_here(jobs, image_size)
    if _ray_driver():
        return _run_with_ray(jobs, image_size)
    return _run_with_pool(jobs, image_size, min(workers, len(jobs)))


# --- progress ------------------------------------------------------------------------------------

class Progress:
    """Images done, images/s and time left on stderr: a tqdm bar updated in place on a terminal;
    elsewhere (logs, CI) a line every ``PROGRESS_EVERY_S`` or 10 % of the images."""

    def __init__(self, total: int, what: str, stream=None):
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        self.total, self.n, self.what = total, 0, what
        self.started = self.last_time = time.monotonic()
        self.last_step = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, desc=what, unit="img", file=self.stream, dynamic_ncols=True,
                        mininterval=0.5, leave=True) if self.tty else None

    def update(self, n: int) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        step = 10 * self.n // max(1, self.total)
        if now - self.last_time >= PROGRESS_EVERY_S or step > self.last_step or self.n >= self.total:
            self.last_time, self.last_step = now, step
            self._line(now)

    def _line(self, now: float) -> None:
        from tqdm import tqdm

        print(tqdm.format_meter(self.n, self.total, now - self.started, prefix=self.what, unit="img", ncols=100),
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the store -----------------------------------------------------------------------------------

def _atomic_write(path: Path, write: Callable) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _chunk_file(folder: Path, index: int, suffix: str = ".json") -> Path:
    return folder / f"{index:06d}{suffix}"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_disk(folder: Path, needed: int, what: str) -> None:
    """TLError when ``needed`` bytes will not fit on the disk holding ``folder``."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise TLError(f"{what} needs about {_human(needed)} at {folder}, but its disk has {_human(free)} free; "
                      "free space there or point TL_CACHE_DIR at a larger disk")


@dataclass
class _Store:
    folder: Path
    key: str
    names: list[str]  # the store's rows: file names relative to root, sorted
    root: Path
    image_size: int
    chunk: int

    @property
    def chunks(self) -> Path:
        return self.folder / f"chunks-{self.chunk}"

    def n_chunks(self) -> int:
        return math.ceil(len(self.names) / self.chunk)

    def missing(self) -> list[int]:
        present = {p.name for p in self.chunks.glob("*.json")}
        return [i for i in range(self.n_chunks()) if _chunk_file(self.chunks, i).name not in present]

    def paths(self, index: int) -> list[str]:
        return [str(self.root / n) for n in self.names[index * self.chunk:(index + 1) * self.chunk]]


def open_store(paths: list[Path], root: Path, image_size: int, cache: Path, name: str = "",
               chunk: int | None = None) -> _Store:
    """The store of ``paths`` (relative to ``root``) at ``image_size`` under ``cache``: its folder
    (created with ``store.json``) and rows."""
    entries = file_entries(paths, root)
    key = store_key(entries, image_size)
    chunk = chunk or chunk_size_for(len(entries))
    folder = Path(cache) / (f"{name}-{key}" if name else key)
    store = _Store(folder, key, [e[0] for e in entries], Path(root), image_size, chunk)
    store.chunks.mkdir(parents=True, exist_ok=True)
    meta = folder / "store.json"
    if not meta.exists():
        tmp = folder / f".store.json.{os.getpid()}.part"
        tmp.write_text(json.dumps({"name": name, "root": str(root), "files": len(entries), "image_size": image_size,
                                   "options": DECODE_OPTIONS, "decoder_version": DECODER_VERSION}, indent=1))
        os.replace(tmp, meta)
    return store


def fill_store(store: _Store, *, stop_at_bad: bool = False, workers: int | None = None,
               progress: bool = True) -> list[ChunkDone]:
    """Decode the store's missing chunks (``run_chunks``), writing each as it finishes.

    Refuses (TLError) before decoding when the chunks and one carve's splits, at one channel, will
    not fit on the disk, and again after the first chunk if the images turn out to be colour.
    ``stop_at_bad``: stop at the first chunk holding a file that did not decode (it is written: the
    file's failure is part of the store) and raise naming that file.
    """
    missing = store.missing()
    if not missing:
        return []
    pixels = store.image_size ** 2
    n_missing = sum(len(store.paths(i)) for i in missing)
    what = f"decoding {n_missing:,} images at {store.image_size} px"
    check_disk(store.folder, (n_missing + len(store.names)) * pixels, what)
    bar = Progress(n_missing, f"[tl.data] decode {store.image_size} px") if progress else None
    done: list[ChunkDone] = []
    colour_checked = False
    jobs = [(i, store.paths(i)) for i in missing]
    try:
        with closing(run_chunks(jobs, store.image_size, workers)) as finished:
            for index, out in finished:
                done.append(_write_chunk(store, index, out))
                if bar:
                    bar.update(len(out["ok"]))
                if out["images"].shape[1] == 3 and not colour_checked:
                    colour_checked = True
                    left = n_missing - sum(d.images for d in done)
                    check_disk(store.folder, (left + len(store.names)) * pixels * 3, f"{what} (colour)")
                if stop_at_bad and not out["ok"].all():
                    first = next(e for e in json.loads(out["errors"]) if e)
                    raise TLError(f"{first}; pass --skip-bad-images to skip such files")
    finally:
        if bar:
            bar.close()
    return done


def _write_chunk(store: _Store, index: int, out: dict) -> ChunkDone:
    """Write one decoded chunk, pixels and fingerprints then record, each atomically; what it was and
    who decoded it."""
    _atomic_write(_chunk_file(store.chunks, index, ".npy"), lambda f: np.save(f, out["images"]))
    _atomic_write(_chunk_file(store.chunks, index, ".fingerprints.npz"),
                  lambda f: np.savez(f, hashes=out["hashes"], digests=out["digests"]))
    meta = {"ok": out["ok"].tolist(), "records": json.loads(out["records"]), "errors": json.loads(out["errors"]),
            "channels": int(out["images"].shape[1]), "node": out["node"], "pid": int(out["pid"])}
    _atomic_write(_chunk_file(store.chunks, index), lambda f: f.write(json.dumps(meta, default=str).encode()))
    return ChunkDone(index, len(out["ok"]), out["node"], int(out["pid"]), float(out["seconds"]))


def _chunk_status(store: _Store) -> tuple[np.ndarray, list, np.ndarray, list]:
    """Per row: decoded (bool), error message, decode record; per chunk: channels."""
    ok, errors, channels, records = [], [], [], []
    for i in range(store.n_chunks()):
        meta = json.loads(_chunk_file(store.chunks, i).read_text())
        ok += meta["ok"]
        errors += meta["errors"]
        records += meta["records"]
        channels.append(meta["channels"])
    return np.array(ok, dtype=bool), errors, np.array(channels), records


def _write_splits(folder: Path, kept_rows: dict[str, np.ndarray], store: _Store, channels: int) -> None:
    """Each split's ``.npy``: a header, then its rows' images at their positions, read chunk by chunk
    and written with ``pwrite``, so neither the chunks nor the splits stay mapped in this process
    (its RSS stays small at 10^5 images) and every chunk is read once."""
    shape = (channels, store.image_size, store.image_size)
    image_bytes = int(np.prod(shape))
    fds, offsets = {}, {}
    for s in SPLITS:
        path = folder / f"{s}.npy"
        if not len(kept_rows[s]):  # an empty file cannot be mapped
            np.save(path, np.zeros((0, *shape), np.uint8))
            continue
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(kept_rows[s]), *shape))
        offsets[s] = header.offset
        del header
        fds[s] = os.open(path, os.O_WRONLY)
    try:
        order = {s: np.argsort(kept_rows[s] // store.chunk, kind="stable") for s in fds}
        bounds = {s: np.searchsorted((kept_rows[s] // store.chunk)[order[s]], np.arange(store.n_chunks() + 1))
                  for s in fds}
        for i in range(store.n_chunks()):
            if not any(bounds[s][i] < bounds[s][i + 1] for s in fds):
                continue
            images = np.load(_chunk_file(store.chunks, i, ".npy"))
            if images.shape[1] != channels:
                images = np.repeat(images, channels, axis=1)
            for s, fd in fds.items():
                for position in order[s][bounds[s][i]:bounds[s][i + 1]]:
                    row = kept_rows[s][position] - i * store.chunk
                    os.pwrite(fd, images[row].tobytes(), offsets[s] + int(position) * image_bytes)
    finally:
        for fd in fds.values():
            os.close(fd)


def store_fingerprints(store: _Store, rows: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, the audit's (hashes, digests) of the store's ``rows``, read from each chunk's fingerprints file."""
    found = [np.load(_chunk_file(store.chunks, i, ".fingerprints.npz")) for i in range(store.n_chunks())]
    hashes = np.concatenate([f["hashes"] for f in found])
    digests = np.concatenate([f["digests"] for f in found])
    return {s: (hashes[rows[s]], digests[rows[s]]) for s in SPLITS}


def gather_splits(store: _Store, rows: dict[str, np.ndarray], skip_bad: bool) -> tuple[Path, dict, dict]:
    """Write (or find) the carve's split files: rows of the store per split, in split order.

    Returns (the carve's folder, kept positions per split, skipped files per split). TLError naming
    the first file that did not decode, unless ``skip_bad``.
    """
    ok, errors, channels, records = _chunk_status(store)
    kept = {s: [i for i, r in enumerate(rows[s]) if ok[r]] for s in SPLITS}
    bad = {s: [str(store.root / store.names[r]) for r in rows[s] if not ok[r]] for s in SPLITS}
    if not skip_bad:
        for s in SPLITS:
            first = next((r for r in rows[s] if not ok[r]), None)
            if first is not None:
                raise TLError(f"{errors[first]}; pass --skip-bad-images to skip such files")
    kept_rows = {s: np.asarray(rows[s], dtype=np.int64)[kept[s]] for s in SPLITS}
    folder = store.folder / "splits" / carve_key(kept_rows)
    if (folder / "meta.json").exists():
        return folder, kept, bad
    c = 3 if (channels == 3).any() else 1
    size = store.image_size
    check_disk(store.folder, sum(len(r) for r in kept_rows.values()) * c * size * size, "the carve's split arrays")
    tmp = store.folder / "splits" / f".{folder.name}.{os.getpid()}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _write_splits(tmp, kept_rows, store, c)
    summary = summarize_decode_records([records[r] for s in SPLITS for r in kept_rows[s]])
    (tmp / "meta.json").write_text(json.dumps({"summary": summary, "skipped": bad, "channels": c,
                                               "rows": {s: len(kept_rows[s]) for s in SPLITS}}))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process wrote the same carve first: same bytes
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, kept, bad


def store_splits(files: dict[str, list[Path]], root: Path, image_size: int, *, skip_bad: bool = False,
                 cache: Path | None = None, name: str = "", workers: int | None = None,
                 chunk: int | None = None, progress: bool = True) -> StoredSplits:
    """Each split's files decoded at ``image_size`` through the store under ``cache``.

    Decodes only what the store lacks (in parallel, see ``run_chunks``), then gathers the carve's
    splits, and opens them as read-only memmaps. ``cache`` None: a temporary store, read into memory
    and removed.

    Args:
        files: per split (``SPLITS``) the image files, in the split's order.
        root: the dataset's root; names relative to it are the content key's.
        skip_bad: leave out files that do not decode (listed in ``bad``), instead of raising.
        workers: local processes when Ray is not running (default: this process's CPUs).
        chunk: images per chunk (default ``chunk_size_for``).
        progress: show the progress bar while decoding.

    Raises:
        TLError: a file that does not decode (unless ``skip_bad``), or a store that will not fit on disk.
    """
    if cache is None:
        with tempfile.TemporaryDirectory(prefix="tl-decode-") as tmp:
            out = store_splits(files, root, image_size, skip_bad=skip_bad, cache=Path(tmp), name=name,
                               workers=workers, chunk=chunk, progress=progress)
            out.images = {s: np.array(x) for s, x in out.images.items()}
            out.folder = out.store = None
            return out
    every = [p for s in SPLITS for p in files[s]]
    store = open_store(every, root, image_size, Path(cache), name, chunk)
    index, base = {n: i for i, n in enumerate(store.names)}, os.path.normpath(str(root))
    rows = {s: np.array([index[relative_name(p, base)] for p in files[s]], dtype=np.int64) for s in SPLITS}
    t0 = time.perf_counter()
    with FileLock(str(store.folder / ".lock")):
        decoded = fill_store(store, stop_at_bad=not skip_bad, workers=workers, progress=progress)
        folder, kept, bad = gather_splits(store, rows, skip_bad)
    meta = json.loads((folder / "meta.json").read_text())
    images = {s: np.load(folder / f"{s}.npy", mmap_mode="r" if meta["rows"][s] else None) for s in SPLITS}
    fingerprints = store_fingerprints(store, {s: np.asarray(rows[s], dtype=np.int64)[kept[s]] for s in SPLITS})
    seconds = time.perf_counter() - t0
    if progress:
        work = (f"decoded {sum(d.images for d in decoded):,} images in {seconds:.1f} s" if decoded
                else f"nothing to decode ({seconds:.1f} s)")
        print(f"[tl.data] {work}; store {_human(_folder_bytes(store.folder))} at {store.folder}"
              f" ({len(store.names):,} images, {meta['channels']} channel{'s' if meta['channels'] > 1 else ''}, "
              f"{image_size} px)", flush=True)
    return StoredSplits(images, fingerprints, kept, bad, meta["summary"], f"{store.key}-{folder.name}", folder,
                        store.folder, decoded)
