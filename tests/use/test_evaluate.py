"""tl.evaluate end to end on a small exported bundle and a labelled folder of PNGs from elsewhere: the
accuracy it reports is the one tl.predict's CSV of the same files gives against the folder's labels,
inside its interval; class names match case-insensitively; bad input is one error line and no folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bundle_builders import build_experiment, write_region_folder
from cli_cases import in_process
from tl.use.export import main as export_main
from tl.use.predict import main as predict_main


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A ConvModel trained 1 epoch on 160 region images and exported, and an external folder of 30 + 30 new
    images (another seed; 8 positives lack their square) whose class folders are spelled ``NEG`` and ``Pos``."""
    root = tmp_path_factory.mktemp("evaluate")
    data = write_region_folder(root / "data", n_per_class=80)
    build_experiment(root / "exp", data, [{"seed": 1, "lr": 3e-3, "epochs": 1}])
    assert export_main([str(root / "exp"), "--out", str(root / "bundle"), "--gradcam", "0"]) == 0
    ext = write_region_folder(root / "ext", n_per_class=30, seed=7)
    rng = np.random.default_rng(7)
    for i in range(8):  # positives without their square: the model misses them, so accuracy is not 1
        Image.fromarray(rng.integers(20, 90, size=(32, 32)).astype(np.uint8)).save(ext / "pos" / f"pos_{i:03d}.png")
    (ext / "neg").rename(ext / "NEG")
    (ext / "pos").rename(ext / "Pos")
    return {"root": root, "bundle": root / "bundle", "ext": ext}


@pytest.fixture(scope="module")
def evaluated(setup: dict) -> dict:
    out = setup["root"] / "eval"
    proc = in_process("tl.evaluate", [str(setup["bundle"]), str(setup["ext"]), "--out", str(out), "--device", "cpu",
                                      "--no-progress", "--subgroup-path", r"_0(?P<decile>[0-2])"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "proc": proc, "row": pd.read_csv(out / "evaluation.csv").iloc[0]}


def test_the_accuracy_is_predicts_against_the_folder_labels_with_its_interval(setup: dict, evaluated: dict):
    csv = setup["root"] / "predict.csv"
    assert predict_main([str(setup["bundle"]), str(setup["ext"]), "--out", str(csv), "--device", "cpu"]) == 0
    predicted = pd.read_csv(csv)
    truth = [Path(f).parent.name.lower() for f in predicted["file"]]
    accuracy = float(np.mean(predicted["label_argmax"].to_numpy() == np.array(truth)))
    row = evaluated["row"]
    assert row["n"] == 60 and (row["n_neg"], row["n_pos"]) == (30, 30), row.to_dict()
    assert row["acc"] == pytest.approx(accuracy, abs=1e-12), (row["acc"], accuracy)
    assert 0.5 < accuracy < 1 and row["acc_low"] < accuracy < row["acc_high"], row.to_dict()
    # the same probabilities, image by image (the decode store's pixels are tl.predict's)
    mine = pd.read_csv(evaluated["out"] / "predictions.csv").set_index("file")
    theirs = predicted.assign(file=[str(Path(f).relative_to(setup["ext"])) for f in predicted["file"]]).set_index("file")
    assert sorted(mine.index) == sorted(theirs.index)
    np.testing.assert_allclose(mine.loc[theirs.index, ["p_neg", "p_pos"]], theirs[["p_neg", "p_pos"]], atol=1e-6)
    assert list(mine.loc[theirs.index, "label_at_threshold"]) == list(theirs["label_at_threshold"])
    assert list(mine.loc[theirs.index, "label"]) == truth, "the folder labels, in the bundle's spelling"
    line = f"acc {row['acc']:.3f} [{row['acc_low']:.3f}, {row['acc_high']:.3f}]"
    assert line in evaluated["proc"].stdout and line in (evaluated["out"] / "report.html").read_text()
    assert "NEG as neg, Pos as pos" in (evaluated["out"] / "report.html").read_text()


def test_shift_against_the_bundles_val_images_and_subgroups(setup: dict, evaluated: dict):
    row = evaluated["row"]
    val = np.load(setup["bundle"] / "reference_features.npz")["labels"]
    assert (row["shift_n_reference"], row["shift_n_evaluated"]) == (len(val), 60)
    assert row["shift_auc_low"] <= row["shift_auc"] <= row["shift_auc_high"], row.to_dict()
    shift = pd.read_csv(evaluated["out"] / "shift.csv").fillna({"class": ""})
    prevalence = shift[shift["quantity"] == "prevalence"].set_index("class")
    assert prevalence.loc["pos", ["val_count", "val_n", "test_count", "test_n"]].tolist() == [
        int((val == 1).sum()), len(val), 30, 60]
    subgroups = pd.read_csv(evaluated["out"] / "subgroups.csv", dtype={"subgroup": str})
    assert subgroups.groupby("column")["images"].sum().to_dict() == {"decile": 60}
    assert set(subgroups["subgroup"]) == {"0", "1", "2"}, subgroups
    page = (evaluated["out"] / "report.html").read_text()
    assert 'id="shift-against-the-bundle-s-validation-data"' in page and 'id="subgroups"' in page


def test_a_bundle_without_reference_features_gets_a_note(setup: dict, tmp_path: Path):
    old = tmp_path / "old"
    shutil.copytree(setup["bundle"], old)
    (old / "reference_features.npz").unlink()
    proc = in_process("tl.evaluate", [str(old), str(setup["ext"]), "--out", str(tmp_path / "out"), "--device", "cpu",
                                      "--no-progress", "--split", "all"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = pd.read_csv(tmp_path / "out" / "evaluation.csv").iloc[0]
    assert np.isnan(row["shift_auc"]) and "reference_features.npz" in row["shift_note"], row.to_dict()
    assert not (tmp_path / "out" / "shift.csv").exists()


def _bad_bundle(setup: dict, tmp: Path) -> Path:
    bad = tmp / "bad_bundle"
    bad.mkdir()
    (bad / "model.json").write_text("{not json")
    return bad


def _other_classes(setup: dict, tmp: Path) -> Path:
    folder = tmp / "other"
    shutil.copytree(setup["ext"] / "NEG", folder / "neg")
    shutil.copytree(setup["ext"] / "Pos", folder / "maybe")
    return folder


@pytest.mark.parametrize("case, expected", [
    ("missing class", "the bundle's classes 'pos' not in the data; the data's classes 'maybe' not the bundle's"),
    ("unreadable bundle", "not a readable bundle description"),
    ("unknown subgroup column", "--subgroup-columns: no column 'Sex'"),
    ("existing out", "exists; tl.evaluate writes a new folder"),
])
def test_bad_input_is_one_error_line_and_nothing_written(setup: dict, tmp_path: Path, case: str, expected: str):
    bundle, data, extra = setup["bundle"], setup["ext"], []
    out = tmp_path / "out"
    if case == "missing class":
        data = _other_classes(setup, tmp_path)
    elif case == "unreadable bundle":
        bundle = _bad_bundle(setup, tmp_path)
    elif case == "unknown subgroup column":
        extra = ["--subgroup-columns", "Sex"]
    else:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    proc = in_process("tl.evaluate", [str(bundle), str(data), "--out", str(out), "--device", "cpu", "--no-progress",
                                      *extra])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert expected in lines[0], lines[0]
    if case == "existing out":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "no temporary folder left"


def test_the_reference_is_folded_by_the_patients_the_bundle_recorded():
    """Val images of one patient share features: the classifier's folds must keep them together, as the
    export's own val-vs-test check does, so the patients tl.export saves reach tl.evaluate's classifier."""
    from types import SimpleNamespace

    from tl.core.results.files import Predictions
    from tl.use.evaluate import Reference, shift_against_reference

    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(12)], 5)  # 60 val images of 12 patients
    ref = rng.normal(size=(60, 8)).astype(np.float32)
    new = rng.normal(size=(40, 8)).astype(np.float32)
    val = Predictions(np.full((60, 2), 0.5), np.tile([0, 1], 30))
    bundle = SimpleNamespace(meta={"positive_index": 1}, task="binary", class_names=["a", "b"])
    by_image = shift_against_reference(bundle, Reference(ref, val, "", None), new, None,
                                       Predictions(np.full((40, 2), 0.5), np.tile([0, 1], 20)))
    by_patient = shift_against_reference(bundle, Reference(ref, val, "", patients), new, None,
                                         Predictions(np.full((40, 2), 0.5), np.tile([0, 1], 20)))
    assert (by_image.domain.grouped, by_image.domain.n_groups) == (False, 100)
    assert (by_patient.domain.grouped, by_patient.domain.n_groups) == (True, 12 + 40)
