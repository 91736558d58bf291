"""The covariate-shift check end to end: tl.export writes the model's val and test features and the
val-vs-test classifier beside the trials they are of, and analysis.summarize turns them and the saved
predictions into shift.csv and the report's Task E sentence (shown only for the model it is of)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tl
from tl.core.shift import LOOK_ALIKE
from bundle_builders import build_experiment, write_region_folder
from tl.use.export import main as export_main


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One trained ConvModel (1 epoch) on 600 region images (test 90, val 51: the fewest the sentence
    reads), exported without Grad-CAM."""
    root = tmp_path_factory.mktemp("shift")
    data = write_region_folder(root / "data", n_per_class=300)
    build_experiment(root / "exp", data, [{"seed": 1, "lr": 3e-3, "epochs": 1}])
    assert export_main([str(root / "exp"), "--out", str(root / "bundle"), "--gradcam", "0"]) == 0
    from tl.data import load_dataset

    return {"root": root, "exp": root / "exp", "bundle": root / "bundle", "arrays": load_dataset(str(data), 32, seed=0)}


def test_export_writes_the_features_and_the_classifier_of_the_exported_trials(exported: dict):
    meta = json.loads((exported["bundle"] / "model.json").read_text())
    record = json.loads((exported["exp"] / "explain" / "shift.json").read_text())
    arrays = exported["arrays"]
    assert record["trials"] == meta["provenance"]["trials"] and record["grouped_splits"] == []
    assert (record["n_val"], record["n_test"], record["grouped"]) == (len(arrays.labels["val"]), 90, False)
    assert record["low"] <= record["auc"] <= record["high"] and record["feature_dim"] == 128, record
    # val and test are carved from one population: the classifier cannot tell them apart (out of fold, a
    # classifier with nothing to find scores at or below chance: 0.38 [0.28, 0.47] here)
    assert record["auc"] < LOOK_ALIKE and record["low"] < 0.5, record
    assert meta["provenance"]["val_test_classifier"]["auc"] == record["auc"]
    with np.load(exported["exp"] / "explain" / "shift_features.npz") as z:
        assert z["val_features"].shape == (len(arrays.labels["val"]), 128) and z["test_features"].dtype == np.float16
        np.testing.assert_array_equal(z["test_labels"], arrays.labels["test"])
        val_features = z["val_features"]
    with np.load(exported["bundle"] / "reference_features.npz") as z:
        np.testing.assert_array_equal(z["features"], val_features)


def test_the_features_are_what_the_classifier_layer_reads(exported: dict):
    """Through the model's own head the features give the bundle's probabilities: they are penultimate."""
    from tl.use.features import member_features

    bundle = tl.load_bundle(exported["bundle"], device="cpu")
    images = exported["arrays"].images["val"][:16]
    features = member_features(bundle, images)
    with torch.no_grad():
        probs = torch.softmax(bundle.members[0].model.fc(torch.from_numpy(features)), 1).numpy()
    np.testing.assert_allclose(probs, bundle.predict_raw(images), atol=1e-5)


def test_summary_writes_shift_csv_and_the_task_e_sentence(exported: dict, tmp_path: Path):
    from analysis.summarize import main as summarize_main

    assert summarize_main([str(exported["exp"]), "--out", str(tmp_path / "out"), "--ensemble", "1"]) == 0
    frame = pd.read_csv(tmp_path / "out" / "shift.csv").fillna({"class": ""})
    labels = exported["arrays"].labels
    prevalence = frame[frame["quantity"] == "prevalence"].set_index("class")
    assert prevalence.loc["pos", ["val_count", "val_n", "test_count", "test_n"]].tolist() == [
        int((labels["val"] == 1).sum()), len(labels["val"]), int((labels["test"] == 1).sum()), 90]
    record = json.loads((exported["exp"] / "explain" / "shift.json").read_text())
    auc = frame[frame["quantity"] == "val-vs-test classifier AUC"].iloc[0]
    assert (auc["value"], auc["low"], auc["high"]) == pytest.approx((record["auc"], record["low"], record["high"]))
    report = (tmp_path / "out" / "summary.md").read_text()
    pos = prevalence.loc["pos"]
    assert (f"({int(pos['test_count'])}/90) vs {100 * pos['val']:.1f} % ({int(pos['val_count'])}/{len(labels['val'])}) in val"
            in report), report[report.find("Why test"):][:1500]
    assert f"AUC {record['auc']:.2f} [{record['low']:.2f}, {record['high']:.2f}]" in report
    assert "look alike" in report


def test_a_classifier_of_other_trials_is_not_shown(exported: dict, tmp_path: Path):
    from analysis.shift_section import domain_for
    from tl.core.recommend import recommend
    from tl.core.results import load_experiments

    rec = recommend(load_experiments([exported["exp"]]))
    n_val = len(exported["arrays"].labels["val"])
    found, note = domain_for(exported["exp"], rec, n_val, 90)
    assert found is not None and note == ""
    other = tmp_path / "exp"
    (other / "explain").mkdir(parents=True)
    record = json.loads((exported["exp"] / "explain" / "shift.json").read_text())
    (other / "explain" / "shift.json").write_text(json.dumps({**record, "trials": ["someother"]}))
    found, note = domain_for(other, rec, n_val, 90)
    assert found is None and "someother" in note and "python -m tl.export" in note, note
    assert domain_for(exported["exp"], rec, n_val, 91)[0] is None, "another split's classifier is not shown"
