"""The decode store filling up its disk (issue 28, item 3): one TLError naming the store and the free
space, no partial chunk file, the chunks written before kept, and the same fill finishing once there
is room. On a real small tmpfs where the machine allows mounting one, and with an injected ENOSPC."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

import tl.data.store.fill as store_fill
import tl.data.store.layout as layout
from bundle_builders import write_region_folder
from small_fs import MB, fill, small_tmpfs
from tl.core.errors import TLError
from tl.data.store import chunk_status, fill_store, open_store

CHUNK = 12  # 48 images: 4 chunks of 12 KB of pixels at 32 px


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_region_folder(tmp_path_factory.mktemp("store_full") / "data", n_per_class=24)


def _store(images: Path, cache: Path):
    paths = sorted(images.rglob("*.png"))
    return open_store(paths, images, 32, cache, "full", chunk=CHUNK)


def _full_then_again(store, fail) -> None:
    """Fill with ``fail`` in force, check what is left, then fill again with room and check it is whole."""
    with fail():
        with pytest.raises(TLError) as raised:
            fill_store(store, workers=1, progress=False)
    message = str(raised.value)
    assert f"the disk of the decode store {store.folder} is full (No space left on device)" in message, message
    assert "free space there or point TL_CACHE_DIR at a larger disk" in message and "\n" not in message, message
    assert not [p.name for p in store.folder.rglob("*.part")], "a temporary chunk file was left"
    kept = store.n_chunks() - len(store.missing())
    assert 0 < kept < store.n_chunks() and f"with {kept * CHUNK:,} of 48 images decoded" in message, message
    redone = fill_store(store, workers=1, progress=False)
    assert len(redone) == store.n_chunks() - kept, "the chunks written before the disk filled were decoded again"
    ok, errors, channels, _ = chunk_status(store)
    assert ok.all() and not any(errors) and (channels == 1).all()
    pixels = np.concatenate([np.load(layout.chunk_file(store.chunks, i, ".npy")) for i in range(store.n_chunks())])
    assert pixels.shape == (48, 1, 32, 32) and pixels.any()


def test_an_injected_enospc_mid_chunk_leaves_whole_chunks_only(images: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    store = _store(images, tmp_path / "cache")
    real = layout.atomic_write

    def second_chunk_fills_the_disk(path: Path, write):
        if path.name == "000001.npy":
            def half(f):
                f.write(b"\x93NUMPY" + b"\0" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real(path, half)
        return real(path, write)

    class Fail:
        def __enter__(self):
            monkeypatch.setattr(layout, "atomic_write", second_chunk_fills_the_disk)

        def __exit__(self, *exc):
            monkeypatch.setattr(layout, "atomic_write", real)

    _full_then_again(store, Fail)


def test_a_real_full_tmpfs(images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with small_tmpfs(tmp_path / "small", MB) as small:
        store = _store(images, small)
        filler = fill(small, leave=28 * 1024)  # one chunk and its records (4 KB pages), not two

        class Fail:  # the check before decoding wants room for a carve's copy too: let the writes find out
            def __enter__(self):
                monkeypatch.setattr(store_fill, "check_disk", lambda *args: None)

            def __exit__(self, *exc):
                monkeypatch.undo()
                filler.unlink()

        _full_then_again(store, Fail)
