"""tl.train.models: every backbone builds and classifies, head API, unknown names, freeze modes, frozen BN."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tl.core.errors import TLError
from tl.train.models import (apply_freeze, build_model, freeze_bn_stats, get_backbone, get_classifier,
                       list_backbones)

ALL_BACKBONES = list_backbones() + ["timm/efficientnet_lite0"]
HEAVY = {"vit_b_16", "resnet101", "efficientnet_b4", "alexnet", "googlenet"}  # batch 1: CPU time


def _input_size(name: str) -> int:
    spec = get_backbone(name)
    return spec.fixed_input_size or (32 if name == "small_vit" else max(64, spec.min_input_size))


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_backbone_builds_random_and_outputs_num_classes(name: str):
    torch.manual_seed(0)
    size = _input_size(name)
    model = build_model(name, 3, image_size=size).eval()
    batch = 1 if name in HEAVY else 2
    with torch.inference_mode():
        out = model(torch.randn(batch, 3, size, size))
    assert out.shape == (batch, 3), f"{name} at {size}px: logits {tuple(out.shape)}, want ({batch}, 3)"
    assert torch.isfinite(out).all(), f"{name}: non-finite logits"
    head = get_classifier(model, get_backbone(name))
    assert isinstance(head, nn.Linear) and head.out_features == 3, f"{name}: head {head}"


def test_vit_b_16_wants_224_pixels():
    assert get_backbone("vit_b_16").fixed_input_size == 224


def test_unknown_backbone_lists_registered_names():
    with pytest.raises(TLError) as info:
        get_backbone("resnet19")
    msg = str(info.value)
    assert "resnet19" in msg and all(n in msg for n in ("resnet18", "convmodel", "vit_b_16")), msg


def test_unknown_timm_model_is_named():
    with pytest.raises(TLError, match="timm has no model 'not_a_model'"):
        get_backbone("timm/not_a_model")


def test_local_checkpoint_with_another_head_loads_body_and_replaces_head():
    torch.manual_seed(0)
    donor = build_model("convmodel", 5)
    model = build_model("convmodel", 2, donor.state_dict())
    torch.testing.assert_close(model.features[0].weight, donor.features[0].weight,
                               msg="body weights must come from the checkpoint")
    assert model.fc.out_features == 2, model.fc


def test_weights_for_another_architecture_fail():
    with pytest.raises(TLError, match="weights do not fit the architecture"):
        build_model("convmodel", 2, build_model("small_vit", 2).state_dict())


def _body_params(model: nn.Module, name: str) -> list[nn.Parameter]:
    head = {id(p) for p in get_classifier(model, get_backbone(name)).parameters()}
    return [p for p in model.parameters() if id(p) not in head]


@pytest.mark.parametrize("name", ["resnet18", "timm/efficientnet_lite0"])
def test_freeze_backbone_trains_only_the_head(name: str):
    model = build_model(name, 3)
    head = get_classifier(model, get_backbone(name))
    counts = apply_freeze(model, get_backbone(name), "backbone")
    head_numel = sum(p.numel() for p in head.parameters())
    assert counts["trainable_params"] == head_numel, f"{name}: {counts} vs head {head_numel}"
    assert counts["total_params"] == sum(p.numel() for p in model.parameters())
    assert all(p.requires_grad for p in head.parameters()), "the head must train"


@pytest.mark.parametrize("name", ["resnet18", "timm/efficientnet_lite0"])
def test_freeze_none_trains_everything(name: str):
    model = build_model(name, 3)
    counts = apply_freeze(model, get_backbone(name), "backbone")  # then unfreeze again
    counts = apply_freeze(model, get_backbone(name), "none")
    assert counts["trainable_params"] == counts["total_params"], counts


@pytest.mark.parametrize("name, n_body, n_frozen, first_name", [
    ("resnet18", 60, 30, "layer3.0.conv1.weight"),  # conv1, bn1, layer1, layer2 frozen: 30 of 60 tensors
    # round(73.5) = 74 would cut blocks.4.0.bn1 between weight and bias: the cut moves to 75
    ("timm/efficientnet_lite0", 147, 75, "blocks.4.0.conv_dw.weight"),
])
def test_freeze_partial_freezes_the_input_side_fraction(name: str, n_body: int, n_frozen: int, first_name: str):
    model = build_model(name, 3)
    apply_freeze(model, get_backbone(name), "partial", fraction=0.5)
    body = _body_params(model, name)
    assert len(body) == n_body, f"{name}: {len(body)} body tensors"
    flags = [p.requires_grad for p in body]
    first_trainable = flags.index(True)
    assert first_trainable == n_frozen, f"{name}: first trainable body tensor {first_trainable} of {n_body}"
    modules = {}
    for (k, p) in model.named_parameters():
        modules.setdefault(k.rpartition(".")[0], set()).add(p.requires_grad)
    split = [m for m, states in modules.items() if len(states) > 1]
    assert not split, f"{name}: half-frozen modules {split}"
    assert all(flags[first_trainable:]), f"{name}: every tensor after the frozen half trains"
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    assert names[0] == first_name, f"{name}: first trainable parameter {names[0]}"


def test_freeze_rejects_unknown_mode_and_bad_fraction():
    model, spec = build_model("convmodel", 2), get_backbone("convmodel")
    with pytest.raises(TLError, match="freeze must be one of none, backbone, partial, got 'all'"):
        apply_freeze(model, spec, "all")
    with pytest.raises(TLError, match=r"freeze_fraction must be in \[0, 1\], got 1.5"):
        apply_freeze(model, spec, "partial", 1.5)


@pytest.mark.parametrize("name", ["resnet18", "timm/efficientnet_lite0"])
def test_frozen_batchnorm_keeps_eval_mode_and_running_stats(name: str):
    torch.manual_seed(0)
    model = build_model(name, 3)
    apply_freeze(model, get_backbone(name), "backbone")
    model.train()
    freeze_bn_stats(model)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not m.training for m in bns), f"{name}: frozen BN layers must be in eval mode"
    assert get_classifier(model, get_backbone(name)).training, "the rest of the model stays in train mode"
    before = [m.running_mean.clone() for m in bns]
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    changed = [i for i, (m, b) in enumerate(zip(bns, before)) if not torch.equal(m.running_mean, b)]
    assert not changed, f"{name}: running_mean of frozen BN layers {changed[:5]} changed in a train forward"


def test_trainable_batchnorm_updates_its_statistics():
    # The counterpart: with freeze "none", BN trains and its running mean moves.
    model = build_model("resnet18", 3)
    apply_freeze(model, get_backbone("resnet18"), "none")
    model.train()
    freeze_bn_stats(model)
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert model.bn1.training and not torch.equal(model.bn1.running_mean, before), "trainable BN must update"
