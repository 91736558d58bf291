"""Grad-CAM heatmaps for a bundle: where in the image the predicted class's evidence lies.

The maths is the ``grad-cam`` package's (``pytorch_grad_cam.GradCAM``); this module only picks the
layer and draws. The layer is found by running the network once: the last module (in execution
order) that outputs a 4-D feature map and is not a pooling layer, i.e. ``layer4`` for ResNets,
``bn2`` for EfficientNet-Lite0, the last conv block's ReLU for ConvModel. ViTs output tokens: there
the layer is the last LayerNorm whose patch tokens still reach the class output (the last block's
pre-attention norm; one backward pass finds it), and its tokens are reshaped to a patch grid.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl.core.errors import TLError
from tl.data.store.layout import atomic_write

_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _token_grid(tokens: int) -> int | None:
    side = int(round((tokens - 1) ** 0.5))
    return side if side * side == tokens - 1 and side > 0 else None


def token_layer(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """For a ViT: the last LayerNorm over (N, 1 + side², C) tokens whose patch tokens get a gradient
    from the top class (a norm after the last attention feeds only its own token), or None."""
    grads: list[tuple[nn.Module, list]] = []

    def hook(mod, _inputs, out):
        if isinstance(out, torch.Tensor) and out.ndim == 3 and _token_grid(out.shape[1]) and out.requires_grad:
            seen: list = []
            out.register_hook(lambda g: seen.append(float(g[:, 1:].abs().sum())))
            grads.append((mod, seen))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.LayerNorm)]
    try:
        with torch.enable_grad():
            logits = model(example.clone().requires_grad_(True))
            logits[:, logits.argmax(1)[0]].sum().backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    reached = [m for m, seen in grads if seen and seen[0] > 0]
    return reached[-1] if reached else None


def _reshape_tokens(tokens: torch.Tensor) -> torch.Tensor:
    side = _token_grid(tokens.shape[1])
    return tokens[:, 1:, :].reshape(len(tokens), side, side, -1).permute(0, 3, 1, 2)


def target_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last non-pooling module with a 4-D output (spatial > 1 where any has it)."""
    seen: list[tuple[nn.Module, tuple]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: seen.append((mod, tuple(out.shape)))
                                     if isinstance(out, torch.Tensor) and out.ndim == 4 else None)
             for m in model.modules() if m is not model and not isinstance(m, _POOLING)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise TLError(f"Grad-CAM needs a convolutional feature map or ViT patch tokens; "
                      f"{type(model).__name__} has neither")
    spatial = [m for m, shape in seen if shape[-1] > 1 and shape[-2] > 1]
    return (spatial or [m for m, _ in seen])[-1]


def heatmaps(bundle, images: np.ndarray, classes: np.ndarray | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps in [0, 1], (N, H, W) at the images' size, for ``classes`` (default: argmax).

    An ensemble's maps are the mean of its members' maps.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    images = bundle.check_channels(np.asarray(images))
    if classes is None:
        classes = bundle.predict_raw(images, batch_size).argmax(1)
    size = images.shape[-2:]
    total = np.zeros((len(images), *size), dtype=np.float64)
    for member in bundle.members:
        batcher = member.batcher(bundle.device)
        model = member.model
        example = batcher(torch.from_numpy(images[:1]).to(bundle.device))
        layer, reshape = token_layer(model, example), _reshape_tokens
        if layer is None:
            layer, reshape = target_layer(model, example), None
        with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            for i in range(0, len(images), batch_size):
                x = batcher(torch.from_numpy(images[i:i + batch_size]).to(bundle.device))
                targets = [ClassifierOutputTarget(int(c)) for c in classes[i:i + batch_size]]
                maps = torch.from_numpy(cam(input_tensor=x, targets=targets)).float()[:, None]
                total[i:i + batch_size] += F.interpolate(maps, size=size, mode="bilinear",
                                                         align_corners=False)[:, 0].numpy()
    total /= len(bundle.members)
    peak = total.reshape(len(total), -1).max(1).reshape(-1, 1, 1)
    return np.divide(total, peak, out=np.zeros_like(total), where=peak > 0)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 (H, W, 3): the image in gray or colour with the heatmap (jet) blended on top."""
    from matplotlib import colormaps

    rgb = np.repeat(image, 3, 0) if image.shape[0] == 1 else image
    rgb = rgb.transpose(1, 2, 0).astype(np.float64) / 255
    jet = colormaps["jet"](heat)[..., :3]
    return np.clip(255 * ((1 - alpha) * rgb + alpha * jet), 0, 255).astype(np.uint8)


def save_overlays(bundle, images: np.ndarray, names: list[str], out_dir: Path, batch_size: int = 32,
                  classes: np.ndarray | None = None) -> list[Path]:
    """Write one overlay PNG per image into ``out_dir`` (upscaled to at least 224 px); return the paths.

    ``classes``: the class each map explains, if the caller has already predicted (else the argmax)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    images = bundle.check_channels(np.asarray(images))
    maps = heatmaps(bundle, images, classes, batch_size=batch_size)
    paths = []
    for image, heat, name in zip(images, maps, names):
        picture = Image.fromarray(overlay(image, heat))
        if picture.width < 224:
            picture = picture.resize((224, 224 * picture.height // picture.width), Image.BILINEAR)
        paths.append(out_dir / f"{name}.png")
        atomic_write(paths[-1], lambda f, picture=picture: picture.save(f, format="PNG"))  # no cut-off PNG on a full disk
    return paths


def confusion_cells(probs: np.ndarray, labels: np.ndarray, threshold: float | None, positive: int = 1,
                    per_cell: int = 3) -> dict[str, np.ndarray]:
    """Indices of up to ``per_cell`` test images per TP/FP/TN/FN (most confident first); binary only."""
    called = probs[:, positive] >= (threshold if threshold is not None else 0.5)
    truth = labels == positive
    cells = {"TP": called & truth, "FP": called & ~truth, "TN": ~called & ~truth, "FN": ~called & truth}
    confidence = np.abs(probs[:, positive] - 0.5)
    return {k: np.flatnonzero(m)[np.argsort(-confidence[m], kind="stable")][:per_cell] for k, m in cells.items()}


def save_test_grid(bundle, arrays, raw_test_probs: np.ndarray, path: Path, per_cell: int = 3) -> None:
    """The report's grid: rows TP/FP/TN/FN (binary) or right/wrong (multiclass), heatmaps overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tl.core.calibration import apply_temperature
    from tl.core.metrics import correct_mask

    labels = np.asarray(arrays.labels["test"])
    multilabel = bundle.task == "multilabel"
    probs = raw_test_probs if multilabel else apply_temperature(raw_test_probs, float(bundle.meta.get("temperature", 1.0)))
    if multilabel:  # right: every finding right at 0.5; the map shown is the top-scoring finding's
        right = correct_mask(probs, labels)
        cells = {"all findings right": np.flatnonzero(right)[:per_cell], "some wrong": np.flatnonzero(~right)[:per_cell]}
    elif probs.shape[1] == 2:
        cells = confusion_cells(probs, labels, bundle.threshold, int(bundle.meta["positive_index"]), per_cell)
    else:
        right = probs.argmax(1) == labels
        cells = {"right": np.flatnonzero(right)[:per_cell], "wrong": np.flatnonzero(~right)[:per_cell]}
    index = np.concatenate([v for v in cells.values()]).astype(int)
    maps = heatmaps(bundle, arrays.images["test"][index]) if len(index) else np.zeros((0,))
    fig, axes = plt.subplots(len(cells), per_cell, figsize=(2.2 * per_cell, 2.4 * len(cells)), squeeze=False)
    k = 0
    names = bundle.class_names
    for r, (cell, idx) in enumerate(cells.items()):
        for c in range(per_cell):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(idx):
                i = int(idx[c])
                ax.imshow(overlay(bundle.check_channels(arrays.images["test"][i:i + 1])[0], maps[k]))
                binary = probs.shape[1] == 2 and not multilabel
                shown = int(bundle.meta["positive_index"]) if binary else int(probs[i].argmax())
                truth = ("+".join(n for n, y in zip(names, labels[i]) if y) or "no finding") if multilabel \
                    else names[labels[i]]
                ax.set_title(f"{cell} (true {truth})\np({names[shown]})={probs[i, shown]:.2f}, test #{i}",
                             fontsize=7)
                k += 1
            elif c == 0:
                ax.set_title(f"{cell}: none", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
