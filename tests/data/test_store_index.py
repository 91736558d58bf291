"""A carve is an index over the decode store, not a copy (issue 28, item 4): each split is ``ChunkRows``
(rows of the memory-mapped chunks) that reads like the uint8 array it replaces, pickles as paths and
rows, and trains a trial to the same numbers; the store on disk does not grow with the carves; the
split copies older carves wrote are removed when no other process uses the store."""
from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from tl.core.errors import TLError
from tl.data import DatasetArrays, load_dataset
from tl.data.arrays import ChunkRows
from tl.data.store import store_splits
from tl.data.store.gather import CARVE_META, ROWS, split_copies
from tl.data.store.layout import IN_USE, chunk_file, folder_bytes, human_bytes, release_in_use

SPLITS = ("train", "val", "test")


@pytest.fixture
def two_chunks(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A chunks folder written as the store writes it: chunk 0 grey (5, 1, 6, 6), chunk 1 colour
    (3, 3, 6, 6); and the 8 images as a carve with 3 channels reads them (grey repeated)."""
    rng = np.random.default_rng(0)
    grey, colour = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((5, 1, 6, 6), (3, 3, 6, 6)))
    folder = tmp_path / "chunks-5"
    folder.mkdir()
    np.save(chunk_file(folder, 0, ".npy"), grey)
    np.save(chunk_file(folder, 1, ".npy"), colour)
    return folder, np.concatenate([grey.repeat(3, axis=1), colour])


def test_chunk_rows_index_as_the_array_they_stand_for(two_chunks):
    folder, every = two_chunks
    rows = np.array([6, 0, 7, 3, 3, 1, 5])  # out of order, across both chunks, a row twice
    x, want = ChunkRows(folder, 5, rows, 3, 6), every[rows]
    assert (len(x), x.shape, x.dtype, x.nbytes) == (7, (7, 3, 6, 6), np.uint8, want.nbytes)
    np.testing.assert_array_equal(np.asarray(x), want)
    import torch
    for key in (0, -1, 4, slice(None), slice(1, 6, 2), slice(5, 1, -1), [4, 0, 4], np.array([2, 6]),
                np.arange(7) % 2 == 0, torch.tensor([3, 1]), (slice(0, 3), 1), (2, 0, slice(1, 3))):
        np.testing.assert_array_equal(x[key], want[key if not isinstance(key, torch.Tensor) else key.numpy()],
                                      err_msg=repr(key))
    np.testing.assert_array_equal(np.stack(list(x)), want, err_msg="iteration")
    np.testing.assert_array_equal(x.subset([5, 0]), want[[5, 0]], err_msg="subset")
    np.testing.assert_array_equal(x.reshape(7, -1), want.reshape(7, -1), err_msg="reshape")
    np.testing.assert_array_equal(x.astype(np.float32), want.astype(np.float32), err_msg="astype")
    with pytest.raises(IndexError):
        x[7]
    assert np.asarray(ChunkRows(folder, 5, [], 1, 6)).shape == (0, 1, 6, 6), "an empty split maps no chunk"


def test_splits_share_one_mapping_of_a_chunk_until_it_is_written_anew(two_chunks):
    """A mapping per split would count the store up to once per split in a process's RSS (the kernel
    maps the pages around a fault, other splits' rows among them, into each mapping)."""
    folder, every = two_chunks
    train, val = ChunkRows(folder, 5, [0, 2], 1, 6), ChunkRows(folder, 5, [1, 4], 1, 6)
    assert train._map(0) is val._map(0), "one mapping of chunk 0 in this process"
    path, grey = chunk_file(folder, 0, ".npy"), np.load(chunk_file(folder, 0, ".npy"))
    before = path.stat().st_mtime_ns
    path.unlink()
    np.save(path, 255 - grey)  # the store pruned and decoded again: a new file (its inode may be reused)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # written later, as a new decode would be
    np.testing.assert_array_equal(ChunkRows(folder, 5, [1, 4], 1, 6)[:], 255 - grey[[1, 4]])


def test_chunk_rows_pickle_as_paths_and_rows_or_as_pixels(two_chunks):
    folder, every = two_chunks
    x = ChunkRows(folder, 5, np.array([7, 2, 5]), 3, 6)
    x[0]  # a memmap opened here does not travel
    blob = pickle.dumps(x)
    assert len(blob) < 600, f"{len(blob)} bytes: the folder and three rows, not {x.nbytes} bytes of pixels"
    back = pickle.loads(blob)
    assert isinstance(back, ChunkRows) and back.chunks == str(folder)
    np.testing.assert_array_equal(np.asarray(back), every[[7, 2, 5]])
    shipped = pickle.loads(pickle.dumps(x.shipped()))
    assert type(shipped) is np.ndarray, "shipped: the pixels, for a node that cannot see this disk"
    np.testing.assert_array_equal(shipped, every[[7, 2, 5]])
    (folder / "000001.npy").unlink()
    with pytest.raises(TLError, match=r"the decode store's chunk .*000001.npy is gone .*load the dataset again"):
        pickle.loads(blob)[0]


def _tree(data_dir: Path, root: Path, n: int) -> Path:
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for p in sorted((data_dir / "chest_xray" / "train" / cls).glob("*.jpeg"))[:n]:
            shutil.copyfile(p, root / cls / p.name)
    return root


def test_more_seeds_add_kilobytes_not_pixels(small_data_dir, tmp_path):
    root = _tree(small_data_dir, tmp_path / "tree", 30)
    first = load_dataset(str(root), 32, seed=0)
    store = Path(first.images["train"].chunks).parent
    chunks = folder_bytes(store) - folder_bytes(store / "splits")
    decoded = sum(x.nbytes for x in first.images.values())
    for seed in (1, 2, 3):
        load_dataset(str(root), 32, seed=seed)
    carves = sorted((store / "splits").iterdir())
    assert len(carves) == 4 and all(sorted(p.name for p in c.iterdir()) == [CARVE_META, ROWS] for c in carves), \
        [sorted(p.name for p in c.iterdir()) for c in carves]
    assert folder_bytes(store) <= 1.1 * decoded + 64 * 1024, \
        f"store {folder_bytes(store)} B with 4 carves, {chunks} B of chunks, decoded {decoded} B"
    assert not split_copies(store)


def test_a_trial_trains_the_same_on_store_rows_as_in_memory(small_data_dir, tmp_path):
    """The epoch loop indexes the rows (``_StoreImages``) as it indexed the arrays: same seed, same
    batches, same numbers; the split stays rows of the chunks (no copy of it is made)."""
    import torch

    from tl.train.trainable import _StoreImages, _as_tensor, run_epochs

    arrays = load_dataset(str(_tree(small_data_dir, tmp_path / "tree", 12)), 16, seed=0)
    trial_view = _as_tensor(arrays.images["train"])
    assert isinstance(trial_view, _StoreImages) and trial_view.rows is arrays.images["train"]
    memory = DatasetArrays(arrays.name, {s: np.array(x) for s, x in arrays.images.items()}, arrays.labels,
                           arrays.class_names)
    cfg = {"backbone": "convmodel", "weights": "none", "freeze": "none", "image_size": 16, "epochs": 1,
           "lr": 1e-3, "batch_size": 8, "augment": True, "seed": 0}
    on_rows, in_memory = ([m for m, _ in run_epochs(cfg, a, None, device=torch.device("cpu"))][-1]
                          for a in (arrays, memory))
    for key in ("train_loss", "val_loss", "val_acc", "test_loss", "test_acc"):
        assert on_rows[key] == in_memory[key], f"{key}: {on_rows[key]} on the rows, {in_memory[key]} in memory"
    images = _StoreImages(arrays.images["val"])
    on_meta = images.to(torch.device("meta"))  # an accelerator's path (resident_split), without one
    assert on_meta.shape == images.shape and on_meta.dtype == torch.uint8 and images.to("cpu") is images


def _old_carve(store: Path, out) -> Path:
    """The carve ``out`` as the version before rows wrote it: meta.json and a pixel copy per split."""
    old = store / "splits" / "0123456789abcdef"
    old.mkdir()
    for s in SPLITS:
        np.save(old / f"{s}.npy", np.asarray(out.images[s]))
    (old / CARVE_META).write_text(json.dumps({"summary": out.summary, "skipped": out.bad, "channels": 1,
                                              "rows": {s: len(out.images[s]) for s in SPLITS}}))
    return old


def test_old_split_copies_go_once_no_other_process_uses_the_store(small_data_dir, tmp_path, capsys):
    files = sorted((small_data_dir / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:12]
    splits = {"train": files[:8], "val": files[8:10], "test": files[10:]}
    root, cache = files[0].parent, tmp_path / "c"
    out = store_splits(splits, root, 16, cache=cache, workers=1, progress=False)
    release_in_use(out.store)  # as if the process that made it had exited
    shutil.rmtree(out.folder)
    old = _old_carve(out.store, out)
    os.rename(old, out.folder)  # the same carve, as an older version left it

    fd = os.open(out.store / IN_USE, os.O_RDWR)  # another process uses the store: it may map the copies
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        again = store_splits(splits, root, 16, cache=cache, workers=1, progress=True)
        release_in_use(again.store)
    finally:
        os.close(fd)
    assert len(split_copies(out.store)) == 3, "kept while another process may read them"
    assert (out.folder / ROWS).exists(), "the old carve is recorded as rows too, and read through them"
    for s in SPLITS:
        np.testing.assert_array_equal(again.images[s], out.images[s], err_msg=s)

    capsys.readouterr()
    before, copies = folder_bytes(out.store), sum(p.stat().st_size for p in split_copies(out.store))
    third = store_splits(splits, root, 16, cache=cache, workers=1, progress=True)
    assert not split_copies(out.store) and sorted(p.name for p in out.folder.iterdir()) == [CARVE_META, ROWS]
    assert f"removed the split copies older carves wrote ({human_bytes(copies)})" in capsys.readouterr().out
    assert folder_bytes(out.store) == before - copies, "the copies went, nothing else"
    for s in SPLITS:
        np.testing.assert_array_equal(third.images[s], out.images[s], err_msg=s)
