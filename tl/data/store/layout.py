"""The store on disk: its folder and rows (``Store``, ``open_store``), each chunk's files written
atomically (``write_chunk``) and read back (``chunk_status``), the disk-space check, and the two locks
that keep a store whole: ``fill_lock`` (one process fills or gathers at a time) and ``hold_in_use``
(a shared lock every process using the store holds until it exits, so ``tl.cache prune`` skips it)."""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from filelock import FileLock

from tl.core.errors import TLError
from tl.data.decode import DECODER_VERSION
from tl.data.store.keys import DECODE_OPTIONS, file_entries, store_key
from tl.data.store.schedule import chunk_size_for

STORE_META = "store.json"  # what the key covers; a folder holding it is a store
FILL_LOCK = ".lock"  # FileLock held while a process fills the store or gathers a carve
IN_USE = ".in-use"  # flock'ed shared by every process using the store; its mtime is the store's last use

_HELD: dict[str, int] = {}  # store folder -> this process's open descriptor of its IN_USE file


@dataclass
class ChunkDone:
    """One chunk decoded by this call: where (Ray node id or host name, process id) and how long."""

    index: int
    images: int
    node: str
    pid: int
    seconds: float


@dataclass
class Store:
    """An open store: its folder and key, its rows (file names relative to ``root``, sorted) and chunking."""

    folder: Path
    key: str
    names: list[str]
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
        return [i for i in range(self.n_chunks()) if chunk_file(self.chunks, i).name not in present]

    def paths(self, index: int) -> list[str]:
        return [str(self.root / n) for n in self.names[index * self.chunk:(index + 1) * self.chunk]]


def atomic_write(path: Path, write: Callable) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it into place; a write that
    fails (a full disk) leaves neither file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def chunk_file(folder: Path, index: int, suffix: str = ".json") -> Path:
    """Chunk ``index``'s file in a ``chunks-<C>`` folder: ``.json`` record, ``.npy`` pixels, ``.fingerprints.npz``."""
    return folder / f"{index:06d}{suffix}"


def human_bytes(n: float) -> str:
    """``n`` bytes in B, KB, MB, GB or TB (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (a file removed while counting counts 0)."""
    total = 0
    for p in folder.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:
            pass
    return total


def check_disk(folder: Path, needed: int, what: str) -> None:
    """TLError when ``needed`` bytes will not fit on the disk holding ``folder``."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise TLError(f"{what} needs about {human_bytes(needed)} at {folder}, but its disk has {human_bytes(free)} "
                      "free; free space there or point TL_CACHE_DIR at a larger disk")


def fill_lock(folder: Path, timeout: float = -1) -> FileLock:
    """The store's fill lock: held while a process decodes into it or gathers a carve (``timeout`` 0: try once)."""
    return FileLock(str(Path(folder) / FILL_LOCK), timeout=timeout)


def hold_in_use(folder: Path) -> bool:
    """Hold a shared lock on the store's ``IN_USE`` file until this process exits, and touch it (last use).

    Shared: any number of searches use a store at once; ``tl.cache prune`` needs it exclusively, so it
    skips a store any living process holds.

    Returns:
        False when a prune removed the store between its opening and this lock (nothing is held:
        open the store again, then hold it), else True.
    """
    import fcntl

    key = str(Path(folder).resolve())
    if key not in _HELD:
        fd = os.open(Path(folder) / IN_USE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        if not os.fstat(fd).st_nlink:
            os.close(fd)
            return False
        _HELD[key] = fd
    os.utime(_HELD[key])
    return True


def release_in_use(folder: Path) -> None:
    """Let go of ``hold_in_use`` on ``folder`` before this process exits (a temporary store)."""
    fd = _HELD.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)


def open_store(paths: list[Path], root: Path, image_size: int, cache: Path, name: str = "",
               chunk: int | None = None) -> Store:
    """The store of ``paths`` (relative to ``root``) at ``image_size`` under ``cache``: its folder
    (created with ``store.json``) and rows."""
    entries = file_entries(paths, root)
    key = store_key(entries, image_size)
    chunk = chunk or chunk_size_for(len(entries))
    folder = Path(cache) / (f"{name}-{key}" if name else key)
    store = Store(folder, key, [e[0] for e in entries], Path(root), image_size, chunk)
    store.chunks.mkdir(parents=True, exist_ok=True)
    meta = folder / STORE_META
    if not meta.exists():
        tmp = folder / f".{STORE_META}.{os.getpid()}.part"
        tmp.write_text(json.dumps({"name": name, "root": str(root), "files": len(entries), "image_size": image_size,
                                   "options": DECODE_OPTIONS, "decoder_version": DECODER_VERSION}, indent=1))
        os.replace(tmp, meta)
    return store


def write_chunk(store: Store, index: int, out: dict) -> ChunkDone:
    """Write one decoded chunk, pixels and fingerprints then record, each atomically; what it was and
    who decoded it."""
    atomic_write(chunk_file(store.chunks, index, ".npy"), lambda f: np.save(f, out["images"]))
    atomic_write(chunk_file(store.chunks, index, ".fingerprints.npz"),
                 lambda f: np.savez(f, hashes=out["hashes"], digests=out["digests"]))
    meta = {"ok": out["ok"].tolist(), "records": json.loads(out["records"]), "errors": json.loads(out["errors"]),
            "channels": int(out["images"].shape[1]), "node": out["node"], "pid": int(out["pid"])}
    atomic_write(chunk_file(store.chunks, index), lambda f: f.write(json.dumps(meta, default=str).encode()))
    return ChunkDone(index, len(out["ok"]), out["node"], int(out["pid"]), float(out["seconds"]))


def chunk_status(store: Store) -> tuple[np.ndarray, list, np.ndarray, list]:
    """Per row: decoded (bool), error message, decode record; per chunk: channels."""
    ok, errors, channels, records = [], [], [], []
    for i in range(store.n_chunks()):
        meta = json.loads(chunk_file(store.chunks, i).read_text())
        ok += meta["ok"]
        errors += meta["errors"]
        records += meta["records"]
        channels.append(meta["channels"])
    return np.array(ok, dtype=bool), errors, np.array(channels), records
