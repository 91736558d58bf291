"""Hand-built experiment folders in Ray Tune 2.x's layout, a few lines per trial.

Imported by the analysis tests (a unique module name, so it never clashes with other test
folders' helpers); the fixtures live in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

N_TEST = 200
# 60 % of the test images are class 1: majority rate 0.6, so the underfitting floor is 0.65.
LABELS = np.r_[np.zeros(80, dtype=np.int64), np.ones(120, dtype=np.int64)]

# Curves with known diagnoses (10 planned epochs unless cut).
HEALTHY = dict(
    train_loss=[0.70, 0.50, 0.40, 0.33, 0.28, 0.25, 0.22, 0.20, 0.19, 0.18],
    train_acc=[0.70, 0.80, 0.85, 0.88, 0.90, 0.91, 0.92, 0.93, 0.93, 0.94],
    val_loss=[0.72, 0.55, 0.45, 0.40, 0.36, 0.34, 0.32, 0.31, 0.30, 0.30],
    val_acc=[0.68, 0.78, 0.83, 0.86, 0.87, 0.88, 0.89, 0.89, 0.90, 0.90],
)
# Val loss bottoms at epoch 4 then rises clearly; train acc keeps climbing.
OVERFIT = dict(
    train_loss=[0.60, 0.40, 0.30, 0.20, 0.12, 0.08, 0.05, 0.03, 0.02, 0.01],
    train_acc=[0.75, 0.84, 0.89, 0.93, 0.96, 0.97, 0.98, 0.99, 0.99, 1.00],
    val_loss=[0.60, 0.48, 0.42, 0.40, 0.44, 0.50, 0.58, 0.66, 0.74, 0.82],
    val_acc=[0.74, 0.80, 0.84, 0.86, 0.86, 0.85, 0.85, 0.84, 0.84, 0.84],
)
# Train accuracy stuck below the majority-class rate.
UNDERFIT = dict(
    train_loss=[0.70, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69],
    train_acc=[0.55, 0.56, 0.55, 0.56, 0.55, 0.56, 0.55, 0.56, 0.55, 0.55],
    val_loss=[0.70, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69, 0.69],
    val_acc=[0.55, 0.55, 0.56, 0.55, 0.56, 0.55, 0.56, 0.55, 0.56, 0.55],
)
# Val accuracy jumps around at the end while val loss keeps falling.
UNSTABLE = dict(
    train_loss=HEALTHY["train_loss"],
    train_acc=HEALTHY["train_acc"],
    val_loss=[0.72, 0.55, 0.45, 0.40, 0.36, 0.34, 0.33, 0.32, 0.31, 0.30],
    val_acc=[0.68, 0.78, 0.83, 0.86, 0.80, 0.90, 0.78, 0.91, 0.79, 0.90],
)
# Validation looks great (0.95); the test split will say 0.75.
SHIFT = dict(
    train_loss=HEALTHY["train_loss"],
    train_acc=[0.70, 0.80, 0.86, 0.90, 0.93, 0.95, 0.96, 0.96, 0.97, 0.97],
    val_loss=HEALTHY["val_loss"],
    val_acc=[0.70, 0.80, 0.86, 0.90, 0.92, 0.93, 0.94, 0.95, 0.95, 0.95],
)


def predictions_with_accuracy(accuracy: float, *, seed: int = 0,
                              labels: np.ndarray = LABELS) -> tuple[np.ndarray, np.ndarray]:
    """Return (probs, labels) whose argmax is right on exactly round(accuracy * N) images."""
    rng = np.random.default_rng(seed)
    correct = np.zeros(labels.size, dtype=bool)
    correct[rng.permutation(labels.size)[: round(accuracy * labels.size)]] = True
    return predictions_from_correct(correct, seed=seed, labels=labels)


def predictions_from_correct(correct: np.ndarray, *, seed: int = 0,
                             labels: np.ndarray = LABELS) -> tuple[np.ndarray, np.ndarray]:
    """Return binary (probs, labels) whose argmax is right exactly where ``correct`` is True."""
    rng = np.random.default_rng(seed + 1)
    p_true = np.where(correct, rng.uniform(0.55, 0.99, labels.size), rng.uniform(0.01, 0.45, labels.size))
    probs = np.empty((labels.size, 2), dtype=np.float32)
    probs[np.arange(labels.size), labels] = p_true
    probs[np.arange(labels.size), 1 - labels] = 1 - p_true
    return probs, labels.copy()


class ExperimentBuilder:
    """Writes one experiment folder: tl_search.json plus trial folders like Ray Tune's."""

    def __init__(self, root: Path, name: str = "exp", *, meta: bool = True, metric: str = "val_acc"):
        self.path = root / name
        self.path.mkdir(parents=True)
        self._count = 0
        if meta:
            (self.path / "tl_search.json").write_text(json.dumps({
                "space_file": "search_spaces/xray.py", "metric": metric, "mode": "max",
                "max_epochs": 10, "num_samples": 8,
                "dataset": {"name": "pneumoniamnist", "task": "binary", "num_classes": 2,
                            "class_names": ["NORMAL", "PNEUMONIA"],
                            "split_sizes": {"train": 4708, "val": 524, "test": N_TEST}},
                "args": {}, "space": {}}))

    def trial(self, trial_id: str, curve: dict[str, Sequence[float]] | None = None, *,
              epochs_run: int | None = None, planned: int = 10, test_acc: float | None = None,
              predictions: tuple[np.ndarray, np.ndarray] | None = None,
              predictions_in: str = "trial", error: str | None = None, done: bool = True,
              seconds_per_epoch: float = 10.0, **config: Any) -> Path:
        """Write one trial folder; returns it.

        Args:
            curve: per-epoch train/val loss and acc lists (cut to ``epochs_run``).
            test_acc: write test metrics on the last row; with ``predictions`` None, build
                predictions with exactly this accuracy.
            predictions: explicit (probs, labels) to save; needs ``test_acc`` or is saved alone.
            predictions_in: "trial", "checkpoint" (newest checkpoint_*/) or "none".
            error: write error.txt with this exception line (and an empty result.json).
            done: Ray's ``done`` flag on the last row (True when the trial ended or ASHA stopped it).
            config: overrides of params.json.
        """
        self._count += 1
        params = {"backbone": "resnet18", "weights": "IMAGENET1K_V1", "freeze": "none",
                  "freeze_fraction": 0.5, "lr": 1e-3, "batch_size": 32, "weight_decay": 1e-4,
                  "epochs": planned, "image_size": 28, "optimizer": "adamw", "augment": True,
                  "seed": 0, "dataset": "pneumoniamnist", "weights_for_resnet18": "IMAGENET1K_V1"}
        params.update(config)
        tag = ",".join(f"{k}={v}" for k, v in sorted(params.items()))[:100].replace("/", "_")
        folder = self.path / f"train_transfer_{trial_id}_{self._count}_{tag}_2026-11-23_10-00-00"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps(params, indent=2))
        rows = []
        if curve is not None and error is None:
            n = epochs_run if epochs_run is not None else len(curve["val_acc"])
            for e in range(n):
                rows.append({"epoch": e + 1, "training_iteration": e + 1,
                             **{k: v[e] for k, v in curve.items()}, "val_auc": 0.9,
                             "lr": params["lr"], "epoch_time_s": seconds_per_epoch,
                             "images_per_s": 500.0, "trainable_params": 11_000_000,
                             "total_params": 11_200_000, "input_size": 28,
                             "time_total_s": seconds_per_epoch * (e + 1), "trial_id": trial_id,
                             "timestamp": 1795430000 + e, "done": False,
                             "config": params, "hostname": "vm"})
        if test_acc is not None and predictions is None:
            predictions = predictions_with_accuracy(test_acc, seed=self._count)
        if rows and test_acc is not None:
            probs, labels = predictions
            # Like tl's trainable: test the best-by-val weights and say which epoch they are.
            best_epoch = 1 + int(np.argmax([r["val_acc"] for r in rows]))
            rows[-1].update(test_acc=float((probs.argmax(1) == labels).mean()), test_loss=0.4,
                            test_auc=0.9, test_n=int(labels.size), best_epoch=best_epoch)
            if probs.shape[1] == 2:
                rows[-1].update(test_sensitivity=0.9, test_specificity=0.8)
        if rows:
            rows[-1]["done"] = done
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if error is not None:
            (folder / "error.txt").write_text(
                "Failure # 1 (occurred at 2026-11-23_10-00-05)\n\x1b[36mray::ImplicitFunc.train()"
                f"\x1b[39m (pid=1)\n  File \"x.py\", line 1, in train\n{error}\n")
        if predictions is not None and predictions_in != "none":
            target = folder
            if predictions_in == "checkpoint":
                (folder / "checkpoint_000000").mkdir()
                target = folder / "checkpoint_000001"
                target.mkdir()
            np.savez(target / "test_predictions.npz", probs=predictions[0], labels=predictions[1])
        return folder
