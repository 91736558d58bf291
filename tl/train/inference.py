"""The one inference path: uint8 images to a model's probabilities, the same in training and after.

Preprocessing is ``Batcher`` (uint8 -> float, gray to three channels, resize to the model's input,
normalise); the forward pass runs in batches under the trial's autocast; the activation follows the
task from the task table (``tl.core.tasks``), never the labels' shape: one sigmoid per finding for a
multilabel task, a softmax over classes otherwise. The trainable's evaluation, exported bundles,
Grad-CAM and the ONNX check all go through here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl.train.config import PRECISIONS
from tl.core.errors import TLError


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype forward passes autocast to, or None for plain fp32.

    bf16 keeps fp32's exponent range, so no loss scaling is needed; weights and optimizer stay
    fp32. Opt-in: it pays on GPUs and AMX CPUs, but measured 0.5-0.9x on an AVX512-BF16 CPU
    without AMX (docs/speed.md).
    """
    if precision not in PRECISIONS:
        raise TLError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else None


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


def to_probs(logits: torch.Tensor, task: str) -> torch.Tensor:
    """The task's activation: one sigmoid per finding (multilabel), else a softmax over classes."""
    return logits.sigmoid() if task == "multilabel" else logits.softmax(1)


def batch_correct(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Correct labels in a batch, on the device (no host sync): argmax hits, or (multilabel) the per-image
    share of decided findings right at 0.5, which sums to MedMNIST's ACC (``tl.core.metrics.label_accuracy``)."""
    if task == "multilabel":
        decided = labels >= 0
        right = ((logits > 0) == (labels > 0.5)) & decided
        return (right.float().sum(1) / decided.float().sum(1).clamp(min=1)).sum()
    return (logits.argmax(1) == labels).sum()


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, batcher: Batcher, device: torch.device,
                   batch_size: int = 256, amp_dtype: torch.dtype | None = None,
                   progress: str | None = None) -> torch.Tensor:
    """Float logits (N, C) of ``model`` in eval mode over uint8 ``images`` (N, C, H, W), in batches.

    ``progress``: a tqdm description to show a bar over batches (None: no bar).
    """
    model.eval()
    starts = range(0, len(images), batch_size)
    if progress and len(images) > batch_size:
        from tqdm import tqdm
        starts = tqdm(starts, desc=progress, unit="batch")
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        return torch.cat([model(batcher(images[i:i + batch_size].to(device))).float() for i in starts])


def predict_probs(model: nn.Module, images: np.ndarray | torch.Tensor, batcher: Batcher, task: str,
                  device: torch.device, batch_size: int = 256, amp_dtype: torch.dtype | None = None,
                  progress: str | None = None) -> np.ndarray:
    """Probabilities (N, C) of ``model`` for uint8 ``images``: ``predict_logits`` then ``to_probs``."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    logits = predict_logits(model, images, batcher, device, batch_size, amp_dtype, progress)
    return to_probs(logits, task).cpu().numpy()
