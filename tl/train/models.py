"""Backbone registry, head replacement and freeze modes.

One registry maps a name to a ``BackboneSpec``: how to build the architecture, which weights
versions it accepts, where its classifier lives and what input it needs. torchvision models come
through ``torchvision.models.get_model``; ``timm/<name>`` through ``timm.create_model``; two small
from-scratch models (the seeds' baselines) are defined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from tl.core.errors import TLError

FREEZE_MODES = ("none", "backbone", "partial")
LOCAL_WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


@dataclass(frozen=True)
class BackboneSpec:
    """What the rest of the code needs to know about one backbone family member."""

    name: str
    build: Callable[..., nn.Module]  # build(**kwargs) -> model with the weights' class count
    # valid weights versions besides "none" and a local file; a callable is resolved on first use
    # (listing torchvision's weight enums imports torchvision.models, ~1 s that a ConvModel trial never needs)
    weights: tuple[str, ...] | Callable[[], tuple[str, ...]]
    classifier: str  # dotted path of the final Linear ("fc", "classifier.1", "heads.head")
    min_input_size: int = 32
    fixed_input_size: int | None = None  # e.g. ViT-B/16's position embeddings want 224
    family: str = "torchvision"
    build_kwargs: dict = field(default_factory=dict)

    def input_size(self, image_size: int) -> int:
        """The side the network is fed: its fixed input size, else ``image_size`` raised to its minimum."""
        return self.fixed_input_size or max(image_size, self.min_input_size)

    def weight_versions(self) -> tuple[str, ...]:
        if callable(self.weights):
            object.__setattr__(self, "weights", self.weights())  # frozen spec: resolve once, in place
        return self.weights


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    """Registered names; any ``timm/<name>`` that timm knows is accepted too."""
    return sorted(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    """The spec for ``name``; ``timm/<model>`` specs are made on first use from timm's config."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith("timm/"):
        return register_backbone(_timm_spec(name))
    raise TLError(f"unknown backbone {name!r}; registered: {', '.join(list_backbones())}, "
                  "or timm/<any timm model name>")


def _torchvision_spec(name: str, classifier: str, min_input_size: int = 32,
                      fixed_input_size: int | None = None, **build_kwargs) -> BackboneSpec:
    def versions() -> tuple[str, ...]:
        from torchvision.models import get_model_weights

        # Keep versions whose evaluation crop fits the model's input (ViT SWAG weights want 384+ px).
        return tuple(w.name for w in get_model_weights(name)
                     if fixed_input_size is None or w.transforms().crop_size[0] == fixed_input_size) + ("DEFAULT",)

    def build(**kwargs):
        from torchvision.models import get_model

        return get_model(name, weights=None, **{**build_kwargs, **kwargs})

    return BackboneSpec(name, build, versions, classifier, min_input_size, fixed_input_size,
                        "torchvision", build_kwargs)


# The seeds' backbones. Classifier paths are where torchvision puts the final Linear.
for _name, _classifier, _extra in [
    ("resnet18", "fc", {}), ("resnet50", "fc", {}), ("resnet101", "fc", {}),
    ("resnext50_32x4d", "fc", {}), ("densenet121", "classifier", {}),
    ("efficientnet_b0", "classifier.1", {}), ("efficientnet_b4", "classifier.1", {}),
    ("alexnet", "classifier.6", {"min_input_size": 64}),
    ("googlenet", "fc", {"aux_logits": False, "init_weights": True}),
    ("mobilenet_v3_small", "classifier.3", {}),
    ("vit_b_16", "heads.head", {"fixed_input_size": 224}),
]:
    register_backbone(_torchvision_spec(_name, _classifier, **_extra))


def _timm_spec(name: str) -> BackboneSpec:
    import timm

    arch = name.removeprefix("timm/")
    if not timm.is_model(arch):
        raise TLError(f"unknown backbone {name!r}: timm has no model {arch!r}")
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    versions = ("DEFAULT",) + (("IMAGENET1K_PYPI",) if arch == "efficientnet_lite0" else ())
    fixed = cfg.get("input_size", (3, 224, 224))[-1] if cfg.get("fixed_input_size") else None

    def build(**kwargs):
        return timm.create_model(arch, pretrained=False, **kwargs)

    return BackboneSpec(name, build, versions, cfg.get("classifier", "classifier"),
                        32, fixed, "timm")


class ConvModel(nn.Module):
    """The seeds' 5-layer from-scratch baseline: 3 conv blocks + 2 fully connected layers."""

    def __init__(self, num_classes: int = 2, width: int = 32, in_chans: int = 3):
        super().__init__()
        blocks = []
        for c_in, c_out in [(in_chans, width), (width, 2 * width), (2 * width, 4 * width)]:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc1 = nn.Sequential(nn.Linear(4 * width * 16, 128), nn.ReLU(inplace=True), nn.Dropout(0.3))
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(self.fc1(self.features(x)))


class SmallViT(nn.Module):
    """A small ViT trained from scratch; ``patch_size`` is a hyperparameter.

    Patches tile the image from the top left; a border narrower than one patch is dropped.
    """

    def __init__(self, num_classes: int = 2, image_size: int = 28, patch_size: int = 4,
                 dim: int = 128, depth: int = 4, heads: int = 4, in_chans: int = 3):
        super().__init__()
        if patch_size > image_size:
            raise TLError(f"small_vit: patch_size {patch_size} is larger than the image ({image_size} px)")
        n = (image_size // patch_size) ** 2
        self.patch = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.encoder(x)[:, 0]))


register_backbone(BackboneSpec("convmodel", ConvModel, (), "fc", 8, None, "scratch"))
register_backbone(BackboneSpec("small_vit", SmallViT, (), "head", 8, None, "scratch"))


def get_classifier(model: nn.Module, spec: BackboneSpec) -> nn.Linear:
    """The final Linear layer of ``model`` (timm's ``get_classifier`` for every family)."""
    layer = model.get_submodule(spec.classifier)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{spec.name}: {spec.classifier} is {type(layer).__name__}, not Linear")
    return layer


def set_classifier(model: nn.Module, spec: BackboneSpec, module: nn.Module) -> None:
    """Put ``module`` where the classifier lives (an ``nn.Identity`` there exposes the features)."""
    parent_path, _, attr = spec.classifier.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, module)


def replace_head(model: nn.Module, spec: BackboneSpec, num_classes: int) -> nn.Linear:
    """Swap the final Linear for a fresh one with ``num_classes`` outputs; returns the new head."""
    new = nn.Linear(get_classifier(model, spec).in_features, num_classes)
    set_classifier(model, spec, new)
    return new


def build_model(name: str, num_classes: int, state_dict: dict | None = None,
                image_size: int = 224, patch_size: int = 4) -> nn.Module:
    """Build ``name``, load ``state_dict`` (pretrained, with its own head) and fit the head.

    Args:
        state_dict: weights for the architecture with its original classifier, or None for random init.
    """
    spec = get_backbone(name)
    kwargs = {"image_size": image_size, "patch_size": patch_size} if name == "small_vit" else {}
    model = spec.build(**kwargs)
    if state_dict is not None:
        head = spec.classifier + "."
        own = model.state_dict()
        # A local checkpoint may carry another head (a previous fine-tune): drop it, keep the body.
        state_dict = {k: v for k, v in state_dict.items()
                      if not (k.startswith(head) and k in own and own[k].shape != v.shape)}
        strict = all(k in state_dict for k in own if not k.startswith(head))
        try:
            missing, _ = model.load_state_dict(state_dict, strict=False)
            if not strict or any(not k.startswith(head) for k in missing):
                model.load_state_dict(state_dict)  # raises with the real mismatch
        except RuntimeError as exc:
            raise TLError(f"{name}: weights do not fit the architecture: {str(exc).splitlines()[0]}") from None
    replace_head(model, spec, num_classes)
    return model


def apply_freeze(model: nn.Module, spec: BackboneSpec, mode: str, fraction: float = 0.75) -> dict:
    """Set ``requires_grad`` for a freeze mode; returns counts of trainable/total parameters.

    - ``none``: everything trains.
    - ``backbone``: fixed feature extractor, only the new head trains.
    - ``partial``: the first ``fraction`` of the backbone's parameter tensors (input side) are
      frozen, the rest and the head train (the seeds' "freeze most layers").
    Frozen BatchNorm layers keep their ImageNet statistics: call ``freeze_bn_stats(model)`` after
    every ``model.train()``.
    """
    if mode not in FREEZE_MODES:
        raise TLError(f"freeze must be one of {', '.join(FREEZE_MODES)}, got {mode!r}")
    if not 0.0 <= fraction <= 1.0:
        raise TLError(f"freeze_fraction must be in [0, 1], got {fraction}")
    head_ids = {id(p) for p in get_classifier(model, spec).parameters()}
    body = [(name, p) for name, p in model.named_parameters() if id(p) not in head_ids]
    target = {"none": 0, "backbone": len(body), "partial": int(round(fraction * len(body)))}[mode]
    # Freeze whole layers: extend the cut to the end of the module it falls in, so no layer (a
    # BatchNorm's weight and bias, say) ends half frozen.
    n_frozen = target
    while 0 < n_frozen < len(body) and body[n_frozen][0].rpartition(".")[0] == body[n_frozen - 1][0].rpartition(".")[0]:
        n_frozen += 1
    for i, (_, p) in enumerate(body):
        p.requires_grad_(i >= n_frozen)
    for p in get_classifier(model, spec).parameters():
        p.requires_grad_(True)
    return count_parameters(model)


def freeze_bn_stats(model: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are all frozen in eval mode (fixed running stats)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def count_parameters(model: nn.Module) -> dict:
    return {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in model.parameters())}
