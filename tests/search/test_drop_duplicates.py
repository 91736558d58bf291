"""--drop-duplicates (issue 29 item 5): val and test images the split audit finds copied from train
are removed before training, recorded, and the search reports on the rest."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tl.data.arrays import DatasetArrays

ROOT = Path(__file__).resolve().parents[2]


def test_without_removes_rows_and_records_them():
    images = {s: np.arange(n * 4, dtype=np.uint8).reshape(n, 1, 2, 2) for s, n in (("train", 6), ("val", 4), ("test", 5))}
    labels = {s: np.arange(len(x)) % 2 for s, x in images.items()}
    arrays = DatasetArrays("toy", images, labels, ["a", "b"], names={s: [f"{s}{i}" for i in range(len(x))]
                                                                    for s, x in images.items()})
    before = arrays.split_fingerprint("test")
    out = arrays.without({"test": np.array([0, 3]), "val": np.array([], dtype=np.int64)}, "copies")
    assert out.names["test"] == ["test1", "test2", "test4"] and out.labels["test"].tolist() == [1, 0, 0]
    assert np.array_equal(out.images["test"], images["test"][[1, 2, 4]])
    assert out.images["train"] is images["train"] and len(out.labels["val"]) == 4, "other splits untouched"
    assert out.split_record["dropped"] == {"why": "copies", "test": 2}
    assert out.split_fingerprint("test") != before and arrays.split_fingerprint("test") == before


@pytest.mark.slow
def test_search_drops_test_images_copied_from_train(tmp_path: Path, small_data_dir: Path):
    with np.load(small_data_dir / "pneumoniamnist.npz") as src:
        data = {k: src[k] for k in src.files}
    data["test_images"] = data["test_images"].copy()
    data["test_images"][:90] = data["train_images"][:90]  # 90 of 120 test images are train images
    data["test_labels"] = data["test_labels"].copy()
    data["test_labels"][:90] = data["train_labels"][:90]
    np.savez(tmp_path / "leaky.npz", **data)
    proc = subprocess.run([sys.executable, "-m", "tl.search", "search_spaces/smoke.py", "--dataset",
                           str(tmp_path / "leaky.npz"), "--storage", str(tmp_path / "r"), "--name", "x",
                           "--num-samples", "1", "--max-epochs", "1", "--drop-duplicates"],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    meta = json.loads((tmp_path / "r" / "x" / "tl_search.json").read_text())
    dropped = meta["dataset"]["split"]["dropped"]
    assert dropped["test"] >= 90 and meta["dataset"]["split_sizes"]["test"] == 120 - dropped["test"]
    assert f"--drop-duplicates: removed" in proc.stdout and "images copied from train" in proc.stdout
    assert f"({120 - dropped['test']} images, 95% bootstrap CI)" in proc.stdout, "tested on the rest only"
    assert "without a copy in train" not in proc.stdout, "nothing copied is left to leave out"
