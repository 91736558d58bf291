"""The trainable per task on small hand-made sets (no Ray): an ordinal set whose grade is visible in
the pixels (a code check that the QWK path learns, not a result), and a binary set whose positive
class is class 0 (as BreastMNIST's malignant), with balanced class weights and the val threshold."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tl.data import DatasetArrays
from tl.train.trainable import run_epochs

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def graded_set(n: dict | None = None, seed: int = 0) -> DatasetArrays:
    """5 grades; grade g = a bright bar of 3 + 4 g pixels across the image (16 px, gray noise)."""
    n = n or {"train": 300, "val": 100, "test": 100}
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for split, count in n.items():
        y = rng.integers(0, 5, count)
        x = rng.integers(10, 60, (count, 1, 16, 16)).astype(np.uint8)
        for i, g in enumerate(y):
            x[i, 0, :3 + 3 * g, 6:10] = 220
        images[split], labels[split] = x, y.astype(np.int64)
    return DatasetArrays("graded", images, labels, [str(g) for g in range(5)])


def _last(cfg: dict, arrays: DatasetArrays) -> dict:
    base = {"backbone": "convmodel", "weights": "none", "augment": False, "batch_size": 32, "image_size": 16}
    return [m for m, _ in run_epochs({**base, **cfg}, arrays, None, device=CPU)][-1]


def test_ordinal_task_reports_mae_and_qwk_and_learns_visible_grades():
    arrays = graded_set().apply_task("ordinal")
    last = _last({"epochs": 4, "lr": 3e-3, "metric": "val_qwk", "task": "ordinal"}, arrays)
    for key in ("val_qwk", "val_mae", "val_acc", "test_qwk", "test_mae", "test_balanced_acc"):
        assert key in last, sorted(last)
    assert last["test_qwk"] > 0.6, f"grades are visible bars; test QWK {last['test_qwk']:.3f} (code check)"
    assert last["test_mae"] < 1.0, last["test_mae"]


def test_binary_with_class_0_positive_balanced_weights_and_val_threshold():
    rng = np.random.default_rng(1)
    images, labels = {}, {}
    for split, count in {"train": 200, "val": 80, "test": 80}.items():
        y = (rng.random(count) < 0.8).astype(np.int64)  # class 0 ("malignant") is the rare 20 %
        x = rng.integers(10, 60, (count, 1, 16, 16)).astype(np.uint8)
        x[y == 0, 0, 4:12, 4:12] = 200
        images[split], labels[split] = x, y
    arrays = DatasetArrays("tumours", images, labels, ["malignant", "benign"])
    arrays.apply_task(positive_class="malignant")
    assert arrays.positive_index == 0
    last = _last({"epochs": 2, "lr": 3e-3, "metric": "val_balanced_acc", "class_weight": "balanced",
                  "positive_class": "malignant"}, arrays)
    for key in ("val_balanced_acc", "test_sensitivity", "val_threshold", "test_balanced_acc_at_val_threshold",
                "test_sensitivity_at_val_threshold"):
        assert key in last, sorted(last)
    # sensitivity is about malignant: recompute it from the saved predictions' class-0 column
    m, state = list(run_epochs({"backbone": "convmodel", "weights": "none", "augment": False, "batch_size": 32,
                                "image_size": 16, "epochs": 1, "positive_class": "malignant"}, arrays, None,
                               device=CPU))[-1]
    probs, y = state["test_predictions"]["probs"], state["test_predictions"]["labels"]
    called = probs.argmax(1) == 0
    assert np.isclose(m["test_sensitivity"], called[y == 0].mean()), (m["test_sensitivity"], called[y == 0].mean())
    assert np.isclose(m["test_specificity"], (~called[y == 1]).mean()), m["test_specificity"]
