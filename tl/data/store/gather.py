"""A carve over the store: its rows per split, recorded (not copied) in the carve's folder; the
audit's fingerprints of those rows; and the removal of the split copies older carves wrote.

A carve is row indices over the store's chunks. Its folder (``splits/<carve key>/``) holds
``rows.npz`` (each split's rows, in split order) and ``meta.json`` (decode summary, skipped files,
channels), kilobytes whatever the image size, so the store on disk stays the decoded size however
many seeds and groupings carve it, and a new carve costs no pixel I/O. Trials read the pixels
through the rows from the memory-mapped chunks (``tl.data.arrays.ChunkRows``). Carves written
before this held ``<split>.npy``, a copy of their pixels: they are never read now, and
``drop_split_copies`` removes them once no other process uses the store.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.data.arrays import SPLITS
from tl.data.decode import summarize_decode_records
from tl.data.store.keys import carve_key
from tl.data.store.layout import Store, atomic_write, chunk_file, chunk_status

ROWS = "rows.npz"  # a carve's rows per split; written before meta.json, so a carve with both is whole
CARVE_META = "meta.json"


@dataclass
class Carve:
    """A carve gathered over a store: where it is recorded, its store rows per split, which of the given
    files it kept and skipped, and the decode summary and channels of its images."""

    folder: Path
    rows: dict[str, np.ndarray]  # per split: the kept files' rows in the store, in split order
    kept: dict[str, list[int]]  # per split: indices into the given files that decoded
    bad: dict[str, list[str]]  # per split: files that did not decode (skipped)
    summary: dict
    channels: int


def store_fingerprints(store: Store, rows: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split, the audit's (hashes, digests) of the store's ``rows``, read from each chunk's fingerprints file."""
    found = [np.load(chunk_file(store.chunks, i, ".fingerprints.npz")) for i in range(store.n_chunks())]
    hashes = np.concatenate([f["hashes"] for f in found])
    digests = np.concatenate([f["digests"] for f in found])
    return {s: (hashes[rows[s]], digests[rows[s]]) for s in SPLITS}


def write_carve(folder: Path, rows: dict[str, np.ndarray], meta: dict) -> None:
    """The carve's record: its rows, then its meta, each written atomically (an interrupted write
    leaves no meta.json beside new rows, and the next gather writes both again)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / ROWS, lambda f: np.savez(f, **rows))
    atomic_write(folder / CARVE_META, lambda f: f.write(json.dumps(meta).encode()))


def gather_splits(store: Store, rows: dict[str, np.ndarray], skip_bad: bool) -> Carve:
    """The carve of ``rows`` (per split, store rows in split order): recorded once, found after.

    Raises:
        TLError: naming the first file that did not decode, unless ``skip_bad``.
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
    if (folder / ROWS).exists() and (folder / CARVE_META).exists():
        meta = json.loads((folder / CARVE_META).read_text())
    else:  # new, or a carve that copied its pixels (split files) and is recorded as rows now
        meta = {"summary": summarize_decode_records([records[r] for s in SPLITS for r in kept_rows[s]]),
                "skipped": bad, "channels": 3 if (channels == 3).any() else 1,
                "rows": {s: len(kept_rows[s]) for s in SPLITS}}
        write_carve(folder, kept_rows, meta)
    return Carve(folder, kept_rows, kept, bad, meta["summary"], int(meta["channels"]))


def split_copies(store_folder: Path) -> list[Path]:
    """The ``<split>.npy`` pixel copies that carves wrote before carves were rows (never read now)."""
    return [p for s in SPLITS for p in Path(store_folder).glob(f"splits/*/{s}.npy")]


def drop_split_copies(store_folder: Path) -> int:
    """Remove the store's old split copies if no other process uses the store (an older version may
    still map them): a carve without its rows goes whole (it is recorded again, as rows, when next
    asked for), else only its copies. Returns the bytes freed (0: none, or the store is in use)."""
    from tl.data.store.admin import claim  # admin's lock pair: what prune takes

    copies = split_copies(store_folder)
    if not copies:
        return 0
    held = claim(Path(store_folder))
    if held is None:
        return 0
    freed = 0
    with held:
        for p in copies:
            try:
                freed += p.stat().st_size
                p.unlink()
            except FileNotFoundError:
                pass
        for carve in {p.parent for p in copies}:
            if not (carve / ROWS).exists():
                shutil.rmtree(carve, ignore_errors=True)
    return freed
