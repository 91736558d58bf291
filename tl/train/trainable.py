"""The transfer-learning loop and the Ray Tune function trainable that wraps it.

``run_epochs`` is plain PyTorch (read it top to bottom: build, restore, train, evaluate, test);
``train_transfer`` only adds Ray: resources, checkpoints, ``tune.report``. Images stay uint8 in
memory (shared through the object store) and become float batches on the trial's device.
"""
from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl.train.config import CLASS_WEIGHTS, DEFAULTS, OPTIMIZERS, SCHEDULERS, compile_backend
from tl.core.errors import TLError
from tl.core.no_space import NO_SPACE, is_no_space
from tl.core.metrics import best_balanced_threshold, sensitivity_specificity, split_metrics
from tl.core.results import BEST_WEIGHTS_FILE, PREDICTION_KEYS, RESUME_STATE_FILE, save_predictions
from tl.core.results.files import FOLD_KEY, FOLD_SEED_KEY, FOLDS_KEY, OOF_GROUPS, OOF_ROWS
from tl.core.uncertain import POLICY_KEY, apply_uncertain
from tl.data import DatasetArrays, load_dataset
from tl.data.arrays import ChunkRows
from tl.data.folds import fold_arrays
from tl.train.ended import ended_metrics, write_reported_metrics
from tl.train.feature_cache import cached_features, identity_batcher
from tl.train.inference import Batcher, autocast_dtype, batch_correct, predict_logits, to_probs
from tl.train.models import apply_freeze, build_model, freeze_bn_stats, get_backbone, get_classifier
from tl.train.weights import load_state_dict, normalization


class InjectedFault(RuntimeError):
    """Raised by ``fail_at_epoch``: lets tests prove that Ray retries from the last checkpoint."""


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    images: torch.Tensor, labels: torch.Tensor, batcher: Batcher, batch_size: int,
                    generator: torch.Generator, device: torch.device,
                    amp_dtype: torch.dtype | None = None, task: str = "multiclass") -> tuple[float, float]:
    """One pass over shuffled training data; returns (mean loss, accuracy). One host sync at the end.

    ``amp_dtype`` (see ``autocast_dtype``) runs the forward pass and the loss under autocast. A
    multilabel ``task`` (float multi-hot labels) counts accuracy per label at 0.5, MedMNIST's ACC.
    """
    model.train()
    freeze_bn_stats(model)
    order = torch.randperm(len(labels), generator=generator).to(images.device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
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
        correct += batch_correct(logits, y, task)
    seen = min(n_batches * batch_size, len(order))
    return loss_sum.item() / seen, correct.item() / seen


class MaskedBCEWithLogits(nn.Module):
    """Binary cross-entropy per finding, averaged over the decided labels: an uncertain (-1) target is
    masked out (CheXpert's U-Ignore). With no -1 it is ``nn.BCEWithLogitsLoss``'s mean."""

    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask = (target >= 0).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target.clamp(min=0).to(logits.dtype),
                                                  pos_weight=self.pos_weight, reduction="none")
        return (loss * mask).sum() / mask.sum().clamp(min=1)


# Unweighted loss per task on float logits: what val and test report (the training loss may be weighted).
EVAL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "multilabel": MaskedBCEWithLogits(),
    "binary": F.cross_entropy, "multiclass": F.cross_entropy, "ordinal": F.cross_entropy,
}


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batcher: Batcher,
             device: torch.device, batch_size: int = 256, amp_dtype: torch.dtype | None = None,
             task: str = "multiclass") -> tuple[float, np.ndarray]:
    """Mean unweighted loss and probabilities over a whole split (``tl.train.inference``'s one path).

    Single-label tasks: cross-entropy and softmax (N, C). Multilabel: binary cross-entropy and one
    sigmoid per finding (N, K).
    """
    logits = predict_logits(model, images, batcher, device, batch_size, amp_dtype)
    loss = EVAL_LOSSES[task](logits, labels.to(device)).item()
    return loss, to_probs(logits, task).cpu().numpy()


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C * count_c)`` (1 for a balanced set); multi-hot labels:
    per-finding ``pos_weight = negatives / positives`` over the decided labels (1 where a finding has
    no positive)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        pos, neg = (labels == 1).sum(0).astype(np.float64), (labels == 0).sum(0).astype(np.float64)
        return torch.tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0),
                        dtype=torch.float32)


# Loss per task: multilabel is one sigmoid per finding; the others are one softmax over classes
# (ordinal too: cross-entropy is what the issue accepts, QWK measures the grading).
LOSSES = {
    "multilabel": lambda weight, smoothing: MaskedBCEWithLogits(pos_weight=weight),
    "binary": lambda weight, smoothing: nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing),
    "multiclass": lambda weight, smoothing: nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing),
    "ordinal": lambda weight, smoothing: nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing),
}


def build_criterion(task: str, train_labels: np.ndarray, num_classes: int, class_weight: str = "none",
                    label_smoothing: float = 0.0) -> nn.Module:
    """The training loss for ``task`` (``LOSSES``), inverse-frequency weighted when ``class_weight="balanced"``."""
    if class_weight not in CLASS_WEIGHTS:
        raise TLError(f"class_weight must be one of {list(CLASS_WEIGHTS)}, got {class_weight!r}")
    weight = class_weights(train_labels, num_classes) if class_weight == "balanced" else None
    return LOSSES[task](weight, label_smoothing)


def threshold_metrics(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                      test_labels: np.ndarray, positive: int) -> dict:
    """Binary tasks: the threshold val chose for the best balanced accuracy, and test at it."""
    t = best_balanced_threshold(val_probs[:, positive], val_labels, positive)
    sens, spec = sensitivity_specificity(test_probs[:, positive], test_labels, t, positive)
    return {"val_threshold": t, "test_sensitivity_at_val_threshold": sens,
            "test_specificity_at_val_threshold": spec, "test_balanced_acc_at_val_threshold": (sens + spec) / 2}


class _StoreImages:
    """A decode-store split (``ChunkRows``) as the epoch loop indexes a uint8 image tensor: a batch
    (``images[idx]``, ``images[a:b]``) is gathered from the memory-mapped chunks into a new tensor, so
    a trial holds no private copy of its split and the trials of a node share the pixels in the page
    cache (a batch's gather is microseconds against its step; benchmarks.scale measures images/s);
    ``.to(device)`` reads the whole split onto an accelerator, for ``resident_split``."""

    device = torch.device("cpu")

    def __init__(self, rows: ChunkRows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.rows.shape)

    def __getitem__(self, key) -> torch.Tensor:
        return torch.from_numpy(self.rows[key.cpu().numpy() if isinstance(key, torch.Tensor) else key])

    def to(self, device, non_blocking: bool = False) -> "_StoreImages | torch.Tensor":
        device = torch.device(device)
        if device.type == "cpu":
            return self
        out = torch.empty(self.rows.shape, dtype=torch.uint8, device=device)
        for start in range(0, len(self), 4096):  # a block at a time: no host copy of the whole split
            out[start:start + 4096] = self[start:start + 4096].to(device, non_blocking=non_blocking)
        return out


def _as_tensor(array: np.ndarray | ChunkRows) -> torch.Tensor | _StoreImages:
    if isinstance(array, ChunkRows):
        return _StoreImages(array)
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


@dataclass
class TrialSetup:
    """Everything the epoch loop needs, built from a config by :func:`build_trial`."""

    model: nn.Module  # the whole network: what checkpoints and the tested weights hold
    step_net: nn.Module  # what each step runs: the model, its head alone on cached features, maybe compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    criterion: nn.Module
    train_batcher: Callable
    eval_batcher: Callable
    split: dict  # split -> (uint8 images or cached features, labels) on the trial's device
    input_size: int
    counts: dict  # trainable and total parameters
    task: str
    positive: int | None
    amp_dtype: torch.dtype | None
    # Val and test in batches of the training batch size, not 256: inference at 256 is the trial's
    # memory peak otherwise (Lite0 at 64 px: +220 MB over training at 32), for no speed on a CPU.
    eval_batch_size: int = 256


def build_trial(cfg: dict, arrays: DatasetArrays, state_dict: dict | None, device: torch.device) -> TrialSetup:
    """Build phase: model with its head and freeze mode, optimizer, scheduler, loss, batchers and the
    split tensors (backbone features instead of images for a cached fixed-extractor trial)."""
    if arrays.task_info is None or cfg["task"] or cfg["positive_class"]:
        arrays.apply_task(cfg["task"], cfg["positive_class"])
    task = arrays.task
    torch.manual_seed(cfg["seed"])
    spec = get_backbone(cfg["backbone"])
    size = spec.input_size(cfg["image_size"])
    model = build_model(cfg["backbone"], arrays.num_classes, state_dict, image_size=size,
                        patch_size=cfg["patch_size"]).to(device)
    counts = apply_freeze(model, spec, cfg["freeze"], cfg["freeze_fraction"])
    if cfg["channels_last"]:  # NHWC: oneDNN and cuDNN convolutions run faster on it (docs/speed.md)
        model = model.to(memory_format=torch.channels_last)
    if cfg["optimizer"] not in OPTIMIZERS or cfg["scheduler"] not in SCHEDULERS:
        raise TLError(f"optimizer must be one of {sorted(OPTIMIZERS)} and scheduler one of {sorted(SCHEDULERS)}")
    optimizer = OPTIMIZERS[cfg["optimizer"]]([p for p in model.parameters() if p.requires_grad],
                                             cfg["lr"], cfg["weight_decay"])
    scheduler = SCHEDULERS[cfg["scheduler"]](optimizer, cfg["epochs"])
    train_labels = np.asarray(arrays.labels["train"])
    if task == "multilabel":  # the trial's policy for uncertain (-1) findings; val and test keep them masked
        train_labels = apply_uncertain(train_labels, cfg[POLICY_KEY])
    criterion = build_criterion(task, train_labels, arrays.num_classes, cfg["class_weight"],
                                cfg["label_smoothing"]).to(device)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in normalization(cfg["backbone"], cfg["weights"]))
    train_batcher = Batcher(size, mean, std, bool(cfg["augment"]), bool(cfg["channels_last"]))
    eval_batcher = Batcher(size, mean, std, False, bool(cfg["channels_last"]))
    label_dtype = torch.float32 if task == "multilabel" else torch.int64  # BCE wants float multi-hot targets
    labels = {**arrays.labels, "train": train_labels}
    split = {s: (_as_tensor(arrays.images[s]), torch.from_numpy(np.asarray(labels[s])).to(label_dtype))
             for s in ("train", "val", "test")}
    if cfg["batch_size"] > len(split["train"][1]):
        raise TLError(f"batch_size {cfg['batch_size']} is larger than the training set ({len(split['train'][1])} images)")
    net = model  # what the epoch loop trains: the whole model, or only its head on cached features
    if cfg["freeze"] == "backbone" and cfg["feature_cache"]:
        features = cached_features(model, spec, cfg, arrays, split, eval_batcher, device)
        split = {s: (features[s], split[s][1]) for s in split}
        net = get_classifier(model, spec)
        train_batcher = eval_batcher = identity_batcher
    # Opt-in: compiling with inductor costs ~1 min on 2 CPU cores and paid only for some models
    # (benchmarks.compile); aot_eager checks a model traces in seconds without generating kernels.
    # Checkpoints keep the uncompiled model's state_dict, so they load either way.
    try:
        backend = compile_backend(cfg["compile"])
    except ValueError as e:
        raise TLError(f"compile {e}") from None
    step_net = torch.compile(net, backend=backend) if backend else net
    return TrialSetup(model, step_net, optimizer, scheduler, criterion, train_batcher, eval_batcher,
                      resident_split(split, device), size, counts, task, arrays.positive_index,
                      autocast_dtype(cfg["precision"]), cfg["batch_size"])


def restore_trial(setup: TrialSetup, checkpoint_dir: str | None, device: torch.device) -> tuple[int, dict]:
    """Restore phase: (first epoch to run, the best-by-val record) from a checkpoint, or a fresh start."""
    best = {"score": -math.inf, "epoch": 0, "model": None, "val_probs": None}
    if not checkpoint_dir:
        return 1, best
    saved = torch.load(Path(checkpoint_dir) / RESUME_STATE_FILE, map_location=device, weights_only=True)
    setup.model.load_state_dict(saved["model"])
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.scheduler.load_state_dict(saved["scheduler"])
    best = {"score": saved["best_score"], "epoch": saved["best_epoch"],
            "model": torch.load(Path(checkpoint_dir) / BEST_WEIGHTS_FILE, map_location=device, weights_only=True),
            "val_probs": saved.get("best_val_probs")}
    return saved["epoch"] + 1, best


def test_trial(setup: TrialSetup, arrays: DatasetArrays, best: dict, device: torch.device) -> tuple[dict, dict]:
    """Test phase, once, with the weights val chose: (test metrics, the predictions files' contents).

    The fingerprints saved with the predictions let a paired comparison, an ensemble or a val-fitted
    calibration check that both sides saw the same images.
    """
    setup.model.load_state_dict(best["model"])
    test_loss, test_probs = evaluate(setup.step_net, *setup.split["test"], setup.eval_batcher, device,
                                     setup.eval_batch_size, amp_dtype=setup.amp_dtype, task=setup.task)
    test_labels = np.asarray(arrays.labels["test"])
    metrics = {"test_loss": test_loss,
               **split_metrics(test_probs, test_labels, "test", setup.task, setup.positive, arrays.class_names),
               "test_n": len(test_labels), "best_epoch": best["epoch"]}
    if setup.task == "binary" and best["val_probs"] is not None:
        metrics.update(threshold_metrics(best["val_probs"].cpu().numpy(), np.asarray(arrays.labels["val"]),
                                         test_probs, test_labels, setup.positive))
    prints = {"test_fingerprint": np.array(arrays.test_fingerprint),
              "val_fingerprint": np.array(arrays.split_fingerprint("val")), "best_epoch": np.array(best["epoch"])}
    predictions = {"test_predictions": {"probs": test_probs.astype(np.float32), "labels": test_labels, **prints}}
    if best["val_probs"] is not None:  # None only if a checkpoint from before val was saved
        predictions["val_predictions"] = {"probs": best["val_probs"].cpu().numpy(),
                                          "labels": np.asarray(arrays.labels["val"]), **prints}
        cv = arrays.split_record.get("cv")
        if cv:  # a fold trial: its val is out of fold; where each image sits in train+val, and its patient
            predictions["val_predictions"][OOF_ROWS] = np.asarray(cv["val_rows"], dtype=np.int64)
            if "val" in arrays.groups:
                predictions["val_predictions"][OOF_GROUPS] = np.asarray(arrays.groups["val"]).astype(str)
    return metrics, predictions


def run_epochs(config: dict, arrays: DatasetArrays, state_dict: dict | None,
               checkpoint_dir: str | None = None, device: torch.device | None = None) -> Iterator[tuple[dict, dict]]:
    """Train per ``config``; yield (metrics, checkpoint state) after every epoch.

    Phases: build (:func:`build_trial`), restore (:func:`restore_trial`), then per epoch train and
    validate, keeping the best-by-val weights; after the last epoch test them once
    (:func:`test_trial`): its metrics join the last epoch's, and the state carries
    ``test_predictions`` and ``val_predictions`` (what a temperature, a threshold or an ensemble is
    fitted on). ``checkpoint_dir`` resumes from a saved state.
    """
    cfg = {**DEFAULTS, **config}
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setup = build_trial(cfg, arrays, state_dict, device)
    start, best = restore_trial(setup, checkpoint_dir, device)
    sign = 1 if cfg["mode"] == "max" else -1
    for epoch in range(start, cfg["epochs"] + 1):
        if cfg["fail_at_epoch"] == epoch and start == 1:
            raise InjectedFault(f"fault injected at epoch {epoch} (fail_at_epoch)")
        generator = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)  # resume-deterministic
        # Dropout draws from the global RNG, which a checkpoint does not carry: reseed it per epoch too
        # (another stream than the generator's), so a resumed epoch replays the same masks.
        torch.manual_seed(cfg["seed"] * 100_003 + epoch + 50_021)
        t0 = time.perf_counter()
        lr = setup.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(setup.step_net, setup.criterion, setup.optimizer, *setup.split["train"],
                                                setup.train_batcher, cfg["batch_size"], generator, device,
                                                setup.amp_dtype, setup.task)
        setup.scheduler.step()
        train_time = time.perf_counter() - t0
        val_loss, val_probs = evaluate(setup.step_net, *setup.split["val"], setup.eval_batcher, device,
                                       setup.eval_batch_size, amp_dtype=setup.amp_dtype, task=setup.task)
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   **split_metrics(val_probs, arrays.labels["val"], "val", setup.task, setup.positive,
                                   arrays.class_names), "lr": lr,
                   "epoch_time_s": time.perf_counter() - t0, "images_per_s": len(setup.split["train"][1]) / train_time,
                   "input_size": setup.input_size, "device": device.type, **setup.counts}
        score = sign * metrics[cfg["metric"]]
        if score > best["score"]:
            best = {"score": score, "epoch": epoch,
                    "model": {k: v.detach().clone() for k, v in setup.model.state_dict().items()},
                    "val_probs": torch.from_numpy(val_probs.astype(np.float32))}
        state = {"model": setup.model.state_dict(), "optimizer": setup.optimizer.state_dict(),
                 "scheduler": setup.scheduler.state_dict(), "epoch": epoch, "best_score": best["score"],
                 "best_epoch": best["epoch"], "best_model": best["model"], "best_val_probs": best["val_probs"]}
        if epoch == cfg["epochs"]:
            test_metrics, predictions = test_trial(setup, arrays, best, device)
            metrics.update(test_metrics)
            state.update(predictions)
        yield metrics, state


def save_checkpoint(state: dict, directory: Path) -> None:
    """Write the last state, the best-by-val weights and (at the end) the test and val predictions.

    A full disk fails the trial with ENOSPC, which ``tl.search.full_disk`` stops the search on:
    torch says it only as "unexpected pos 576 vs 534", so a failed write that left less room than the
    weights' size is taken for one. ``TL_INJECT_ENOSPC_AT_EPOCH=N`` in the environment (Ray's workers
    inherit the driver's) makes epoch N's write fail so, as a full ``--storage`` fails Ray's upload:
    for tests where no small filesystem can be mounted."""
    if state["epoch"] == int(os.environ.get("TL_INJECT_ENOSPC_AT_EPOCH") or 0):
        raise OSError(errno.ENOSPC, NO_SPACE, str(directory))
    try:
        torch.save({k: v for k, v in state.items() if k not in ("best_model", *PREDICTION_KEYS)},
                   directory / RESUME_STATE_FILE)
        torch.save(state["best_model"], directory / BEST_WEIGHTS_FILE)
        save_predictions(state, directory)
    except (OSError, RuntimeError) as exc:
        weights = sum(t.numel() * t.element_size() for t in state["model"].values())
        if is_no_space(exc) or shutil.disk_usage(directory).free < weights:
            raise OSError(errno.ENOSPC, f"{NO_SPACE} writing a checkpoint ({exc})", str(directory)) from exc
        raise


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
    node_id = ray.get_runtime_context().get_node_id()  # where it ran: placement on a cluster is checkable
    checkpoint = tune.get_checkpoint()
    with (checkpoint.as_directory() if checkpoint else nullcontext()) as restore_dir:
        ended = ended_metrics(restore_dir, tune.get_context().get_trial_dir())
        if ended is not None:  # it ended before the driver died; Ray's saved state had not caught up
            tune.report(ended)
            return
        arrays, state_dict = _trial_inputs(cfg, datasets, weight_refs)
        for metrics, state in run_epochs(cfg, arrays, state_dict, restore_dir):
            reported = {**metrics, "node_id": node_id}
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(state, Path(tmp))
                write_reported_metrics(reported, Path(tmp))
                _save_beside_trial(state)
                tune.report(reported, checkpoint=tune.Checkpoint.from_directory(tmp))
            release_free_heap()
    release_free_heap()  # before a reused actor starts its next trial


def _trial_inputs(cfg: dict, datasets: dict | None, weight_refs: dict | None) -> tuple[DatasetArrays, dict | None]:
    """The trial's images (from the object store when the driver decoded them, else loaded here; one
    cross-validation fold of train + val for a fold trial) and its pretrained weights."""
    import ray

    if datasets and cfg["image_size"] in datasets:
        arrays = datasets[cfg["image_size"]]
    else:
        arrays = load_dataset(cfg["dataset"], cfg["image_size"], cfg["data_dir"], seed=cfg["seed"],
                              groups=cfg.get("groups"), table=cfg["table"])
    if cfg.get(FOLD_KEY) is not None:  # a cross-validation fold trial: train and val are folds of train + val
        arrays = fold_arrays(arrays, int(cfg[FOLDS_KEY]), int(cfg[FOLD_KEY]), int(cfg[FOLD_SEED_KEY]))
    key = f"{cfg['backbone']}|{cfg['weights']}"
    if weight_refs and key in weight_refs:
        return arrays, ray.get(weight_refs[key])
    return arrays, load_state_dict(cfg["backbone"], cfg["weights"])


def release_free_heap() -> None:
    """Give the heap memory freed since the last call back to the OS (glibc ``malloc_trim``; elsewhere
    nothing). glibc keeps what an epoch's activations and the evaluation freed, so without this a
    trial holds its peak between epochs, and a reused actor the largest peak of every trial it ran."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def trial_run_options(metric: str, mode: str, max_failures: int) -> dict:
    """The ``tune.RunConfig`` settings this trainable needs, for the search and the finalist stage
    alike: artifacts synced (the predictions ``_save_beside_trial`` writes reach the trial folder),
    one checkpoint kept per trial (the latest: it resumes the trial and holds the best-by-val
    weights, so a second one would only repeat them), and ``max_failures`` retries. ``metric`` and
    ``mode`` are the search's; the checkpoint kept does not depend on them."""
    from ray import tune

    return {"sync_config": tune.SyncConfig(sync_artifacts=True),
            "checkpoint_config": tune.CheckpointConfig(num_to_keep=1),
            "failure_config": tune.FailureConfig(max_failures=max_failures)}


def _save_beside_trial(state: dict) -> None:
    """Also put test_predictions.npz and val_predictions.npz in the trial folder, where analysis looks first.

    Ray runs the trial in its working directory (``RAY_CHDIR_TO_TRIAL_DIR``, on by default) and,
    with ``SyncConfig(sync_artifacts=True)``, syncs it to the trial folder on every checkpoint, on
    any node and for reused actors alike. The latest checkpoint holds a copy either way.
    """
    save_predictions(state, Path.cwd())
