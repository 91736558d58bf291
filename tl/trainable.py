"""The transfer-learning loop and the Ray Tune function trainable that wraps it.

``run_epochs`` is plain PyTorch (read it top to bottom: build, restore, train, evaluate, test);
``train_transfer`` only adds Ray: resources, checkpoints, ``tune.report``. Images stay uint8 in
memory (shared through the object store) and become float batches on the trial's device.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from tl.data import DatasetArrays, cache_dir, load_dataset
from tl.errors import TLError
from tl.metrics import classification_metrics
from tl.models import apply_freeze, build_model, freeze_bn_stats, get_backbone, get_classifier, set_classifier
from tl.weights import load_state_dict, normalization

# Every key a trial config may carry, with its default. The search space overrides these.
DEFAULTS: dict = {
    "dataset": "pneumoniamnist", "data_dir": None, "backbone": "convmodel", "weights": "none",
    "freeze": "none", "freeze_fraction": 0.75, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4,
    "epochs": 5, "image_size": 28, "optimizer": "adamw", "scheduler": "cosine", "augment": True,
    "label_smoothing": 0.0, "patch_size": 4, "seed": 0, "metric": "val_acc", "mode": "max",
    "fail_at_epoch": 0, "feature_cache": True, "compile": False, "precision": "fp32",
    "channels_last": True,
}

OPTIMIZERS = {
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True),
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
}
SCHEDULERS = {
    "cosine": lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1)),
    "constant": lambda opt, epochs: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0),
    "step": lambda opt, epochs: torch.optim.lr_scheduler.StepLR(opt, step_size=max(epochs // 3, 1), gamma=0.1),
}


PRECISIONS = ("fp32", "bf16")
# Saved once a trial is tested, from its best-by-val epoch: ``<key>.npz`` in checkpoint and trial folder.
PREDICTION_FILES = ("test_predictions", "val_predictions")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype forward passes autocast to, or None for plain fp32.

    bf16 keeps fp32's exponent range, so no loss scaling is needed; weights and optimizer stay
    fp32. Opt-in: it pays on GPUs and AMX CPUs, but measured 0.5-0.9x on an AVX512-BF16 CPU
    without AMX (README, "Speed levers").
    """
    if precision not in PRECISIONS:
        raise TLError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else None


class InjectedFault(RuntimeError):
    """Raised by ``fail_at_epoch``: lets tests prove that Ray retries from the last checkpoint."""


@dataclass
class Batcher:
    """Turns uint8 (N, C, H, W) tensors into normalized float batches at the model's input size."""

    size: int
    mean: torch.Tensor
    std: torch.Tensor
    augment: bool
    channels_last: bool = False  # NHWC batches, for a model converted to channels_last

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float().div_(255)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale -> the 3 channels ImageNet backbones expect
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        if self.augment and generator is not None:
            x = _random_affine(x, generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _random_affine(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image small rotation (±10°), scale (0.9-1.1) and shift (±8 %) in one grid_sample.

    No flips: a chest X-ray's left and right are not interchangeable.
    """
    n = len(x)
    rand = torch.rand(n, 4, generator=generator).to(x.device)
    angle = (rand[:, 0] - 0.5) * math.radians(20)
    scale = 0.9 + 0.2 * rand[:, 1]
    shift = (rand[:, 2:] - 0.5) * 0.16
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    images: torch.Tensor, labels: torch.Tensor, batcher: Batcher, batch_size: int,
                    generator: torch.Generator, device: torch.device,
                    amp_dtype: torch.dtype | None = None) -> tuple[float, float]:
    """One pass over shuffled training data; returns (mean loss, accuracy). One host sync at the end.

    ``amp_dtype`` (see ``autocast_dtype``) runs the forward pass and the loss under autocast.
    """
    model.train()
    freeze_bn_stats(model)
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    # a last batch of one image is dropped: BatchNorm cannot train on it
    n_batches = len(order) // batch_size + (len(order) % batch_size > 1)
    for i in range(n_batches):
        idx = order[i * batch_size:(i + 1) * batch_size]
        x = batcher(images[idx].to(device, non_blocking=True), generator)
        y = labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
    seen = min(n_batches * batch_size, len(order))
    return loss_sum.item() / seen, correct.item() / seen


@torch.inference_mode()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batcher: Batcher,
             device: torch.device, batch_size: int = 256,
             amp_dtype: torch.dtype | None = None) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and softmax probabilities (N, C) over a whole split."""
    model.eval()
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = torch.cat([model(batcher(images[i:i + batch_size].to(device))).float()
                            for i in range(0, len(labels), batch_size)])
    loss = F.cross_entropy(logits, labels.to(device)).item()
    return loss, logits.softmax(1).cpu().numpy()


def _identity_batcher(features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return features


def _array_fingerprint(arrays: DatasetArrays) -> str:
    """The loader's fingerprint, or (arrays built by hand) a hash of the pixels and labels."""
    if arrays.fingerprint:
        return arrays.fingerprint
    h = hashlib.sha1()
    for split in ("train", "val", "test"):
        h.update(np.ascontiguousarray(arrays.images[split]).data)
        h.update(np.ascontiguousarray(arrays.labels[split]).data)
    return h.hexdigest()[:16]


def cached_features(model: nn.Module, spec, cfg: dict, arrays: DatasetArrays, split: dict, batcher: Batcher,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Frozen-backbone features per split, computed once per (backbone, weights, input size,
    normalisation, data fingerprint) and shared on disk by every trial on the node.

    Features come from un-augmented images: a fixed-feature-extractor trial trains its head
    without augmentation (set ``feature_cache=False`` to augment through the full network).
    """
    key = hashlib.sha1(json.dumps([cfg["backbone"], cfg["weights"], batcher.size, batcher.mean.flatten().tolist(),
                                   batcher.std.flatten().tolist(), _array_fingerprint(arrays)]).encode()).hexdigest()[:20]
    path = cache_dir() / "features" / f"{key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):  # concurrent trials wait for the first one's pass
        if not path.exists():
            head = get_classifier(model, spec)
            set_classifier(model, spec, nn.Identity())
            with torch.inference_mode():
                model.eval()
                feats = {s: torch.cat([model(batcher(images[i:i + 256].to(device))).float().cpu()
                                       for i in range(0, len(images), 256)]).numpy()
                         for s, (images, _) in split.items()}
            set_classifier(model, spec, head)
            tmp = path.with_suffix(".part.npz")
            np.savez(tmp, **feats)
            os.replace(tmp, path)
        with np.load(path) as npz:
            return {s: torch.from_numpy(npz[s]) for s in split}


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # arrays from the object store are read-only views; we never write
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def resident_split(split: dict, device: torch.device) -> dict:
    """Move a trial's uint8 images and labels onto a GPU once, so no batch crosses PCIe.

    Shuffling then indexes device memory, and the only per-batch host work left is the Python
    loop. uint8 keeps it small: all of chest_xray at 224 px is 0.8 GB. On a CPU this is a no-op.
    """
    if device.type == "cpu":
        return split
    return {s: (images.to(device), labels.to(device)) for s, (images, labels) in split.items()}


def _input_size(backbone: str, image_size: int) -> int:
    spec = get_backbone(backbone)
    return spec.fixed_input_size or max(image_size, spec.min_input_size)


def run_epochs(config: dict, arrays: DatasetArrays, state_dict: dict | None,
               checkpoint_dir: str | None = None, device: torch.device | None = None) -> Iterator[tuple[dict, dict]]:
    """Train per ``config``; yield (metrics, checkpoint state) after every epoch.

    The last epoch's metrics also carry test metrics from the best-by-val weights and the
    state carries ``test_predictions`` and that epoch's ``val_predictions`` (what a temperature,
    a threshold or an ensemble is fitted on). ``checkpoint_dir`` resumes from a saved state.
    """
    cfg = {**DEFAULTS, **config}
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg["seed"])
    size = _input_size(cfg["backbone"], cfg["image_size"])
    model = build_model(cfg["backbone"], arrays.num_classes, state_dict, image_size=size,
                        patch_size=cfg["patch_size"]).to(device)
    spec = get_backbone(cfg["backbone"])
    counts = apply_freeze(model, spec, cfg["freeze"], cfg["freeze_fraction"])
    if cfg["channels_last"]:  # NHWC: oneDNN and cuDNN convolutions run faster on it (README, "Speed levers")
        model = model.to(memory_format=torch.channels_last)
    if cfg["optimizer"] not in OPTIMIZERS or cfg["scheduler"] not in SCHEDULERS:
        raise TLError(f"optimizer must be one of {sorted(OPTIMIZERS)} and scheduler one of {sorted(SCHEDULERS)}")
    optimizer = OPTIMIZERS[cfg["optimizer"]]([p for p in model.parameters() if p.requires_grad],
                                             cfg["lr"], cfg["weight_decay"])
    scheduler = SCHEDULERS[cfg["scheduler"]](optimizer, cfg["epochs"])
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in normalization(cfg["backbone"], cfg["weights"]))
    train_batcher = Batcher(size, mean, std, bool(cfg["augment"]), bool(cfg["channels_last"]))
    eval_batcher = Batcher(size, mean, std, False, bool(cfg["channels_last"]))
    split = {s: (_as_tensor(arrays.images[s]), torch.from_numpy(np.asarray(arrays.labels[s]))) for s in ("train", "val", "test")}
    if cfg["batch_size"] > len(split["train"][1]):
        raise TLError(f"batch_size {cfg['batch_size']} is larger than the training set ({len(split['train'][1])} images)")
    net = model  # what the epoch loop trains: the whole model, or only its head on cached features
    if cfg["freeze"] == "backbone" and cfg["feature_cache"]:
        features = cached_features(model, spec, cfg, arrays, split, eval_batcher, device)
        split = {s: (features[s], split[s][1]) for s in split}
        net = get_classifier(model, spec)
        train_batcher = eval_batcher = _identity_batcher
    split = resident_split(split, device)
    # Opt-in: compiling costs ~1 min on 2 CPU cores and paid only for some models (benchmarks.compile).
    # Checkpoints keep the uncompiled model's state_dict, so they load either way.
    step_net = torch.compile(net) if cfg["compile"] else net
    amp_dtype = autocast_dtype(cfg["precision"])
    sign = 1 if cfg["mode"] == "max" else -1
    start, best = 1, {"score": -math.inf, "epoch": 0, "model": None, "val_probs": None}
    if checkpoint_dir:
        saved = torch.load(Path(checkpoint_dir) / "state.pt", map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start = saved["epoch"] + 1
        best = {"score": saved["best_score"], "epoch": saved["best_epoch"],
                "model": torch.load(Path(checkpoint_dir) / "best_model.pt", map_location=device, weights_only=True),
                "val_probs": saved.get("best_val_probs")}
    restored = start > 1
    for epoch in range(start, cfg["epochs"] + 1):
        if cfg["fail_at_epoch"] == epoch and not restored:
            raise InjectedFault(f"fault injected at epoch {epoch} (fail_at_epoch)")
        generator = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)  # resume-deterministic
        # Dropout draws from the global RNG, which a checkpoint does not carry: reseed it per epoch too
        # (another stream than the generator's), so a resumed epoch replays the same masks.
        torch.manual_seed(cfg["seed"] * 100_003 + epoch + 50_021)
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(step_net, criterion, optimizer, *split["train"], train_batcher,
                                                cfg["batch_size"], generator, device, amp_dtype)
        scheduler.step()
        train_time = time.perf_counter() - t0
        val_loss, val_probs = evaluate(step_net, *split["val"], eval_batcher, device, amp_dtype=amp_dtype)
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   **classification_metrics(val_probs, split["val"][1].cpu().numpy(), "val"), "lr": lr,
                   "epoch_time_s": time.perf_counter() - t0, "images_per_s": len(split["train"][1]) / train_time,
                   "input_size": size, "device": device.type, **counts}
        score = sign * metrics[cfg["metric"]]
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "val_probs": torch.from_numpy(val_probs.astype(np.float32))}
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "epoch": epoch, "best_score": best["score"], "best_epoch": best["epoch"], "best_model": best["model"],
                 "best_val_probs": best["val_probs"]}
        if epoch == cfg["epochs"]:
            model.load_state_dict(best["model"])  # test once, with the weights val chose
            test_loss, test_probs = evaluate(step_net, *split["test"], eval_batcher, device, amp_dtype=amp_dtype)
            test_labels = split["test"][1].cpu().numpy()
            metrics.update({"test_loss": test_loss, **classification_metrics(test_probs, test_labels, "test"),
                            "test_n": len(test_labels), "best_epoch": best["epoch"]})
            # The fingerprints let a paired comparison (or a val-fitted calibration) check both
            # sides saw the same images.
            prints = {"test_fingerprint": np.array(arrays.test_fingerprint),
                      "val_fingerprint": np.array(arrays.split_fingerprint("val")),
                      "best_epoch": np.array(best["epoch"])}
            state["test_predictions"] = {"probs": test_probs.astype(np.float32), "labels": test_labels, **prints}
            if best["val_probs"] is not None:  # None only if a checkpoint from before val was saved
                state["val_predictions"] = {"probs": best["val_probs"].cpu().numpy(),
                                            "labels": split["val"][1].cpu().numpy(), **prints}
        yield metrics, state


def save_checkpoint(state: dict, directory: Path) -> None:
    """Write the last state, the best-by-val weights and (at the end) the test and val predictions."""
    torch.save({k: v for k, v in state.items() if k not in ("best_model", *PREDICTION_FILES)}, directory / "state.pt")
    torch.save(state["best_model"], directory / "best_model.pt")
    for key in PREDICTION_FILES:
        if key in state:
            np.savez(directory / f"{key}.npz", **state[key])


def _trial_threads() -> int:
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    return max(1, int(cpus))


def train_transfer(config: dict, datasets: dict | None = None, weight_refs: dict | None = None) -> None:
    """Ray Tune function trainable: one transfer-learning run, reported every epoch.

    Args:
        datasets: ``{image_size: DatasetArrays}`` decoded once on the driver (object store).
        weight_refs: ``{"backbone|weights": ObjectRef to a state dict}`` resolved in preflight.
    """
    import ray
    from ray import tune

    torch.set_num_threads(_trial_threads())  # threads = CPUs given to the trial, so trials don't fight
    cfg = {**DEFAULTS, **config}
    if datasets and cfg["image_size"] in datasets:
        arrays = datasets[cfg["image_size"]]
    else:
        arrays = load_dataset(cfg["dataset"], cfg["image_size"], cfg["data_dir"], seed=cfg["seed"],
                              groups=cfg.get("groups"))
    key = f"{cfg['backbone']}|{cfg['weights']}"
    if weight_refs and key in weight_refs:
        state_dict = ray.get(weight_refs[key])
    else:
        state_dict = load_state_dict(cfg["backbone"], cfg["weights"])
    node_id = ray.get_runtime_context().get_node_id()  # where it ran: placement on a cluster is checkable
    checkpoint = tune.get_checkpoint()
    with (checkpoint.as_directory() if checkpoint else nullcontext()) as restore_dir:
        for metrics, state in run_epochs(cfg, arrays, state_dict, restore_dir):
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(state, Path(tmp))
                _save_beside_trial(state)
                tune.report({**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(tmp))


def _save_beside_trial(state: dict) -> None:
    """Also put test_predictions.npz and val_predictions.npz in the trial folder, where analysis looks first.

    Ray runs the trial in its working directory (``RAY_CHDIR_TO_TRIAL_DIR``, on by default) and,
    with ``SyncConfig(sync_artifacts=True)``, syncs it to the trial folder on every checkpoint, on
    any node and for reused actors alike. The latest checkpoint holds a copy either way.
    """
    for key in PREDICTION_FILES:
        if key in state:
            np.savez(Path.cwd() / f"{key}.npz", **state[key])
