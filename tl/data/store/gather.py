"""A carve's splits gathered from the store's chunks into split-contiguous ``.npy`` files (one per
split, memory-mappable), and the audit's fingerprints of the carve's rows."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.data.arrays import SPLITS
from tl.data.decode import summarize_decode_records
from tl.data.store.keys import carve_key
from tl.data.store.layout import Store, check_disk, chunk_file, chunk_status


def _open_split_files(folder: Path, kept_rows: dict[str, np.ndarray], shape: tuple) -> tuple[dict, dict]:
    """Each split's ``.npy`` header written; (write descriptors, data offsets) of the non-empty ones."""
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
    return fds, offsets


def write_splits(folder: Path, kept_rows: dict[str, np.ndarray], store: Store, channels: int) -> None:
    """Each split's ``.npy``: a header, then its rows' images at their positions, read chunk by chunk
    and written with ``pwrite``, so neither the chunks nor the splits stay mapped in this process
    (its RSS stays small at 10^5 images) and every chunk is read once."""
    shape = (channels, store.image_size, store.image_size)
    image_bytes = int(np.prod(shape))
    fds, offsets = _open_split_files(folder, kept_rows, shape)
    try:
        order = {s: np.argsort(kept_rows[s] // store.chunk, kind="stable") for s in fds}
        bounds = {s: np.searchsorted((kept_rows[s] // store.chunk)[order[s]], np.arange(store.n_chunks() + 1))
                  for s in fds}
        for i in range(store.n_chunks()):
            if not any(bounds[s][i] < bounds[s][i + 1] for s in fds):
                continue
            images = np.load(chunk_file(store.chunks, i, ".npy"))
            if images.shape[1] != channels:
                images = np.repeat(images, channels, axis=1)
            for s, fd in fds.items():
                for position in order[s][bounds[s][i]:bounds[s][i + 1]]:
                    row = kept_rows[s][position] - i * store.chunk
                    os.pwrite(fd, images[row].tobytes(), offsets[s] + int(position) * image_bytes)
    finally:
        for fd in fds.values():
            os.close(fd)


def store_fingerprints(store: Store, rows: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, the audit's (hashes, digests) of the store's ``rows``, read from each chunk's fingerprints file."""
    found = [np.load(chunk_file(store.chunks, i, ".fingerprints.npz")) for i in range(store.n_chunks())]
    hashes = np.concatenate([f["hashes"] for f in found])
    digests = np.concatenate([f["digests"] for f in found])
    return {s: (hashes[rows[s]], digests[rows[s]]) for s in SPLITS}


def gather_splits(store: Store, rows: dict[str, np.ndarray], skip_bad: bool) -> tuple[Path, dict, dict]:
    """Write (or find) the carve's split files: rows of the store per split, in split order.

    Returns (the carve's folder, kept positions per split, skipped files per split). TLError naming
    the first file that did not decode, unless ``skip_bad``.
    """
    ok, errors, channels, records = chunk_status(store)
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
    write_splits(tmp, kept_rows, store, c)
    summary = summarize_decode_records([records[r] for s in SPLITS for r in kept_rows[s]])
    (tmp / "meta.json").write_text(json.dumps({"summary": summary, "skipped": bad, "channels": c,
                                               "rows": {s: len(kept_rows[s]) for s in SPLITS}}))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process wrote the same carve first: same bytes
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, kept, bad
