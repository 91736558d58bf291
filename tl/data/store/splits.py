"""A carve's splits through the store: ``store_splits`` opens the store, decodes what it lacks,
records the carve (its rows) and hands back each split as rows of the memory-mapped chunks
(``ChunkRows`` in ``StoredSplits``)."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tl.data.arrays import SPLITS, ChunkRows
from tl.data.locate import relative_name
from tl.data.store.fill import fill_store
from tl.data.store.gather import drop_split_copies, gather_splits, store_fingerprints
from tl.data.store.layout import (ChunkDone, fill_lock, folder_bytes, hold_in_use, human_bytes, open_store,
                                  release_in_use)


@dataclass
class StoredSplits:
    """A carve's splits read from the store: ``images[split]`` are ``ChunkRows``, the split's rows of
    the store's chunks, memory-mapped (in-memory copies when the store was temporary);
    ``fingerprints[split]`` the audit's (hashes, digests) of the same images."""

    images: dict[str, ChunkRows | np.ndarray]
    fingerprints: dict[str, tuple[np.ndarray, np.ndarray]]
    kept: dict[str, list[int]]  # per split: indices into the given files that decoded
    bad: dict[str, list[str]]  # per split: files that did not decode (skipped)
    summary: dict  # summarize_decode_records over the kept files
    key: str  # the store's key and the carve's: identifies these pixels
    folder: Path | None  # the carve's record, its rows and meta (None: a temporary store, gone)
    store: Path | None
    decoded: list[ChunkDone] = field(default_factory=list)  # chunks this call decoded (empty: all cached)


def _temporary(files: dict[str, list[Path]], root: Path, image_size: int, **options) -> StoredSplits:
    """``store_splits`` through a store in a temporary folder, read into memory and removed."""
    with tempfile.TemporaryDirectory(prefix="tl-decode-") as tmp:
        out = store_splits(files, root, image_size, cache=Path(tmp), **options)
        release_in_use(out.store)
        out.images = {s: np.array(x) for s, x in out.images.items()}
        out.folder = out.store = None
        return out


def store_splits(files: dict[str, list[Path]], root: Path, image_size: int, *, skip_bad: bool = False,
                 cache: Path | None = None, name: str = "", workers: int | None = None,
                 chunk: int | None = None, progress: bool = True) -> StoredSplits:
    """Each split's files decoded at ``image_size`` through the store under ``cache``.

    Decodes only what the store lacks (in parallel, see ``run_chunks``), then records the carve's
    rows (no pixels are copied: ``gather``) and returns each split as ``ChunkRows`` over the
    memory-mapped chunks. This process holds the store's in-use lock until it exits (``hold_in_use``:
    ``tl.cache prune`` skips the store meanwhile); split copies written by an older version are
    removed first when no other process uses the store. ``cache`` None: a temporary store, read
    into memory and removed.

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
        return _temporary(files, root, image_size, skip_bad=skip_bad, name=name, workers=workers, chunk=chunk,
                          progress=progress)
    every = [p for s in SPLITS for p in files[s]]
    store = open_store(every, root, image_size, Path(cache), name, chunk)
    freed = drop_split_copies(store.folder)
    if freed and progress:
        print(f"[tl.data] removed the split copies older carves wrote ({human_bytes(freed)}) from {store.folder}: "
              "a carve is row indices over the store now", flush=True)
    while not hold_in_use(store.folder):  # pruned meanwhile: open it anew
        store = open_store(every, root, image_size, Path(cache), name, chunk)
    index, base = {n: i for i, n in enumerate(store.names)}, os.path.normpath(str(root))
    rows = {s: np.array([index[relative_name(p, base)] for p in files[s]], dtype=np.int64) for s in SPLITS}
    t0 = time.perf_counter()
    with fill_lock(store.folder):
        decoded = fill_store(store, stop_at_bad=not skip_bad, workers=workers, progress=progress)
        carve = gather_splits(store, rows, skip_bad)
    images = {s: ChunkRows(store.chunks, store.chunk, carve.rows[s], carve.channels, image_size) for s in SPLITS}
    fingerprints = store_fingerprints(store, carve.rows)
    seconds = time.perf_counter() - t0
    if progress:
        work = (f"decoded {sum(d.images for d in decoded):,} images in {seconds:.1f} s" if decoded
                else f"nothing to decode ({seconds:.1f} s)")
        print(f"[tl.data] {work}; store {human_bytes(folder_bytes(store.folder))} at {store.folder}"
              f" ({len(store.names):,} images, {carve.channels} channel{'s' if carve.channels > 1 else ''}, "
              f"{image_size} px)", flush=True)
    return StoredSplits(images, fingerprints, carve.kept, carve.bad, carve.summary, f"{store.key}-{carve.folder.name}",
                        carve.folder, store.folder, decoded)
