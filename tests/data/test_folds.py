"""tl.data.folds: K folds over train + val (issue 25): a partition, stratified, patient-disjoint, never
test; a fold as index sets over the decoded splits; the checks before Ray."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tl.core.errors import TLError
from tl.data import load_npz_splits
from tl.data.arrays import DatasetArrays
from tl.data.folds import assignment_for, check_folds, fold_arrays, fold_assignment

ROOT = Path(__file__).resolve().parents[2]


def _grouped_arrays(n_train: int = 60, n_val: int = 20, per_patient: int = 3) -> DatasetArrays:
    """Arrays whose images carry their index as pixels, with patients of ``per_patient`` images."""
    rng = np.random.default_rng(0)
    images, labels, groups = {}, {}, {}
    start = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", 10)):
        index = np.arange(start, start + n)
        images[split] = np.broadcast_to(index[:, None, None, None] % 251, (n, 1, 4, 4)).astype(np.uint8).copy()
        labels[split] = rng.integers(0, 2, size=n)
        groups[split] = np.array([f"p{i // per_patient}" for i in index])
        start += n
    return DatasetArrays("grouped", images, labels, ["a", "b"], {}, groups=groups,
                         names={s: [f"{s}{i}" for i in range(len(labels[s]))] for s in labels})


def test_folds_partition_train_and_val_stratified_and_leave_test_alone(small_data_dir: Path):
    arrays = load_npz_splits(small_data_dir / "pneumoniamnist.npz")
    n_train, n_val = len(arrays.labels["train"]), len(arrays.labels["val"])
    folds, _ = assignment_for(arrays, 5, 0)
    assert len(folds) == n_train + n_val and sorted(set(folds)) == [0, 1, 2, 3, 4]
    pooled = np.concatenate([arrays.labels["train"], arrays.labels["val"]])
    share = pooled.mean()
    for i in range(5):
        assert abs(pooled[folds == i].mean() - share) < 0.02, "folds are stratified by label"
    seen = np.zeros(n_train + n_val, dtype=int)
    for i in range(5):
        fold = fold_arrays(arrays, 5, i, 0)
        rows = fold.split_record["cv"]["val_rows"]
        seen[rows] += 1
        assert len(fold.labels["train"]) + len(fold.labels["val"]) == n_train + n_val
        every = np.concatenate([arrays.images["train"], arrays.images["val"]])
        assert np.array_equal(fold.images["val"], every[rows]) and np.array_equal(fold.labels["val"], pooled[rows])
        assert fold.images["test"] is arrays.images["test"] and fold.test_fingerprint == arrays.test_fingerprint
    assert (seen == 1).all(), "every pooled image is validated exactly once"
    assert np.array_equal(assignment_for(arrays, 5, 0)[0], folds), "the same seed, the same folds (trials recompute them)"
    assert not np.array_equal(assignment_for(arrays, 5, 1)[0], folds)


def test_grouped_folds_never_split_a_patient():
    arrays = _grouped_arrays()
    folds, _ = assignment_for(arrays, 4, 0)
    patients = np.concatenate([arrays.groups["train"], arrays.groups["val"]])
    assert all(len(set(folds[patients == p])) == 1 for p in set(patients))
    fold = fold_arrays(arrays, 4, 1, 0)
    assert not set(fold.groups["train"]) & set(fold.groups["val"])
    assert len(fold.groups["val"]) == len(fold.labels["val"])


def test_bad_fold_counts_are_refused_naming_the_cause():
    labels = np.array([0, 1] * 10)
    with pytest.raises(TLError, match="--cv must be an integer >= 2"):
        fold_assignment(labels, None, 1, 0)
    with pytest.raises(TLError, match="3 patient group"):
        fold_assignment(labels, np.array(["a", "b", "c"] * 6 + ["a", "b"]), 5, 0)
    with pytest.raises(TLError, match="nothing to fold"):
        fold_assignment(labels[:3], None, 5, 0)
    folds, note = fold_assignment(np.array([0] * 18 + [1] * 2), None, 5, 0)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4] and "fewer than 5 images" in note, "a thin class is pooled, not refused"


def test_check_folds_names_the_official_val_it_pools(small_data_dir: Path):
    lines = check_folds(str(small_data_dir / "pneumoniamnist.npz"), None, 5, 0)
    assert "1,080 images" in lines[0] and "official val split joins train" in lines[1]


@pytest.mark.parametrize("cv, message", [("1", "--cv must be an integer >= 2"), ("x", "--cv must be an integer >= 2"),
                                         ("5000", "nothing to fold")])
def test_search_refuses_bad_cv_in_one_line_before_ray(cv: str, message: str, tmp_path: Path, small_data_dir: Path,
                                                      capsys):
    from tl.search.cli import main

    code = main(["search_spaces/smoke.py", "--data-dir", str(small_data_dir), "--storage", str(tmp_path), "--cv", cv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error: "), err[-1500:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir()), "nothing written"


def test_a_fold_of_the_decode_store_is_a_view_of_its_rows_with_the_same_pixels(small_data_dir):
    """Carved from the store, a fold trial's train and val stay rows of the store's chunks (nothing read
    at trial start), and hold exactly the pixels of the pooled train + val rows the fold names."""
    from tl.data import load_dataset
    from tl.data.arrays import ChunkRows

    arrays = load_dataset(str(small_data_dir / "chest_xray"), 16)
    assert all(isinstance(arrays.images[s], ChunkRows) for s in ("train", "val"))
    pooled = np.concatenate([np.asarray(arrays.images["train"]), np.asarray(arrays.images["val"])])
    fold = fold_arrays(arrays, 4, 1, seed=0)
    for side, rows in (("train", "train_rows"), ("val", "val_rows")):
        assert isinstance(fold.images[side], ChunkRows), side
        np.testing.assert_array_equal(np.asarray(fold.images[side]), pooled[fold.split_record["cv"][rows]])
