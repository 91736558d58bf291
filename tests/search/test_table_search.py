"""Label tables through the command line (issue 19): bad tables stop the search with one line and
exit 2 before Ray starts; the uncertain-label policy masks what it should; and the NIH table runs
end to end, carved by patient, reported, exported, and the exported bundle scores real DICOMs."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_cases import in_process, selected_params

ROOT = Path(__file__).resolve().parents[2]
NIH_HEADER = ["Image Index", "Finding Labels", "Patient ID"]


def _search(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl.search", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


# The small real fixtures (tests/fixtures): NIH rows with their PNGs, SIIM DICOMs, as the full sets ship them.
NIH, SIIM = "nih_cxr14_small", "siim_acr_small"


def _nih_rows(data_dir: Path, n: int = 40) -> list[dict]:
    with open(data_dir / NIH / "Data_Entry_2017.csv", newline="") as f:
        return [dict(zip(NIH_HEADER, (r["Image Index"], r["Finding Labels"], r["Patient ID"])))
                for r in list(csv.DictReader(f))[:n]]


def _table(tmp: Path, data_dir: Path, rows: list[dict], header: list[str] | None = None) -> Path:
    """A small NIH-like table beside copies of the real images it names."""
    images = tmp / "images"
    images.mkdir(parents=True, exist_ok=True)
    for r in rows:
        source = data_dir / NIH / "images" / r["Image Index"]
        if source.is_file() and not (images / r["Image Index"]).exists():
            shutil.copy(source, images / r["Image Index"])
    path = tmp / "labels.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or list(rows[0]) if rows else header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _missing_column(tmp, d):
    return [str(_table(tmp, d, _nih_rows(d))), "--labels", "Finding Label"], "Finding Labels"


def _unmatched_path(tmp, d):
    rows = _nih_rows(d)
    rows[3]["Image Index"] = "99999999_000.png"
    return [str(_table(tmp, d, rows)), "--labels", "Finding Labels", "--path-column", "Image Index"], "99999999_000.png"


def _conflicting_duplicate(tmp, d):
    rows = _nih_rows(d)
    rows.append({**rows[0], "Finding Labels": "Hernia" if rows[0]["Finding Labels"] != "Hernia" else "Mass"})
    return [str(_table(tmp, d, rows)), "--labels", "Finding Labels"], rows[0]["Image Index"]


def _mixed_types(tmp, d):
    rows = [{**r, "Effusion": "1" if i % 2 else "0"} for i, r in enumerate(_nih_rows(d))]
    rows[5]["Effusion"] = "moderate"
    return [str(_table(tmp, d, rows)), "--labels", "Effusion,Finding Labels"], "Effusion"


def _value_outside(tmp, d):
    rows = [{**r, "Effusion": "1" if i % 2 else "0", "Edema": "0"} for i, r in enumerate(_nih_rows(d))]
    rows[7]["Edema"] = "2"
    return [str(_table(tmp, d, rows)), "--labels", "Effusion,Edema"], "Edema"


def _no_rows(tmp, d):
    return [str(_table(tmp, d, [], header=NIH_HEADER)), "--labels", "Finding Labels"], "no rows"


def _dicom_table(tmp: Path, d: Path, make) -> Path:
    """A table of the real SIIM DICOMs and one made by ``make`` (a path -> file writer), with official
    splits (12 images are too few to carve by patient)."""
    folder = tmp / "dicoms"
    folder.mkdir(parents=True, exist_ok=True)
    siim = sorted((d / SIIM / "dicom-images").glob("*.dcm"))
    for f in siim:
        shutil.copy(f, folder / f.name)
    make(folder / "odd.dcm", siim[0])
    path = tmp / "dicoms.csv"
    with open(path, "w", newline="") as f:
        f.write("ImageId,Label,Split\n")
        for i, file in enumerate(sorted(folder.glob("*.dcm"))):
            f.write(f"{file.stem},{'yes' if i % 2 else 'no'},{('train', 'train', 'val', 'test')[i % 4]}\n")
    return path


def _no_pixel_data(tmp, d):
    import pydicom

    def make(path, source):
        ds = pydicom.dcmread(source)
        del ds.PixelData
        ds.save_as(path)
    return [str(_dicom_table(tmp, d, make)), "--labels", "Label", "--split-column", "Split"], "odd.dcm"


def _jpeg2000(tmp, d):
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    def make(path, source):
        ds = pydicom.dcmread(source)
        ds.decompress()
        ds.compress(JPEG2000Lossless)
        ds.save_as(path)
    return [str(_dicom_table(tmp, d, make)), "--labels", "Label", "--split-column", "Split"], "odd.dcm"


# A sitecustomize that makes pydicom see no JPEG 2000 plugin, as on a machine without pylibjpeg-openjpeg.
NO_JPEG2000 = """
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless
_decoder = get_decoder(JPEG2000Lossless)
_decoder._available = {}
_decoder._unavailable = {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")}
"""

CASES = {
    "misspelt label column": (_missing_column, "Finding Labels"),
    "path matching no file": (_unmatched_path, None),
    "duplicate rows that disagree": (_conflicting_duplicate, None),
    "label column mixing types": (_mixed_types, None),
    "finding value outside 1/0/-1/blank": (_value_outside, None),
    "table with no rows": (_no_rows, None),
    "DICOM without pixel data": (_no_pixel_data, None),
    "compressed DICOM with no handler": (_jpeg2000, "pylibjpeg-openjpeg"),
}


# Refused after Ray has started (DICOM pixels are read by the decode store's Ray tasks), or needing
# an interpreter without a JPEG 2000 handler: these run as real `python -m tl.search` processes.
AFTER_RAY_STARTS = {"DICOM without pixel data", "compressed DICOM with no handler"}


@pytest.fixture(scope="module")
def ran(request, tmp_path_factory, small_data_dir) -> dict:
    """Every selected bad table's search: those refused after Ray starts as subprocesses, two at a
    time, the others meanwhile in this process (a fresh interpreter per case, one after another,
    took a minute on 2 cores)."""
    def prepare(case: str) -> tuple[Path, list[str], str, dict]:
        tmp = tmp_path_factory.mktemp("bad_table")
        args, names = CASES[case][0](tmp, small_data_dir)
        env = os.environ.copy()
        if case == "compressed DICOM with no handler":
            (tmp / "site").mkdir()
            (tmp / "site" / "sitecustomize.py").write_text(NO_JPEG2000)
            env["PYTHONPATH"] = os.pathsep.join([str(tmp / "site"), env.get("PYTHONPATH", "")])
        args = ["search_spaces/smoke.py", "--dataset", *args, "--data-dir", str(small_data_dir),
                "--storage", str(tmp / "results"), "--name", "bad"]
        return tmp / "results", args, names, env

    cases = selected_params(request, "test_a_bad_table_is_one_line_exit_2_and_no_experiment", "case")
    prepared = {case: prepare(case) for case in cases}
    with ThreadPoolExecutor(max_workers=2) as pool:
        later = {case: pool.submit(_search, args, env) for case, (_, args, _, env) in prepared.items()
                 if case in AFTER_RAY_STARTS}
        done = {case: in_process("tl.search", args) for case, (_, args, _, _) in prepared.items()
                if case not in AFTER_RAY_STARTS}
        done |= {case: future.result() for case, future in later.items()}
    return {case: (prepared[case][0], done[case], prepared[case][2]) for case in cases}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_table_is_one_line_exit_2_and_no_experiment(case, ran):
    also = CASES[case][1]
    storage, proc, names = ran[case]  # names: what the error must name
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"{case}: {proc.stderr[-1500:]}"
    assert names in errors[0], f"{case}: {errors[0]!r} does not name {names!r}"
    if also:
        assert also in errors[0], f"{case}: {errors[0]!r} does not say {also!r}"
    assert not (storage / "bad").exists(), f"{case}: left an experiment folder behind"


def test_uncertain_findings_are_masked_out_of_the_loss_and_every_metric():
    from tl.core.metrics import label_accuracy, per_finding_auc, split_metrics
    from tl.train.trainable import MaskedBCEWithLogits

    labels = np.array([[1, 0], [0, -1], [1, 1], [0, 0], [-1, 1], [0, 1]])
    probs = np.array([[0.9, 0.2], [0.3, 0.99], [0.6, 0.7], [0.4, 0.1], [0.01, 0.8], [0.2, 0.6]])
    decided = labels >= 0
    # Expected by hand from the decided cells only.
    p, y = probs[decided], labels[decided]
    assert label_accuracy(probs, labels) == pytest.approx(((p >= 0.5) == (y == 1)).mean())
    aucs = per_finding_auc(probs, labels)
    col0 = decided[:, 0]
    pos, neg = probs[col0 & (labels[:, 0] == 1), 0], probs[col0 & (labels[:, 0] == 0), 0]
    assert aucs[0] == pytest.approx((pos[:, None] > neg[None, :]).mean())
    metrics = split_metrics(probs, labels, "val", "multilabel", names=["a", "b"])
    assert metrics["val_auc_a"] == pytest.approx(aucs[0]) and not np.isnan(metrics["val_auc"])
    logits = torch.logit(torch.tensor(probs, dtype=torch.float64))
    target = torch.tensor(labels, dtype=torch.float64)
    masked = MaskedBCEWithLogits()(logits, target)
    by_hand = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert masked.item() == pytest.approx(by_hand, rel=1e-9), "mean BCE over the decided labels only"


@pytest.mark.parametrize("policy, expected", [("ignore", [[1, -1], [0, 1]]), ("zeros", [[1, 0], [0, 1]]),
                                              ("ones", [[1, 1], [0, 1]])])
def test_the_trials_policy_sets_only_the_training_labels(policy, expected):
    from tl.data import DatasetArrays
    from tl.train.trainable import build_trial

    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 255, (2, 1, 16, 16), dtype=np.uint8) for s in ("train", "val", "test")}
    labels = {s: np.array([[1, -1], [0, 1]]) for s in ("train", "val", "test")}
    arrays = DatasetArrays("tiny", images, labels, ["a", "b"])
    from tl.train.config import DEFAULTS

    setup = build_trial({**DEFAULTS, "backbone": "convmodel", "image_size": 16, "batch_size": 2, "uncertain": policy,
                         "feature_cache": False}, arrays, None, torch.device("cpu"))
    assert setup.split["train"][1].tolist() == expected, policy
    assert setup.split["val"][1].tolist() == [[1, -1], [0, 1]], "val keeps -1: left out of every metric"


def test_a_space_file_can_search_the_uncertain_policy(tmp_path):
    from tl.core.errors import TLError
    from tl.search.space import SpaceSampler, load_space

    space = tmp_path / "space.py"
    space.write_text('DATASET = "x.csv"\nLABELS = ["Edema", "Atelectasis"]\n'
                     'PARAMS = {"uncertain": ["ignore", "zeros", "ones"], "lr": [0.001]}\n')
    loaded = load_space(space)
    assert loaded.params["uncertain"] == ["ignore", "zeros", "ones"] and loaded.table_options()["labels"]

    class Trial:  # an Optuna trial that always takes the last choice
        def suggest_categorical(self, name, choices):
            return choices[-1]

    assert SpaceSampler(loaded)(Trial())["uncertain"] == "ones"
    space.write_text('PARAMS = {"uncertain": ["ignore", "maybe"]}\n')
    with pytest.raises(TLError, match="uncertain"):
        load_space(space)


@pytest.mark.slow
def test_nih_table_runs_end_to_end_by_patient_and_its_bundle_scores_dicoms(tmp_path, data_dir):
    """The issue's command on the real NIH rows (one short trial), then the report, tl.export, and
    tl.predict on the real SIIM DICOMs."""
    table = data_dir / "nih_cxr14_1000" / "Data_Entry_2017.csv"
    storage = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "tl.search", "search_spaces/chest14.py", "--dataset", str(table),
         "--labels", "Finding Labels", "--group-column", "Patient ID", "--data-dir", str(data_dir),
         "--num-samples", "1", "--max-epochs", "1", "--grace-period", "1", "--set", "backbone=convmodel",
         "--set", "epochs=1", "--storage", str(storage), "--name", "nih"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "label table" in proc.stdout and "prevalence train/val/test" in proc.stdout, proc.stdout[:3000]
    meta = json.loads((storage / "nih" / "tl_search.json").read_text())
    groups = meta["dataset"]["split"]["groups"]
    assert groups["source"] == "column Patient ID" or "Patient ID" in groups["source"], groups["source"]
    assert meta["split_audit"]["group_overlap"] == {"train|val": 0, "train|test": 0, "val|test": 0}
    # Independently: the patients of each split, from the table and the recorded file names.
    with open(table, newline="") as f:
        patient = {r["Image Index"]: r["Patient ID"] for r in csv.DictReader(f)}
    names = meta["dataset"]["split"]["carved"]
    carved = {s: {patient[Path(n).name] for n in names[s]["files"]} for s in ("val", "test")}
    assert not carved["val"] & carved["test"], "a patient in both carved splits"
    assert sum(meta["dataset"]["split_sizes"].values()) == 1000 and meta["dataset"]["task"] == "multilabel"
    summarize = subprocess.run([sys.executable, "-m", "analysis.summarize", str(storage / "nih")],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert summarize.returncode == 0, summarize.stderr[-2000:]
    report = (storage / "nih" / "summary" / "summary.md").read_text()
    assert "Label table" in report and "Labels per split" in report and "Patient ID" in report
    export = subprocess.run([sys.executable, "-m", "tl.export", str(storage / "nih"), "--out", str(tmp_path / "b"),
                             "--data-dir", str(data_dir), "--gradcam", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-2000:]
    with np.load(tmp_path / "b" / "reference_features.npz") as z:  # tl.evaluate folds the bundle's val by patient
        assert {patient[Path(n).name] for n in names["val"]["files"]} == set(z["groups"].tolist())
    out = tmp_path / "siim.csv"
    predict = subprocess.run([sys.executable, "-m", "tl.predict", str(tmp_path / "b"),
                              str(data_dir / "siim_acr_11" / "dicom-images"), "--out", str(out)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr[-2000:]
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 11 and all(r["error"] == "" for r in rows), rows[:2]
    assert all(0 <= float(r["p_Effusion"]) <= 1 for r in rows)
