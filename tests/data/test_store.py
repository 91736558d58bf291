"""The decode store (tl.data.store): decode_image's pixels, grey at one channel; keyed by content, size
and decoder, not by the carve; resumable; decoded by a process pool, Ray tasks on every node or Ray
Data; its splits rows of the memory-mapped chunks, pickled as paths and rows; its modules free of import
cycles. Carves as indices (no copies, old copies removed): test_store_index.py."""
from __future__ import annotations

import io
import os
import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import tl.data.store as store
import tl.data.store.chunks as store_chunks
import tl.data.store.layout as layout
from tl.core.errors import TLError
from tl.data import DatasetArrays, load_dataset
from tl.data.arrays import ChunkRows
from tl.data.decode import DECODER_VERSION, decode_image
from tl.data.store import file_entries, store_key, store_splits

SPLITS = ("train", "val", "test")


def _kermany(data_dir: Path, dest: Path, n: int) -> list[Path]:
    """Copy n real Kermany JPEGs (RGB files, grey content) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    src = sorted((data_dir / "chest_xray" / "train" / "NORMAL").glob("*.jpeg"))[:n]
    return [Path(shutil.copyfile(p, dest / p.name)) for p in src]


def _splits(files: list[Path]) -> dict[str, list[Path]]:
    """Train / val / test by position, val and test taking every 5th and 7th file."""
    val, test = files[1::5], [f for f in files[2::7] if f not in files[1::5]]
    return {"train": [f for f in files if f not in val and f not in test], "val": val, "test": test}


@pytest.fixture
def grey_and_colour(data_dir: Path, tmp_path: Path) -> dict[str, list[Path]]:
    """Real files of every kind the store must tell apart: Kermany JPEG (RGB, grey content), SIIM
    DICOM (MONOCHROME2), an 8-bit grey PNG and a 16-bit PNG from the DICOM's pixels, and Kather
    colour TIFFs."""
    root = tmp_path / "mixed"
    jpegs = _kermany(data_dir, root / "jpeg", 6)
    dicoms = [Path(shutil.copyfile(p, root / "jpeg" / p.name))
              for p in sorted((data_dir / "siim_acr_11" / "dicom-images").glob("*.dcm"))[:2]]
    grey = np.asarray(Image.open(jpegs[0]).convert("L"))
    Image.fromarray(grey).save(root / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 40 + 7).save(root / "grey16.png")
    colour = sorted((data_dir / "kather2016_240" / "01_TUMOR").glob("*.tif"))[:3]
    colour = [Path(shutil.copyfile(p, root / p.name)) for p in colour]
    return {"grey": jpegs + dicoms + [root / "grey8.png", root / "grey16.png"], "colour": colour, "root": [root]}


def test_store_gives_decode_image_pixels_grey_at_one_channel(grey_and_colour, tmp_path):
    root = grey_and_colour["root"][0]
    grey = grey_and_colour["grey"]
    out = store_splits({"train": grey[:6], "val": grey[6:8], "test": grey[8:]}, root, 40, cache=tmp_path / "c",
                       workers=1, progress=False)
    for split in SPLITS:
        assert isinstance(out.images[split], ChunkRows) and out.images[split].shape[1] == 1, out.images[split].shape
    every = [p for s in SPLITS for p in {"train": grey[:6], "val": grey[6:8], "test": grey[8:]}[s]]
    stacked = np.concatenate([out.images[s] for s in SPLITS])
    for path, got in zip(every, stacked):
        want, _ = decode_image(path, 40)  # today's path: 3 channels
        assert (want == want[:1]).all(), f"{path.name} decodes to equal channels"
        np.testing.assert_array_equal(got, want[:1], err_msg=path.name)
    assert out.summary["format"] == {"dicom": 2, "jpeg": 6, "png": 2}, out.summary

    mixed = {"train": grey[:4] + grey_and_colour["colour"][:2], "val": [grey_and_colour["colour"][2]],
             "test": grey[8:]}
    out = store_splits(mixed, root, 40, cache=tmp_path / "c", workers=1, progress=False)
    assert out.images["train"].shape == (6, 3, 40, 40), "one colour image makes the store 3-channel"
    for split, files in mixed.items():
        for path, got in zip(files, out.images[split]):
            np.testing.assert_array_equal(got, decode_image(path, 40)[0], err_msg=path.name)


def test_another_seed_decodes_nothing_and_gives_the_same_pixels(data_dir, tmp_path, monkeypatch):
    root = tmp_path / "tree"
    for cls in ("NORMAL", "PNEUMONIA"):
        src = sorted((data_dir / "chest_xray" / "train" / cls).glob("*.jpeg"))[:30]
        (root / cls).mkdir(parents=True)
        for p in src:
            shutil.copyfile(p, root / cls / p.name)
    first = load_dataset(str(root), 24, seed=0)
    calls = []
    monkeypatch.setattr(store_chunks, "decode_chunk", lambda *a: calls.append(a) or pytest.fail("decoded again"))
    second = load_dataset(str(root), 24, seed=1)
    assert not calls
    assert second.names["test"] != first.names["test"], "another seed carves other files"
    pixels = {n: x for s in SPLITS for n, x in zip(first.names[s], first.images[s])}
    for split in SPLITS:
        for name, x in zip(second.names[split], second.images[split]):
            np.testing.assert_array_equal(x, pixels[name], err_msg=name)
    store_of = {Path(a.images["train"].chunks).parent for a in (first, second)}
    assert len(store_of) == 1, f"both carves come from one store: {store_of}"


def test_interrupted_decode_resumes_with_the_missing_chunks(data_dir, tmp_path, monkeypatch):
    files = _kermany(data_dir, tmp_path / "imgs", 40)
    splits = _splits(files)
    cache = tmp_path / "c"
    real, calls = store_chunks.decode_chunk, []

    def dies_on_the_third(paths, size):
        calls.append(paths)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C, mid-decode
        return real(paths, size)

    monkeypatch.setattr(store_chunks, "decode_chunk", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        store_splits(splits, tmp_path / "imgs", 16, cache=cache, workers=1, chunk=8, progress=False)
    monkeypatch.setattr(store_chunks, "decode_chunk", real)
    resumed = store_splits(splits, tmp_path / "imgs", 16, cache=cache, workers=1, chunk=8, progress=False)
    assert sorted(d.index for d in resumed.decoded) == [2, 3, 4], \
        f"chunks 0 and 1 were written before the interruption: {[d.index for d in resumed.decoded]}"
    chunks = next(resumed.store.glob("chunks-8"))
    for index in (1, 3):
        (chunks / f"{index:06d}.json").unlink()  # the record goes last: a chunk without one is missing
    again = store_splits(splits, tmp_path / "imgs", 16, cache=cache, workers=1, chunk=8, progress=False)
    assert sorted(d.index for d in again.decoded) == [1, 3], [d.index for d in again.decoded]
    fresh = store_splits(splits, tmp_path / "imgs", 16, cache=None, workers=1, chunk=8, progress=False)
    for split in SPLITS:
        np.testing.assert_array_equal(again.images[split], fresh.images[split], err_msg=split)


def test_key_follows_files_size_and_decoder_not_the_carve(data_dir, tmp_path):
    files = _kermany(data_dir, tmp_path / "imgs", 12)
    entries = file_entries(files, tmp_path / "imgs")
    key = store_key(entries, 32)
    assert store_key(entries, 32) == key
    assert store_key(entries, 64) != key, "image size"
    assert store_key(entries, 32, version=DECODER_VERSION + 1) != key, "decoder version"
    assert store_key(entries, 32, options={"channels": 3}) != key, "decode options"
    os.utime(files[0], ns=(0, 10**18))
    assert store_key(file_entries(files, tmp_path / "imgs"), 32) != key, "a file's mtime"
    a = store_splits(_splits(files), tmp_path / "imgs", 32, cache=tmp_path / "c", workers=1, progress=False)
    reordered = {"train": _splits(files)["train"][::-1], "val": _splits(files)["test"], "test": _splits(files)["val"]}
    b = store_splits(reordered, tmp_path / "imgs", 32, cache=tmp_path / "c", workers=1, progress=False)
    assert a.store == b.store and not b.decoded, "another carve of the same files: the same store, nothing decoded"
    assert a.folder != b.folder and a.key != b.key, "each carve has its own split files and key"


def test_store_splits_pickle_as_paths_and_rows(data_dir, tmp_path):
    files = _kermany(data_dir, tmp_path / "imgs", 30)
    out = store_splits(_splits(files), tmp_path / "imgs", 64, cache=tmp_path / "c", workers=1, progress=False)
    arrays = DatasetArrays("x", out.images, {s: np.zeros(len(out.images[s]), np.int64) for s in SPLITS}, ["a", "b"])
    pixels = sum(x.nbytes for x in out.images.values())
    blob = pickle.dumps(arrays)
    assert len(blob) < 2000 < pixels, f"pickle {len(blob)} bytes for {pixels} bytes of pixels"
    back = pickle.loads(blob)
    for split in SPLITS:
        assert isinstance(back.images[split], ChunkRows) and back.images[split].chunks == out.images[split].chunks
        np.testing.assert_array_equal(back.images[split], out.images[split], err_msg=split)
    assert len(pickle.dumps(arrays.by_value())) > pixels, "by_value ships the pixels"
    shipped = pickle.loads(pickle.dumps(arrays.by_value()))
    for split in SPLITS:
        assert type(shipped.images[split]) is np.ndarray, f"{split}: unpickled as pixels, no path"
        np.testing.assert_array_equal(shipped.images[split], out.images[split], err_msg=split)
    arrays.images["train"] = np.asarray(arrays.images["train"])[1:]  # pixels in memory: they travel
    assert len(pickle.dumps(arrays)) > out.images["train"][1:].nbytes


def test_local_pool_decodes_with_more_than_one_process(data_dir, tmp_path):
    files = _kermany(data_dir, tmp_path / "imgs", 640)
    out = store_splits(_splits(files), tmp_path / "imgs", 32, cache=tmp_path / "c", workers=2, chunk=32,
                       progress=False)
    pids = {d.pid for d in out.decoded}
    assert len(out.decoded) == 20 and len(pids) == 2 and os.getpid() not in pids, \
        f"20 chunks over two pool processes, got {len(out.decoded)} chunks by {pids}"
    for split in SPLITS:
        for path, got in list(zip(_splits(files)[split], out.images[split]))[::50]:
            np.testing.assert_array_equal(got, decode_image(path, 32)[0][:1], err_msg=path.name)


def test_corrupt_file_is_named_or_skipped(data_dir, tmp_path):
    files = _kermany(data_dir, tmp_path / "imgs", 20)
    bad = tmp_path / "imgs" / "zz_bad.jpeg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    splits = _splits(files)
    splits["val"] = splits["val"] + [bad]
    with pytest.raises(TLError, match="zz_bad.jpeg.*--skip-bad-images"):
        store_splits(splits, tmp_path / "imgs", 16, cache=tmp_path / "c", workers=1, progress=False)
    out = store_splits(splits, tmp_path / "imgs", 16, cache=tmp_path / "c", workers=1, progress=False, skip_bad=True)
    assert not out.decoded, "the failure is part of the store: nothing decoded again"
    assert out.bad == {"train": [], "val": [str(bad)], "test": []} and len(out.kept["val"]) == len(splits["val"]) - 1


def test_refuses_a_store_that_does_not_fit_on_disk(data_dir, tmp_path, monkeypatch):
    files = _kermany(data_dir, tmp_path / "imgs", 10)
    monkeypatch.setattr(layout.shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000))
    with pytest.raises(TLError, match=r"needs about .* free; free space there or point TL_CACHE_DIR"):
        store_splits(_splits(files), tmp_path / "imgs", 64, cache=tmp_path / "c", workers=1, progress=False)
    assert not list((tmp_path / "c").rglob("chunks-*/*")), "refused before decoding anything"


def test_progress_off_a_terminal_is_a_line_per_ten_percent():
    stream = io.StringIO()
    bar = store.Progress(1000, "[tl.data] decode", stream=stream)
    for _ in range(100):
        bar.update(10)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue(), lines
    assert lines[-1].startswith("[tl.data] decode: 100%") and "1000/1000" in lines[-1], lines[-1]


def _wait_until_spread_reaches(node_ids: set, timeout_s: float = 60.0) -> None:
    """A node the GCS lists can still be missing from the head's resource view for a moment, and a
    SPREAD task then lands on the head alone (seen once on 2 loaded cores). Wait until SPREAD
    reaches every node, so the test below checks the store's scheduling, not the cluster's start."""
    import time

    import ray

    @ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
    def where() -> str:
        time.sleep(0.2)
        return ray.get_runtime_context().get_node_id()

    deadline, seen = time.monotonic() + timeout_s, set()
    while seen != node_ids and time.monotonic() < deadline:
        seen |= set(ray.get([where.remote() for _ in range(2 * len(node_ids))]))
    assert seen == node_ids, f"SPREAD reached only {seen} of {node_ids} in {timeout_s:.0f} s"


@pytest.mark.slow
def test_two_node_cluster_decodes_on_both_nodes(data_dir, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        _wait_until_spread_reaches(set(n.node_id for n in (cluster.head_node, worker)))
        files = _kermany(data_dir, tmp_path / "imgs", 320)
        out = store_splits(_splits(files), tmp_path / "imgs", 32, cache=tmp_path / "c", chunk=16, workers=2,
                           progress=False)
        nodes = {d.node for d in out.decoded}
        assert len(out.decoded) == 20, len(out.decoded)
        assert nodes == {cluster.head_node.node_id, worker.node_id}, f"chunks by node: {nodes}"
        for split in SPLITS:
            for path, got in list(zip(_splits(files)[split], out.images[split]))[::40]:
                np.testing.assert_array_equal(got, decode_image(path, 32)[0][:1], err_msg=path.name)
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_the_store_fingerprints_its_images_as_the_audit_would(small_data_dir, tmp_path):
    """The workers hash what they decode, so the search's driver need not read the pixels to audit
    them: the store's fingerprints are the audit's own, and the audit's record is the same either way."""
    from tl.data.audit import audit_splits
    from tl.data.fingerprints import image_fingerprints

    arrays = load_dataset(str(small_data_dir / "chest_xray"), 32, seed=3)
    assert arrays.image_fingerprints is not None, "the store hands its fingerprints on"
    for split in SPLITS:
        hashes, digests = image_fingerprints(np.asarray(arrays.images[split]))
        stored_hashes, stored_digests = arrays.image_fingerprints[split]
        assert np.array_equal(hashes, stored_hashes) and np.array_equal(digests, stored_digests), split
    computed, _ = audit_splits(arrays.images, names=arrays.names)
    given, _ = audit_splits(arrays.images, names=arrays.names, fingerprints=arrays.image_fingerprints)
    computed.pop("seconds"), given.pop("seconds")
    assert computed == given
    assert pickle.loads(pickle.dumps(arrays)).image_fingerprints is None, "trials never get them"


def test_pixel_digests_of_a_grey_image_are_the_same_at_one_and_three_channels():
    from tl.data.fingerprints import pixel_digests

    grey = np.random.default_rng(0).integers(0, 255, (2, 1, 8, 8), dtype=np.uint8)
    colour = grey.repeat(3, axis=1)
    colour[1, 2] ^= 1  # really colour now
    assert (pixel_digests(grey)[0] == pixel_digests(colour)[0]).all()
    assert not (pixel_digests(grey)[1] == pixel_digests(colour)[1]).all()


def test_unknown_decode_scheduler_is_named_with_the_allowed_ones(data_dir, tmp_path, monkeypatch):
    files = _kermany(data_dir, tmp_path / "imgs", 10)
    monkeypatch.setenv("TL_DECODE_SCHEDULER", "dask")
    with pytest.raises(TLError, match="TL_DECODE_SCHEDULER must be one of tasks, ray-data, got 'dask'"):
        store_splits(_splits(files), tmp_path / "imgs", 16, cache=tmp_path / "c", workers=2, chunk=4, progress=False)
    assert not list((tmp_path / "c").rglob("chunks-*/*")), "refused before decoding anything"


@pytest.mark.slow
def test_ray_data_scheduler_decodes_the_same_pixels_in_ray_workers(data_dir, tmp_path, monkeypatch):
    """TL_DECODE_SCHEDULER=ray-data: the chunks go through ray.data.from_items(...).map, on a local Ray
    it starts, in Ray's worker processes, and land as the process pool's would."""
    import ray

    files = _kermany(data_dir, tmp_path / "imgs", 320)
    monkeypatch.setenv("TL_DECODE_SCHEDULER", "ray-data")
    try:
        out = store_splits(_splits(files), tmp_path / "imgs", 32, cache=tmp_path / "c", workers=2, chunk=32,
                           progress=False)
        node = ray.get_runtime_context().get_node_id()
    finally:
        ray.shutdown()
    assert sorted(d.index for d in out.decoded) == list(range(10)), [d.index for d in out.decoded]
    assert {d.node for d in out.decoded} == {node} and os.getpid() not in {d.pid for d in out.decoded}, \
        "decoded by Ray workers of the local Ray, not in this process"
    monkeypatch.setenv("TL_DECODE_SCHEDULER", "tasks")
    pool = store_splits(_splits(files), tmp_path / "imgs", 32, cache=tmp_path / "pool", workers=2, chunk=32,
                        progress=False)
    for split in SPLITS:
        np.testing.assert_array_equal(out.images[split], pool.images[split], err_msg=split)


def _functions(path: Path):
    import ast

    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield tree, node


def test_store_modules_are_small_and_import_no_private_name_from_a_sibling():
    """Issue 26: the store split by job; no function over 60 lines of code (docstring, comments and
    blank lines not counted); helpers shared across its modules are public."""
    import ast

    package = Path(store.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert {m.stem for m in modules} >= {"keys", "chunks", "schedule", "progress", "layout", "fill", "gather",
                                          "splits", "admin"}, [m.stem for m in modules]
    for module in modules:
        lines = module.read_text().splitlines()
        for tree, fn in _functions(module):
            body = fn.body[1:] if ast.get_docstring(fn) else fn.body
            code = [ln for ln in lines[body[0].lineno - 1:fn.end_lineno] if ln.strip() and not ln.strip().startswith("#")]
            assert len(code) <= 60, f"{module.name}:{fn.name} has {len(code)} lines of code"
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tl.data.store"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{module.name} imports {private} from {node.module}"
