"""tl.data: npz validation, ImageFolder splits (carved, seeded, recorded), bad images, the cache."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl.data import load_dataset, load_image_folder, load_npz_splits, resolve_dataset_path
from tl.data.arrays import ChunkRows
from tl.core.errors import TLError

N_PER_CLASS_TRAIN, N_PER_CLASS_TEST = 20, 5
CLASSES = ("NORMAL", "PNEUMONIA")


def _write_npz(path: Path, n: dict | None = None, rgb: bool = False, label_shape: str = "column",
               labels: dict | None = None, drop: str | None = None, size: int = 8) -> Path:
    """A MedMNIST-layout npz with ``n[split]`` images of ``size`` px and labels alternating 0/1."""
    n = n or {"train": 6, "val": 4, "test": 4}
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in n.items():
        shape = (count, size, size, 3) if rgb else (count, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        y = labels[split] if labels and split in labels else np.arange(count) % 2
        y = np.asarray(y, dtype=np.uint8)
        arrays[f"{split}_labels"] = y[:, None] if label_shape == "column" else y
    if drop:
        arrays.pop(drop)
    np.savez(path, **arrays)
    return path


def _copy_subset(src: Path, dst: Path, n: int) -> None:
    """Copy the first ``n`` JPEGs of each class folder of ``src`` into ``dst``."""
    for cls in CLASSES:
        (dst / cls).mkdir(parents=True)
        for p in sorted((src / cls).iterdir())[:n]:
            shutil.copyfile(p, dst / cls / p.name)


@pytest.fixture
def xray_subset(tmp_path: Path, small_data_dir: Path) -> Path:
    """A small chest_xray copy: train/ and test/ with 20 and 5 real JPEGs per class, no val/."""
    root = tmp_path / "xray_small"
    _copy_subset(small_data_dir / "chest_xray" / "train", root / "train", N_PER_CLASS_TRAIN)
    _copy_subset(small_data_dir / "chest_xray" / "test", root / "test", N_PER_CLASS_TEST)
    return root


# --- npz ---------------------------------------------------------------------------------------

def test_pneumoniamnist_has_official_split_sizes_and_class_counts(data_dir: Path):
    arrays = load_dataset("pneumoniamnist", 28, data_dir, offline=True)
    sizes = {s: len(arrays.labels[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 4708, "val": 524, "test": 624}, f"official split sizes, got {sizes}"
    counts = {s: np.bincount(arrays.labels[s], minlength=2).tolist() for s in ("train", "val", "test")}
    assert counts == {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]}, \
        f"NORMAL/PNEUMONIA counts per split, got {counts}"
    for split in ("train", "val", "test"):
        x = arrays.images[split]
        assert x.shape == (sizes[split], 1, 28, 28), f"{split} images shape {x.shape}"
        assert x.dtype == np.uint8, f"{split} images dtype {x.dtype}"
        assert arrays.labels[split].dtype == np.int64, f"{split} labels dtype {arrays.labels[split].dtype}"
    assert arrays.class_names == ["normal", "pneumonia"], arrays.class_names
    assert arrays.task == "binary" and arrays.channels == 1, (arrays.task, arrays.channels)


def test_pneumoniamnist_fixture_loads_in_the_medmnist_layout(small_data_dir: Path):
    """The same loader on tests/fixtures's subset; expected values read from the file with numpy alone."""
    with np.load(small_data_dir / "pneumoniamnist.npz") as npz:
        raw = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in ("train", "val", "test")}
    arrays = load_dataset("pneumoniamnist", 28, small_data_dir, offline=True)
    for split, (images, labels) in raw.items():
        assert arrays.images[split].shape == (len(images), 1, 28, 28), f"{split}: {arrays.images[split].shape}"
        np.testing.assert_array_equal(arrays.images[split][:, 0], images, err_msg=f"{split} images")
        np.testing.assert_array_equal(arrays.labels[split], labels[:, 0].astype(np.int64), err_msg=f"{split} labels")
        assert sorted(np.unique(labels).tolist()) == [0, 1], f"{split}: both classes in the fixture"
    assert arrays.class_names == ["normal", "pneumonia"] and arrays.task == "binary", arrays.class_names


def test_npz_missing_key_is_named(tmp_path: Path):
    path = _write_npz(tmp_path / "toy.npz", drop="val_labels")
    with pytest.raises(TLError, match="val_labels") as info:
        load_npz_splits(path)
    assert "missing keys" in str(info.value), str(info.value)


def test_npz_images_and_labels_of_different_length_fail(tmp_path: Path):
    path = _write_npz(tmp_path / "toy.npz", labels={"test": [0, 1, 0]})  # 4 test images, 3 labels
    with pytest.raises(TLError, match=r"test_images has 4 rows but test_labels has 3"):
        load_npz_splits(path)


def test_npz_label_outside_known_classes_fails(tmp_path: Path):
    # pneumoniamnist is known to have 2 classes, so label 5 cannot be a third class.
    path = _write_npz(tmp_path / "pneumoniamnist.npz", labels={"train": [0, 1, 5, 0, 1, 0]})
    with pytest.raises(TLError, match=r"train_labels has 1 labels outside \[0, 1\] \(e\.g\. 5\)"):
        load_npz_splits(path)


def test_npz_rgb_channels_last_become_channels_first(tmp_path: Path):
    path = _write_npz(tmp_path / "toy.npz", rgb=True)
    raw = np.load(path)["train_images"]
    arrays = load_npz_splits(path)
    x = arrays.images["train"]
    assert x.shape == (6, 3, 8, 8), f"(N,H,W,3) must become (N,3,H,W), got {x.shape}"
    np.testing.assert_array_equal(x[2, 1], raw[2, :, :, 1], err_msg="channel 1 of image 2 moved")
    assert arrays.channels == 3, arrays.channels


def test_npz_flat_labels_are_accepted(tmp_path: Path):
    path = _write_npz(tmp_path / "toy.npz", label_shape="flat")
    arrays = load_npz_splits(path)
    assert arrays.labels["val"].tolist() == [0, 1, 0, 1], arrays.labels["val"]
    assert arrays.num_classes == 2 and arrays.class_names == ["0", "1"], arrays.class_names


def test_unknown_dataset_name_lists_known_names_and_the_expected_file(tmp_path: Path):
    with pytest.raises(TLError) as info:
        resolve_dataset_path("nosuchmnist", tmp_path, offline=True)
    msg = str(info.value)
    assert str(tmp_path / "nosuchmnist.npz") in msg and "pneumoniamnist" in msg, msg


def test_known_medmnist_name_offline_says_where_to_put_the_file(tmp_path: Path):
    with pytest.raises(TLError) as info:
        load_dataset("breastmnist", 28, tmp_path, offline=True)
    msg = str(info.value)
    assert "offline" in msg and f"put breastmnist.npz (MedMNIST, 28 px) at {tmp_path / 'breastmnist.npz'}" in msg, msg


def test_dataset_folder_name_resolves_inside_data_dir(small_data_dir: Path):
    assert resolve_dataset_path("chest_xray", small_data_dir) == small_data_dir / "chest_xray"
    assert resolve_dataset_path("pneumoniamnist", small_data_dir) == small_data_dir / "pneumoniamnist.npz"


# --- ImageFolder -------------------------------------------------------------------------------

def test_imagefolder_carves_val_from_train_stratified(xray_subset: Path):
    arrays = load_image_folder(xray_subset, 32, seed=0)
    sizes = {s: np.bincount(arrays.labels[s], minlength=2).tolist() for s in ("train", "val", "test")}
    # 10 % of 20 per class go to val; test/ is used as it is.
    assert sizes == {"train": [18, 18], "val": [2, 2], "test": [5, 5]}, f"per-class split sizes, got {sizes}"
    assert arrays.class_names == list(CLASSES), arrays.class_names
    # Kermany's JPEGs are RGB files of grey content: stored at one channel (the batcher expands it).
    assert arrays.images["train"].shape == (36, 1, 32, 32), arrays.images["train"].shape
    assert arrays.images["val"].dtype == np.uint8
    carved = arrays.split_record["carved"]
    assert list(carved) == ["val"], f"only val is carved when test/ exists, got {list(carved)}"
    files = carved["val"]["files"]
    assert carved["val"]["n"] == 4 and len(files) == 4, carved["val"]
    assert all(f.startswith("train/") for f in files), files
    # The recorded files are the val images, in order: decode the first one and compare.
    with Image.open(xray_subset / files[0]) as im:
        expected = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR)).transpose(2, 0, 1)
    assert (expected == expected[:1]).all(), "the JPEG's three channels decode alike"
    np.testing.assert_array_equal(arrays.images["val"][0], expected[:1], err_msg=f"val[0] is not {files[0]}")
    assert arrays.labels["val"][0] == CLASSES.index(Path(files[0]).parent.name)


def test_imagefolder_val_carving_is_seeded(xray_subset: Path):
    def carved(seed: int) -> list[str]:
        return load_image_folder(xray_subset, 8, seed=seed).split_record["carved"]["val"]["files"]

    first = carved(0)
    assert carved(0) == first, "same seed must carve the same files"
    assert carved(1) != first, "another seed must carve other files"


def test_imagefolder_bare_class_folders_get_val_and_test_carved(tmp_path: Path, small_data_dir: Path):
    root = tmp_path / "bare"
    _copy_subset(small_data_dir / "chest_xray" / "train", root, N_PER_CLASS_TRAIN)
    arrays = load_image_folder(root, 16, seed=3)
    sizes = {s: np.bincount(arrays.labels[s], minlength=2).tolist() for s in ("train", "val", "test")}
    # test: round(0.15 * 20) = 3 per class; val: round(0.1 * 17) = 2 per class from what remains.
    assert sizes == {"train": [15, 15], "val": [2, 2], "test": [3, 3]}, f"per-class split sizes, got {sizes}"
    carved = arrays.split_record["carved"]
    assert set(carved) == {"val", "test"}, carved.keys()
    val, test = set(carved["val"]["files"]), set(carved["test"]["files"])
    assert len(val) == 4 and len(test) == 6 and not val & test, f"val {val} and test {test} must be disjoint"


def test_imagefolder_corrupt_jpeg_is_named(xray_subset: Path):
    bad = xray_subset / "test" / "NORMAL" / "zz_random_bytes.jpeg"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(TLError, match="zz_random_bytes.jpeg") as info:
        load_image_folder(xray_subset, 16)
    assert "corrupt or truncated" in str(info.value), str(info.value)


def test_imagefolder_truncated_jpeg_is_named(xray_subset: Path):
    real = sorted((xray_subset / "test" / "PNEUMONIA").iterdir())[0]
    bad = xray_subset / "test" / "PNEUMONIA" / "zz_truncated.jpeg"
    bad.write_bytes(real.read_bytes()[:200])
    with pytest.raises(TLError, match="zz_truncated.jpeg"):
        load_image_folder(xray_subset, 16)


def test_imagefolder_skip_bad_skips_and_records(xray_subset: Path):
    (xray_subset / "test" / "NORMAL" / "zz_random_bytes.jpeg").write_bytes(np.random.default_rng(0).bytes(4000))
    real = sorted((xray_subset / "test" / "PNEUMONIA").iterdir())[0]
    (xray_subset / "test" / "PNEUMONIA" / "zz_truncated.jpeg").write_bytes(real.read_bytes()[:200])
    arrays = load_image_folder(xray_subset, 16, skip_bad=True)
    assert np.bincount(arrays.labels["test"]).tolist() == [5, 5], \
        f"the two bad files are dropped, labels kept aligned: {arrays.labels['test']}"
    assert len(arrays.images["test"]) == 10, arrays.images["test"].shape
    skipped = arrays.split_record["skipped_bad_images"]
    assert list(skipped) == ["test"] and len(skipped["test"]) == 2, skipped
    assert {Path(p).name for p in skipped["test"]} == {"zz_random_bytes.jpeg", "zz_truncated.jpeg"}, skipped


def test_imagefolder_empty_class_folder_fails(xray_subset: Path):
    (xray_subset / "test" / "EMPTY").mkdir()
    (xray_subset / "train" / "EMPTY").mkdir()
    with pytest.raises(TLError, match="EMPTY: empty class folder"):
        load_image_folder(xray_subset, 16)


def test_imagefolder_classes_differing_between_splits_fail(xray_subset: Path):
    shutil.copytree(xray_subset / "test" / "NORMAL", xray_subset / "test" / "COVID")
    with pytest.raises(TLError, match="classes differ between splits") as info:
        load_image_folder(xray_subset, 16)
    assert "COVID" in str(info.value), str(info.value)


def test_decoded_imagefolder_is_cached_and_reread(xray_subset: Path, tl_cache_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    import tl.data.store.chunks

    before = set((tl_cache_dir / "decoded").glob("xray_small-*/store.json"))
    first = load_dataset(str(xray_subset), 24, seed=0)
    stores = set((tl_cache_dir / "decoded").glob("xray_small-*/store.json")) - before
    assert len(stores) == 1, f"one decode store under $TL_CACHE_DIR, got {stores}"

    def no_decoding(*args, **kwargs):
        raise AssertionError("second load decoded the JPEGs again instead of reading the store")

    monkeypatch.setattr(tl.data.store.chunks, "decode_chunk", no_decoding)
    second = load_dataset(str(xray_subset), 24, seed=0)
    for split in ("train", "val", "test"):
        assert isinstance(second.images[split], ChunkRows), f"{split}: served as rows of the store's chunks"
        np.testing.assert_array_equal(second.images[split], first.images[split], err_msg=split)
        np.testing.assert_array_equal(second.labels[split], first.labels[split], err_msg=split)
    assert second.class_names == first.class_names
    assert second.split_record == first.split_record, "the split record survives the cache"


def test_test_fingerprint_tells_carved_test_splits_of_two_seeds_apart(tmp_path: Path, small_data_dir: Path):
    """Both carves hold the same label counts; only images (and file names) differ."""
    root = tmp_path / "bare"
    _copy_subset(small_data_dir / "chest_xray" / "train", root, 10)
    a, again, b = (load_image_folder(root, 8, seed=s) for s in (0, 0, 1))
    assert np.array_equal(np.sort(a.labels["test"]), np.sort(b.labels["test"])), "same label counts"
    assert a.test_fingerprint == again.test_fingerprint, "the same split, the same fingerprint"
    assert a.test_fingerprint != b.test_fingerprint, "another seed carves other test images"
    assert load_image_folder(root, 16, seed=0).test_fingerprint == a.test_fingerprint, \
        "the same files decoded at another size are the same test split"
