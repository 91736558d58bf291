"""tl.export and tl.predict end to end on a hand-built experiment (no Ray): the bundle reproduces
the trial's saved test predictions from the image files, calibration is fitted on val, Grad-CAM
looks where the label is, and bad input gets one error line and no output."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tl
import tl.core.calibration
from tl.use.export import main as export_main
from tl.use.predict import main as predict_main
from bundle_builders import REGION, build_experiment, write_region_folder

CONFIGS = [{"seed": 1, "lr": 3e-3, "epochs": 3}, {"seed": 2, "lr": 2e-3, "epochs": 3}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tested trials and one stopped early, and the chosen trial exported as a bundle."""
    root = tmp_path_factory.mktemp("export")
    data = write_region_folder(root / "data")
    metrics = build_experiment(root / "exp", data, CONFIGS, untested=1)
    assert export_main([str(root / "exp"), "--out", str(root / "bundle"), "--gradcam", "1"]) == 0
    from tl.data import load_dataset

    return {"root": root, "data": data, "exp": root / "exp", "bundle": root / "bundle", "metrics": metrics,
            "arrays": load_dataset(str(data), 32, seed=0)}


def _saved(exp: Path, trial: str, split: str = "test") -> dict:
    with np.load(exp / f"{trial}_convmodel_none_none" / f"{split}_predictions.npz") as z:
        return {k: z[k] for k in z.files}


def test_export_takes_the_trial_the_rule_of_choice_picks(setup: dict):
    meta = json.loads((setup["bundle"] / "model.json").read_text())
    tested = {t: m["val_acc"] for t, m in setup["metrics"].items()}
    from tl.core.choice import rank_trials
    from tl.core.results import load_experiments
    from tl.core.results import trial_table

    table = rank_trials(trial_table(load_experiments([setup["exp"]])), "best_val_acc", "max")
    assert meta["provenance"]["trials"] == [table["trial"].iloc[0]], "the top of Table 1 (tested trials first)"
    assert meta["provenance"]["trials"][0] in tested, "never the untested trial with val 0.99"
    assert meta["schema_version"] == 1 and meta["class_names"] == ["neg", "pos"] and meta["positive_class"] == "pos"
    assert (setup["bundle"] / "member0.safetensors").is_file() and (setup["exp"] / "explain" / "gradcam_test.png").is_file()


def test_bundle_predictions_from_the_image_files_equal_the_saved_test_predictions(setup: dict):
    meta = json.loads((setup["bundle"] / "model.json").read_text())
    trial = meta["provenance"]["trials"][0]
    saved = _saved(setup["exp"], trial)
    names = setup["arrays"].names["test"]
    bundle = tl.load_bundle(setup["bundle"], device="cpu")
    probs = bundle.predict([setup["data"] / n for n in names], calibrated=False)  # decoded from PNG here
    assert np.abs(probs - saved["probs"]).max() <= 1e-5, np.abs(probs - saved["probs"]).max()
    # The CLI: calibrated probabilities, the same files, one row each.
    out = setup["root"] / "pred.csv"
    assert predict_main([str(setup["bundle"]), *[str(setup["data"] / n) for n in names], "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    scaled = tl.core.calibration.apply_temperature(saved["probs"], meta["temperature"])
    np.testing.assert_allclose(frame[["p_neg", "p_pos"]].to_numpy(), scaled, atol=1e-5)
    expected = np.where(scaled[:, 1] >= meta["threshold"], "pos", "neg")
    assert list(frame["label_at_threshold"]) == list(expected)
    assert list(frame["label_argmax"]) == list(np.array(["neg", "pos"])[scaled.argmax(1)])


def test_threshold_reaches_the_target_sensitivity_on_val(setup: dict):
    meta = json.loads((setup["bundle"] / "model.json").read_text())
    val = _saved(setup["exp"], meta["provenance"]["trials"][0], "val")
    pos = tl.core.calibration.apply_temperature(val["probs"], meta["temperature"])[:, 1]
    sens = (pos[val["labels"] == 1] >= meta["threshold"]).mean()
    assert sens >= 0.95, sens
    cal = meta["provenance"]["calibration"]
    assert cal["val_sensitivity"] == pytest.approx(sens) and 0 <= cal["test_specificity"] <= 1


def test_ensemble_is_the_mean_of_the_top_trials(setup: dict, tmp_path: Path):
    assert export_main([str(setup["exp"]), "--out", str(tmp_path / "ens"), "--ensemble", "2", "--gradcam", "0"]) == 0
    meta = json.loads((tmp_path / "ens" / "model.json").read_text())
    assert meta["kind"] == "ensemble" and len(meta["members"]) == 2
    mean = np.mean([_saved(setup["exp"], t)["probs"] for t in meta["provenance"]["trials"]], 0)
    probs = tl.load_bundle(tmp_path / "ens", device="cpu").predict(setup["arrays"].images["test"], calibrated=False)
    assert np.abs(probs - mean).max() <= 1e-5


def test_gradcam_heat_concentrates_where_the_label_is(setup: dict, tmp_path: Path):
    from tl.use.gradcam import heatmaps

    arrays = setup["arrays"]
    positives = arrays.images["test"][arrays.labels["test"] == 1]
    maps = heatmaps(tl.load_bundle(setup["bundle"], device="cpu"), positives, np.ones(len(positives), int))
    share = maps[:, REGION[0], REGION[1]].sum((1, 2)) / maps.sum((1, 2))
    peak = np.array([np.unravel_index(m.argmax(), m.shape) for m in maps])
    assert ((peak[:, 0] < 16) & (peak[:, 1] < 16)).mean() >= 0.8, "the hottest pixel lies in the informative quadrant"
    assert np.median(share) > 0.5, f"median heat share in the informative quadrant {np.median(share):.2f} (area 0.25)"
    assert predict_main([str(setup["bundle"]), str(setup["data"] / "pos"), "--out", str(tmp_path / "p.csv"),
                         "--gradcam", str(tmp_path / "cam")]) == 0
    assert len(list((tmp_path / "cam").glob("*.png"))) == 120, "one overlay per input"


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_newer_schema_is_refused(setup: dict, tmp_path: Path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(setup["bundle"], bundle)
    meta = json.loads((bundle / "model.json").read_text())
    (bundle / "model.json").write_text(json.dumps({**meta, "schema_version": 99}))
    assert predict_main([str(bundle), str(setup["data"] / "pos"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "newer" in _error(capsys) and not (tmp_path / "p.csv").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_pickle_payload_and_corrupt_weights_are_refused_never_run(setup: dict, tmp_path: Path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(setup["bundle"], bundle)
    meta = json.loads((bundle / "model.json").read_text())
    _Payload.marker = tmp_path / "ran"
    with open(bundle / "weights.pt", "wb") as f:
        pickle.dump({"fc.weight": _Payload()}, f)
    meta["members"][0].update(weights_file="weights.pt", sha256=None)
    (bundle / "model.json").write_text(json.dumps(meta))
    assert predict_main([str(bundle), str(setup["data"] / "pos"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "refused" in _error(capsys) and not _Payload.marker.exists(), "the payload must never run"
    # Flipped bytes in the safetensors file: the recorded sha256 catches them.
    shutil.rmtree(bundle)
    shutil.copytree(setup["bundle"], bundle)
    raw = bytearray((bundle / "member0.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (bundle / "member0.safetensors").write_bytes(bytes(raw))
    assert predict_main([str(bundle), str(setup["data"] / "pos"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "corrupt" in _error(capsys) and not (tmp_path / "p.csv").exists()


def test_export_bad_trials(setup: dict, tmp_path: Path, capsys):
    assert export_main([str(setup["exp"]), "--trial", "deadbeef", "--out", str(tmp_path / "b")]) == 2
    assert "does not exist" in _error(capsys) and not (tmp_path / "b").exists()
    assert export_main([str(setup["exp"]), "--trial", "00000002", "--out", str(tmp_path / "b")]) == 2
    assert "not tested" in _error(capsys) and not (tmp_path / "b").exists()
    untested = tmp_path / "untested"
    untested.mkdir()
    shutil.copy(setup["exp"] / "tl_search.json", untested)
    shutil.copytree(setup["exp"] / "00000002_convmodel_none_none", untested / "00000002_convmodel_none_none")
    assert export_main([str(untested), "--out", str(tmp_path / "b")]) == 2
    assert "no tested trial" in _error(capsys) and not (tmp_path / "b").exists()


def test_undecodable_image_fails_naming_it_or_gets_an_error_row(setup: dict, tmp_path: Path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = setup["data"] / "pos" / "pos_000.png"
    out = tmp_path / "p.csv"
    assert predict_main([str(setup["bundle"]), str(good), str(bad), "--out", str(out)]) == 2
    assert "broken.png" in _error(capsys) and not out.exists()
    assert predict_main([str(setup["bundle"]), str(good), str(bad), "--out", str(out), "--skip-bad-images"]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame["file"]) == [str(good), str(bad)] and frame["error"][1] and not frame["error"][0]
    assert frame["p_pos"][0] != "" and frame["p_pos"][1] == ""


def test_colour_images_into_a_grayscale_model_are_refused(setup: dict, tmp_path: Path):
    bundle = tl.load_bundle(setup["bundle"], device="cpu")
    bundle.meta = {**bundle.meta, "channels": 1}
    gray_as_rgb = np.repeat(setup["arrays"].images["test"][:4, :1], 3, 1)
    assert bundle.predict(gray_as_rgb).shape == (4, 2), "equal channels: an obvious conversion"
    colour = gray_as_rgb.copy()
    colour[:, 0] //= 2
    with pytest.raises(tl.TLError, match="colour"):
        bundle.predict(colour)
    with pytest.raises(tl.TLError, match="does not fit"):
        bundle.predict(np.zeros((2, 4, 32, 32), np.uint8))


def test_npz_split_input_scores_like_the_arrays(setup: dict, tmp_path: Path):
    """``file.npz:test`` goes through tl.data's npz reader (MedMNIST layout, N x H x W x 3 here)."""
    arrays = setup["arrays"]
    npz = tmp_path / "new.npz"
    np.savez(npz, **{f"{s}_images": np.asarray(arrays.images[s]).transpose(0, 2, 3, 1) for s in ("train", "val", "test")},
             **{f"{s}_labels": arrays.labels[s][:, None] for s in ("train", "val", "test")})
    assert predict_main([str(setup["bundle"]), f"{npz}:test", "--out", str(tmp_path / "p.csv")]) == 0
    frame = pd.read_csv(tmp_path / "p.csv")
    meta = json.loads((setup["bundle"] / "model.json").read_text())
    saved = _saved(setup["exp"], meta["provenance"]["trials"][0])
    scaled = tl.core.calibration.apply_temperature(saved["probs"], meta["temperature"])
    assert frame["file"][0] == f"{npz}:test[0]" and len(frame) == len(scaled)
    np.testing.assert_allclose(frame[["p_neg", "p_pos"]].to_numpy(), scaled, atol=1e-5)


def test_onnx_copy_matches_pytorch_within_its_tolerance(setup: dict, tmp_path: Path):
    ort = pytest.importorskip("onnxruntime")
    assert export_main([str(setup["exp"]), "--out", str(tmp_path / "b"), "--gradcam", "0", "--onnx"]) == 0
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    check = meta["members"][0]["onnx"]
    assert check["max_abs_diff"] <= check["tolerance"] == 1e-4
    # Independently: ONNX Runtime on Batcher's output gives the saved test probabilities.
    bundle = tl.load_bundle(tmp_path / "b", device="cpu")
    x = bundle.members[0].batcher(torch.device("cpu"))(torch.from_numpy(setup["arrays"].images["test"])).contiguous()
    session = ort.InferenceSession(str(tmp_path / "b" / check["file"]), providers=["CPUExecutionProvider"])
    probs = torch.from_numpy(session.run(None, {"image": x.numpy()})[0]).softmax(1).numpy()
    saved = _saved(setup["exp"], meta["provenance"]["trials"][0])["probs"]
    assert np.abs(probs - saved).max() <= 1e-4


def test_vit_gradcam_reshapes_the_patch_tokens_of_the_last_attention_block():
    """ViTs have no feature map: the layer is the last block's pre-attention norm, tokens on a grid."""
    from tl.use.bundle import Bundle, Member
    from tl.use.gradcam import heatmaps, token_layer
    from tl.train.models import build_model

    torch.manual_seed(0)
    model = build_model("small_vit", 2, None, image_size=32, patch_size=8).eval()
    spec = {"trial": "vit", "backbone": "small_vit", "input_size": 32, "patch_size": 8, "mean": [0.5] * 3,
            "std": [0.5] * 3, "channels_last": False, "precision": "fp32"}
    bundle = Bundle({"class_names": ["a", "b"], "channels": 3, "temperature": 1.0}, [Member(model, spec)],
                    torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    x = bundle.members[0].batcher(torch.device("cpu"))(torch.from_numpy(images[:1]))
    assert token_layer(model, x) is model.encoder.layers[-1].norm1, "a norm after the last attention gets no patch gradient"
    maps = heatmaps(bundle, images)
    assert maps.shape == (2, 32, 32) and maps.max() == pytest.approx(1.0) and maps.std() > 0
