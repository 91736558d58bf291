"""Filling the store: decode the chunks it lacks (``run_chunks``) and write each as it finishes."""
from __future__ import annotations

import contextvars
import json
import shutil
from contextlib import closing, contextmanager
from typing import Iterator

from tl.core.errors import TLError
from tl.core.no_space import NO_SPACE, is_no_space
from tl.data.store.layout import ChunkDone, Store, check_disk, human_bytes, write_chunk
from tl.data.store.progress import Progress
from tl.data.store.schedule import run_chunks

# False inside ``only_stored``: a store that lacks chunks raises DecodeNeeded instead of decoding.
_MAY_DECODE = contextvars.ContextVar("tl_store_may_decode", default=True)


class DecodeNeeded(Exception):
    """The store lacks chunks, and the caller asked (``only_stored``) to be told instead of decoding."""


@contextmanager
def only_stored() -> Iterator[None]:
    """Within it (this thread only), ``fill_store`` raises ``DecodeNeeded`` where it would decode. A
    search opens, carves and audits a dataset the store already holds while Ray starts; what needs
    decoding waits for Ray, whose tasks decode the chunks (``tl.search.beside_ray``)."""
    token = _MAY_DECODE.set(False)
    try:
        yield
    finally:
        _MAY_DECODE.reset(token)


def fill_store(store: Store, *, stop_at_bad: bool = False, workers: int | None = None,
               progress: bool = True) -> list[ChunkDone]:
    """Decode the store's missing chunks (``run_chunks``), writing each as it finishes.

    Refuses (TLError) before decoding when the chunks and one carve's splits, at one channel, will
    not fit on the disk, and again after the first chunk if the images turn out to be colour.
    ``stop_at_bad``: stop at the first chunk holding a file that did not decode (it is written: the
    file's failure is part of the store) and raise naming that file.

    Returns:
        The chunks this call decoded, in the order they finished (empty: nothing was missing).
    """
    missing = store.missing()
    if not missing:
        return []
    if not _MAY_DECODE.get():
        raise DecodeNeeded(f"{len(missing)} chunks missing from {store.folder}")
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
                done.append(_write(store, index, out))
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


def _write(store: Store, index: int, out: dict) -> ChunkDone:
    """``write_chunk``, with a full disk said in one line: the chunks written before stay (each is
    whole), so the same command continues from them once there is room.

    numpy's ``tofile`` reports a full disk as a short write ("12288 requested and 3968 written", no
    errno), so a failed write with less room left than the chunk's pixels counts as one too."""
    try:
        return write_chunk(store, index, out)
    except OSError as exc:
        free = shutil.disk_usage(store.folder).free
        if not (is_no_space(exc) or free < out["images"].nbytes):
            raise
        written = len(store.names) - sum(len(store.paths(i)) for i in store.missing())
        raise TLError(f"the disk of the decode store {store.folder} is full ({NO_SPACE}) with {written:,} of "
                      f"{len(store.names):,} images decoded, {human_bytes(free)} free: free space there or point "
                      "TL_CACHE_DIR at a larger disk, and run again (the images decoded are kept)") from None
