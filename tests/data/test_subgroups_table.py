"""Subgroups of the test images (issue 29): a CheXpert-style table searched with ``--subgroup-columns
Sex,AP/PA,Age`` records each test image's subgroups, and the report's subgroups.csv adds up to the test
split per column; an unknown column is one error line, exit 2, nothing written; DICOM headers and a
path regex give subgroups too. Real images only (tests/fixtures), laid out as CheXpert ships them."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli_cases import in_process
from tl.core.errors import TLError
from tl.core.subgroups import IMAGE_COLUMN
from tl.data.arrays import DatasetArrays
from tl.data.subgroups import AGE_BANDS, plan_subgroups, subgroups_of_test

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "CheXpert-v1.0-small"
BANDS = {label for _, _, label in AGE_BANDS} | {"unknown"}


def _band(age: str) -> str:
    """The documented bands, written out again here: 0-17, 18-39, 40-59, 60-79, 80+; blank is unknown."""
    if not age:
        return "unknown"
    a = float(age)
    return "0-17" if a < 18 else "18-39" if a < 40 else "40-59" if a < 60 else "60-79" if a < 80 else "80+"


def _chexpert(tmp: Path, small: Path) -> Path:
    """``CheXpert-v1.0-small/train.csv`` whose Path values start with the release folder (as CheXpert's
    do), naming links to the 100 real chest_xray fixture JPEGs: one patient each, Sex, Age (some blank),
    Frontal/Lateral, AP/PA (blank for laterals), and two finding columns of 1/0/-1/blank."""
    release = tmp / RELEASE
    files = sorted((small / "chest_xray").rglob("*.jpeg"))
    rng = np.random.default_rng(0)
    rows = []
    for i, source in enumerate(files):
        lateral = i % 7 == 3
        path = f"{RELEASE}/train/patient{i + 1:05d}/study1/view1_{'lateral' if lateral else 'frontal'}.jpg"
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source, tmp / path)
        sick = "PNEUMONIA" in source.parts
        rows.append({"Path": path, "Sex": ("Male", "Female", "Female", "Male", "Unknown")[i % 5],
                     "Age": "" if i % 11 == 5 else str(int(rng.integers(12, 95))),
                     "Frontal/Lateral": "Lateral" if lateral else "Frontal",
                     "AP/PA": "" if lateral else ("AP", "PA")[i % 2],
                     "Pneumonia": "-1" if i % 13 == 0 else ("1" if sick else ("0" if i % 3 else "")),
                     "Effusion": ("1", "0", "", "0", "-1")[i % 5]})
    with open(release / "train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return release / "train.csv"


def _args(table: Path, storage: Path, columns: str) -> list[str]:
    return ["search_spaces/smoke.py", "--dataset", str(table), "--labels", "Pneumonia,Effusion",
            "--subgroup-columns", columns, "--num-samples", "1", "--max-epochs", "1", "--grace-period", "1",
            "--set", "epochs=1", "--set", "batch_size=64", "--storage", str(storage), "--name", "chexpert"]


@pytest.mark.slow
def test_a_chexpert_table_searched_by_sex_view_and_age_adds_up_per_column(tmp_path, small_data_dir):
    table = _chexpert(tmp_path / "data", small_data_dir)
    storage = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "tl.search", *_args(table, storage, "Sex,AP/PA,Age")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    experiment = storage / "chexpert"
    meta = json.loads((experiment / "tl_search.json").read_text())
    n_test = meta["dataset"]["split_sizes"]["test"]
    recorded = pd.read_csv(experiment / "test_subgroups.csv", dtype=str, keep_default_na=False)
    assert list(recorded.columns) == [IMAGE_COLUMN, "Sex", "AP/PA", "Age"] and len(recorded) == n_test > 0
    assert meta["subgroups"]["test_fingerprint"] == meta["dataset"]["test_fingerprint"]
    # Each test image's subgroups, against the table read here on its own.
    with open(table, newline="") as f:
        by_path = {r["Path"].removeprefix(f"{RELEASE}/"): r for r in csv.DictReader(f)}
    for _, r in recorded.iterrows():
        row = by_path[r[IMAGE_COLUMN]]
        assert (r["Sex"], r["AP/PA"], r["Age"]) == (row["Sex"], row["AP/PA"] or "unknown", _band(row["Age"])), r
    # Subgroups never reach a trial.
    for params in experiment.glob("*/params.json"):
        assert "subgroup" not in params.read_text().lower(), params.read_text()

    out = tmp_path / "summary"
    summary = in_process("analysis.summarize", [str(experiment), "--out", str(out)])
    assert summary.returncode == 0, summary.stderr[-2000:]
    frame = pd.read_csv(out / "subgroups.csv", keep_default_na=False)
    assert list(frame["column"].unique()) == ["Sex", "AP/PA", "Age"]
    for column, rows in frame.groupby("column"):
        assert rows["images"].sum() == n_test, f"{column}: {rows[['subgroup', 'images']].values.tolist()} != {n_test}"
    assert set(frame[frame["column"] == "Age"]["subgroup"]) <= BANDS, frame["subgroup"].tolist()
    assert not frame["flagged"].astype(str).eq("True").any(), "every subgroup is under 30 images: none flagged"
    assert frame["note"].str.contains("listed, not flagged").all()
    report = (out / "summary.md").read_text()
    assert "Subgroups of the test split" in report and "No subgroup is flagged." in report


def test_an_unknown_column_is_one_error_line_exit_2_and_nothing_written(tmp_path, small_data_dir):
    table = _chexpert(tmp_path / "data", small_data_dir)
    storage = tmp_path / "results"
    proc = in_process("tl.search", _args(table, storage, "Sex,Race,Age"))
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "'Race'" in errors[0] and "'AP/PA'" in errors[0], proc.stderr
    assert not (storage / "chexpert").exists(), "left an experiment folder behind"


def _arrays(names: list[str]) -> DatasetArrays:
    """What subgroups_of_test reads of the decoded splits: the test images' recorded names, in order."""
    return DatasetArrays("t", {}, {"test": np.zeros(len(names), dtype=np.int64)}, ["a", "b"], names={"test": names})


def test_dicom_header_fields_are_subgroups_of_a_table_of_dicoms(small_data_dir):
    import pydicom

    table = small_data_dir / "siim_acr_small" / "train-rle.csv"
    plan = plan_subgroups(str(table), table={"labels": ["EncodedPixels!=-1"]},
                          columns="PatientSex,ViewPosition,PatientAge")
    files = sorted((small_data_dir / "siim_acr_small" / "dicom-images").glob("*.dcm"))
    names = [f"dicom-images/{f.name}" for f in files]
    frame = subgroups_of_test(plan, _arrays(names))
    for f, (_, row) in zip(files, frame.iterrows()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        age = int(str(ds.PatientAge).rstrip("Y"))
        assert (row["PatientSex"], row["ViewPosition"]) == (ds.PatientSex, ds.ViewPosition), row.to_dict()
        assert row["PatientAge"] == _band(str(age)), (ds.PatientAge, row["PatientAge"])
    with pytest.raises(TLError, match="'PatientSex'.*not all DICOM|'Sex'"):
        plan_subgroups(str(small_data_dir / "nih_cxr14_small" / "Data_Entry_2017.csv"),
                       table={"labels": ["Finding Labels"]}, columns="Patient Gender,PatientSex")


def test_a_path_regex_names_subgroups_of_a_folder(small_data_dir):
    folder = small_data_dir / "chest_xray"
    plan = plan_subgroups(str(folder), pattern=r"(?P<cause>bacteria|virus)")
    names = [p.relative_to(folder).as_posix() for p in sorted((folder / "test").rglob("*.jpeg"))]
    frame = subgroups_of_test(plan, _arrays(names))
    expected = ["bacteria" if "bacteria" in n else "virus" if "virus" in n else "unknown" for n in names]
    assert frame["cause"].tolist() == expected and {"bacteria", "unknown"} <= set(expected)
    with pytest.raises(TLError, match="PatientSex"):
        plan_subgroups(str(folder), columns="Sex")
