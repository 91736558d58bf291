"""tl.data.label_table: label tables as datasets ship them (NIH, SIIM-ACR, CheXpert, ISIC forms), their
label forms, groups and splits, and one test per kind of bad input.

Expected values come from the csv module, pydicom or the rows the test wrote itself, never from the
reader under test."""
from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tl.core.errors import TLError
from tl.data import table as table_module
from tl.core.uncertain import UNCERTAIN_POLICIES, apply_uncertain
from tl.data.label_table import read_label_table

# the README's finding counts for nih_cxr14_1000/Data_Entry_2017.csv
NIH_COUNTS = {"Effusion": 170, "Infiltration": 162, "Atelectasis": 95, "Cardiomegaly": 83, "Consolidation": 42,
              "Pneumothorax": 40, "Nodule": 39, "Emphysema": 37, "Mass": 35, "Fibrosis": 32, "Edema": 31,
              "Pleural_Thickening": 29, "Pneumonia": 11, "Hernia": 9}


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(fh)]


def _write(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def jpegs(small_data_dir: Path) -> list[Path]:
    return sorted((small_data_dir / "chest_xray" / "train" / "NORMAL").iterdir())[:8]


@pytest.fixture
def small(tmp_path: Path, jpegs: list[Path]):
    """A folder of 4 real JPEGs a.jpg … d.jpg; returns a writer of tables beside them."""
    for name, src in zip("abcd", jpegs):
        shutil.copyfile(src, tmp_path / f"{name}.jpg")

    def make(header, rows, name="labels.csv", delimiter=","):
        return _write(tmp_path / name, header, rows, delimiter)
    return make


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(TLError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "an error is one line"
    return message


# ---------------------------------------------------------------------------------------------- real tables


def _check_nih_table(root: Path):
    """Read an NIH ``Data_Entry_2017.csv`` and check it against the csv module's reading of the rows."""
    path = root / "Data_Entry_2017.csv"
    rows = _csv_rows(path)
    expected = [set() if r["Finding Labels"] == "No Finding" else set(r["Finding Labels"].split("|")) for r in rows]
    counts = Counter(f for e in expected for f in e)
    no_finding = [i for i, r in enumerate(rows) if r["Finding Labels"] == "No Finding"]
    several = sum(len(e) >= 2 for e in expected)
    patients = len({r["Patient ID"] for r in rows})

    t = read_label_table(path, labels="Finding Labels", group_column="Patient ID")

    assert t.multilabel and t.labels.shape == (len(rows), len(counts)) and t.labels.dtype == np.int8
    assert t.class_names == sorted(counts)
    assert [f.parent for f in t.files] == [root.absolute() / "images"] * len(rows)
    assert [f.name for f in t.files] == [r["Image Index"] for r in rows] == t.names
    assert all(f.is_file() for f in t.files)
    got = [{t.class_names[k] for k in np.flatnonzero(row)} for row in t.labels]
    assert got == expected
    assert set(np.unique(t.labels)) == {0, 1}
    assert not t.labels[no_finding].any()
    assert int((t.labels.sum(axis=1) >= 2).sum()) == several
    assert t.groups.tolist() == [r["Patient ID"] for r in rows] and len(set(t.groups)) == patients
    assert t.splits is None
    rec = t.record
    assert rec["path_column"] == {"column": "Image Index", "chosen": "detected",
                                  "image_root": str(root.absolute()),
                                  "resolved": {"table_folder": 0, "folder_above": 0, "absolute": 0, "name": len(rows),
                                               "stem": 0}}
    assert {k: v["positive"] for k, v in rec["labels"]["counts"].items()} == dict(counts)
    assert rec["labels"]["mode"] == "joined" and rec["labels"]["no_finding_rows"] == len(no_finding)
    assert rec["labels"]["rows_with_2_or_more_positive"] == several
    assert rec["groups"] == {"source": "column 'Patient ID'", "n_groups": patients, "blank_rows": 0}
    assert json.loads(json.dumps(rec)) == rec
    return rows, counts, len(no_finding), several, patients


def test_real_nih_table(data_dir: Path):
    """All 1,000 rows: the figures the data's README gives."""
    rows, counts, no_finding, several, patients = _check_nih_table(data_dir / "nih_cxr14_1000")
    assert counts == NIH_COUNTS, "the data's README and the file disagree"
    assert (len(rows), no_finding, several, patients) == (1000, 499, 213, 264), (len(rows), no_finding, several, patients)


def test_real_nih_table_subset(small_data_dir: Path):
    """The rows in tests/fixtures (nih_cxr14_small): the same checks, on a subset with every kind of row."""
    rows, counts, no_finding, several, patients = _check_nih_table(small_data_dir / "nih_cxr14_small")
    assert 0 < no_finding < len(rows) and several > 0 and patients < len(rows), \
        f"the subset must hold No Finding rows, rows with 2+ findings and patients with 2+ images: {rows}"


def test_real_siim_table_compare_label_and_dicom_patient_groups(small_data_dir: Path):
    import pydicom

    root = small_data_dir / "siim_acr_small"
    rows = _csv_rows(root / "train-rle.csv")
    positive = [int(r["EncodedPixels"].strip() != "-1") for r in rows]
    assert 0 < sum(positive) < len(rows), "the fixture holds both labels"
    t = read_label_table(root / "train-rle.csv", labels="EncodedPixels!=-1")

    assert [f.name for f in t.files] == [r["ImageId"] + ".dcm" for r in rows]
    assert all(f.parent == root.absolute() / "dicom-images" for f in t.files)
    assert t.class_names == ["EncodedPixels==-1", "EncodedPixels!=-1"] and not t.multilabel
    assert t.labels.tolist() == positive
    patients = [pydicom.dcmread(root / "dicom-images" / (r["ImageId"] + ".dcm")).PatientID for r in rows]
    assert t.groups.tolist() == patients
    assert t.record["groups"]["source"] == "DICOM header PatientID (default: no group_column)"
    assert t.record["path_column"]["resolved"]["stem"] == len(rows)
    assert t.record["labels"]["counts"] == {"EncodedPixels==-1": len(rows) - sum(positive),
                                            "EncodedPixels!=-1": sum(positive)}

    named = read_label_table(root / "train-rle.csv", path_column="ImageId", labels=["encodedpixels!=-1"],
                             group_column="PatientID")
    assert named.groups.tolist() == patients and named.labels.tolist() == t.labels.tolist()
    assert named.record["groups"]["source"] == "DICOM header PatientID"


def test_siim_style_duplicate_mask_rows_are_merged(tmp_path: Path, small_data_dir: Path):
    src = small_data_dir / "siim_acr_small"
    shutil.copytree(src / "dicom-images", tmp_path / "dicom-images")
    rows = [[r["ImageId"], r["EncodedPixels"]] for r in _csv_rows(src / "train-rle.csv")]
    positive = next(r for r in rows if r[1].strip() != "-1")
    table = _write(tmp_path / "train-rle.csv", ["ImageId", " EncodedPixels"],
                   rows + [[positive[0], "1 2 3 4"], [positive[0], "9 9"]])
    t = read_label_table(table, labels="EncodedPixels!=-1")
    assert len(t.files) == len(rows) and int(t.labels.sum()) == sum(r[1].strip() != "-1" for r in rows)
    assert t.record["duplicates"] == {"rows_merged": 2, "images_with_duplicates": 1}


# ---------------------------------------------------------------------------------------------- CheXpert, ISIC


def test_chexpert_like_tree_keeps_uncertain_and_counts_blank(tmp_path: Path, jpegs: list[Path]):
    release = tmp_path / "CheXpert-v1.0-small"
    findings = ["Cardiomegaly", "Edema", "Pleural Effusion"]
    cells = [["1.0", "", "-1.0"], ["0.0", "-1.0", ""], ["", "1.0", "1.0"], ["-1.0", "0.0", ""], ["1.0", "1.0", "0.0"]]
    rows = []
    for i, (src, values) in enumerate(zip(jpegs, cells)):
        rel = f"train/patient{i:05d}/study1/view1_frontal.jpg"
        (release / rel).parent.mkdir(parents=True)
        shutil.copyfile(src, release / rel)
        rows.append([f"CheXpert-v1.0-small/{rel}", "Female", "60", "Frontal", "AP", *values])
    table = _write(release / "train.csv", ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *findings], rows)

    t = read_label_table(table, labels=findings)

    want = np.array([[0 if c == "" else int(float(c)) for c in values] for values in cells], dtype=np.int8)
    assert t.multilabel and t.class_names == findings and t.labels.dtype == np.int8
    np.testing.assert_array_equal(t.labels, want)
    assert [str(f) for f in t.files] == [str(release / r[0].split("/", 1)[1]) for r in rows]
    assert t.record["path_column"]["resolved"]["folder_above"] == 5
    blanks = {f: sum(1 for v in cells if v[k] == "") for k, f in enumerate(findings)}
    assert {f: c["blank"] for f, c in t.record["labels"]["counts"].items()} == blanks == \
        {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 2}
    assert {f: c["uncertain"] for f, c in t.record["labels"]["counts"].items()} == \
        {"Cardiomegaly": 1, "Edema": 1, "Pleural Effusion": 1}
    assert t.groups is None and t.record["groups"] == {"source": None}
    assert json.loads(json.dumps(t.record)) == t.record


def test_isic_like_table_by_stem_with_lesion_groups(tmp_path: Path, jpegs: list[Path]):
    root = tmp_path / "ham10000"
    rows = [["ISIC_0024306", "HAM_0000118", "nv"], ["ISIC_0024307", "HAM_0000118", "nv"],
            ["ISIC_0024308", "HAM_0002730", "mel"], ["ISIC_0024309", "HAM_0001466", "bkl"],
            ["ISIC_0024310", "HAM_0001466", "bkl"], ["ISIC_0024311", "HAM_0002761", "mel"]]
    for i, (row, src) in enumerate(zip(rows, jpegs)):
        folder = root / ("HAM10000_images_part_1" if i < 3 else "HAM10000_images_part_2")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / f"{row[0]}.jpg")
    table = _write(root / "HAM10000_metadata.csv", ["image_id", "lesion_id", "dx"], rows)

    t = read_label_table(table, labels="dx", group_column="lesion_id")

    assert not t.multilabel and t.class_names == ["bkl", "mel", "nv"]
    assert t.labels.dtype == np.int64 and t.labels.tolist() == [2, 2, 1, 0, 0, 1]
    assert [f.stem for f in t.files] == [r[0] for r in rows] and all(f.suffix == ".jpg" for f in t.files)
    assert t.groups.tolist() == [r[1] for r in rows]
    assert t.record["path_column"]["resolved"]["stem"] == 6
    assert t.record["groups"]["n_groups"] == 4

    mel = read_label_table(table, labels="dx==mel")
    assert mel.class_names == ["dx!=mel", "dx==mel"] and mel.labels.tolist() == [0, 0, 1, 0, 0, 1]


def test_apply_uncertain_policies():
    labels = np.array([[1, -1, 0], [-1, -1, 1]], dtype=np.int8)
    before = labels.copy()
    assert UNCERTAIN_POLICIES == ("ignore", "zeros", "ones")
    np.testing.assert_array_equal(apply_uncertain(labels, "ignore"), before)
    np.testing.assert_array_equal(apply_uncertain(labels, "zeros"), [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(apply_uncertain(labels, "ones"), [[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(labels, before)
    assert apply_uncertain(labels, "zeros").dtype == np.int8
    assert "ignore, zeros, ones" in _error(apply_uncertain, labels, "u-ones")


# ---------------------------------------------------------------------------------------------- label forms


def test_split_on_bar_is_exact_and_no_finding_is_not_a_class(small):
    table = small(["file", "findings"], [["a.jpg", "Pleural_Thickening"], ["b.jpg", "Thickening|Mass"],
                                         ["c.jpg", "no finding"], ["d.jpg", " Mass | Pleural_Thickening "]])
    t = read_label_table(table, labels="findings")
    assert t.class_names == ["Mass", "Pleural_Thickening", "Thickening"]
    assert t.labels.tolist() == [[0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]]
    assert t.record["labels"]["no_finding_rows"] == 1


def test_numeric_classes_sort_by_value_and_tsv_reads(small):
    table = small(["file", "grade"], [["a.jpg", "10"], ["b.jpg", "2"], ["c.jpg", "2.0"], ["d.jpg", "0"]],
                  name="labels.tsv", delimiter="\t")
    t = read_label_table(table, labels="grade")
    assert t.class_names == ["0", "2", "10"] and t.labels.tolist() == [2, 1, 1, 0]
    assert t.record["format"] == "tsv" and t.record["labels"]["counts"] == {"0": 1, "2": 2, "10": 1}


def test_finding_words_and_case_insensitive_column(small):
    table = small(["file", "Edema", "Mass"], [["a.jpg", "TRUE", "no"], ["b.jpg", "false", "Yes"],
                                              ["c.jpg", "1", "-1"], ["d.jpg", "0.0", ""]])
    t = read_label_table(table, labels="edema, MASS")
    assert t.class_names == ["Edema", "Mass"]
    assert t.labels.tolist() == [[1, 0], [0, 1], [1, -1], [0, 0]]


def test_split_column_and_blank_groups(small):
    table = small(["file", "dx", "patient", "fold"], [["a.jpg", "x", "p1", "Train"], ["b.jpg", "y", "", "VALID"],
                                                      ["c.jpg", "x", "p1", "validation"], ["d.jpg", "y", "", "test"]])
    t = read_label_table(table, labels="dx", group_column="patient", split_column="fold")
    assert t.splits.tolist() == ["train", "val", "val", "test"]
    assert t.record["splits"] == {"source": "column 'fold'", "counts": {"test": 1, "train": 1, "val": 2}}
    assert t.groups[0] == t.groups[2] == "p1" and t.groups[1] != t.groups[3]
    assert t.record["groups"]["blank_rows"] == 2 and t.record["groups"]["n_groups"] == 3


def test_nih_original_header_with_trailing_comma_reads(tmp_path: Path, small_data_dir: Path):
    src = small_data_dir / "nih_cxr14_small"
    lines = (src / "Data_Entry_2017.csv").read_text().splitlines()[:6]
    (tmp_path / "images").mkdir()
    for line in lines[1:]:
        name = line.split(",")[0]
        shutil.copyfile(src / "images" / name, tmp_path / "images" / name)
    (tmp_path / "Data_Entry_2017.csv").write_text("\n".join([lines[0] + ","] + lines[1:]) + "\n")
    t = read_label_table(tmp_path / "Data_Entry_2017.csv", labels="Finding Labels", group_column="patient id")
    assert len(t.files) == 5 and t.groups.tolist() == [ln.split(",")[3] for ln in lines[1:]]


def test_the_image_tree_is_walked_once(small, monkeypatch):
    calls = []
    real_walk = os.walk

    def counting_walk(*args, **kwargs):
        calls.append(args[0])
        return real_walk(*args, **kwargs)
    monkeypatch.setattr(table_module.os, "walk", counting_walk)
    table = small(["id", "dx"], [["a", "x"], ["b", "y"], ["c", "x"], ["d", "y"]])
    t = read_label_table(table, labels="dx")
    assert [f.name for f in t.files] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert len(calls) == 1


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_column_lists_the_columns(small):
    table = small(["Image Index", "Finding Labels"], [["a.jpg", "Mass"]])
    message = _error(read_label_table, table, labels="Finding Label")
    assert "'Finding Label'" in message and "'Image Index', 'Finding Labels'" in message
    assert "'Image Index'" in _error(read_label_table, table, path_column="Image", labels="Finding Labels")
    assert "'Finding Labels'" in _error(read_label_table, table)  # no labels named at all


def test_ambiguous_case_insensitive_column_is_missing(small):
    table = small(["file", "Dx", "DX"], [["a.jpg", "x", "y"]])
    assert read_label_table(table, labels="DX").class_names == ["y"]
    assert "no label column 'dx'" in _error(read_label_table, table, labels="dx")


def test_table_without_rows_or_of_another_format(small, tmp_path: Path):
    assert "no rows" in _error(read_label_table, small(["file", "dx"], []), labels="dx")
    (tmp_path / "labels.xlsx").write_bytes(b"PK")
    assert ".csv or .tsv" in _error(read_label_table, tmp_path / "labels.xlsx", labels="dx")
    assert "not found" in _error(read_label_table, tmp_path / "nope.csv", labels="dx")


def test_unmatched_values_are_named_and_counted(small):
    table = small(["file", "dx"], [["a.jpg", "x"], ["b.jpg", "x"], ["e.jpg", "y"], ["f.jpg", "y"], ["g.jpg", "y"],
                                   ["h.jpg", "y"]])
    message = _error(read_label_table, table, path_column="file", labels="dx")
    assert "4 value(s) of column 'file' match no image file" in message
    assert "'e.jpg' (line 4)" in message and "and 1 more" in message


def test_value_matching_several_files_by_stem(small, tmp_path: Path):
    (tmp_path / "sub").mkdir()
    shutil.copyfile(tmp_path / "a.jpg", tmp_path / "sub" / "a.png")
    message = _error(read_label_table, small(["id", "dx"], [["a", "x"], ["b", "y"]]), path_column="id", labels="dx")
    assert "several image files" in message and "'a' (2 files by stem" in message


def test_no_column_names_images(small):
    message = _error(read_label_table, small(["id", "dx"], [["zz", "x"]]), labels="dx")
    assert "no column names image files" in message and "'id', 'dx'" in message


def test_finding_column_mixing_numbers_and_text(small):
    table = small(["file", "Edema", "Mass"], [["a.jpg", "1", "0"], ["b.jpg", "positive", "1"]])
    message = _error(read_label_table, table, labels="Edema,Mass")
    assert "'Edema' mixes numbers and text" in message and "'positive' on line 3" in message
    table = small(["file", "dx"], [["a.jpg", "1"], ["b.jpg", "benign"]], name="classes.csv")
    assert "'dx' mixes numbers and text" in _error(read_label_table, table, labels="dx")


def test_finding_value_outside_one_zero_minus_one(small):
    table = small(["file", "Edema", "Mass"], [["a.jpg", "1", "0"], ["b.jpg", "0", "2"]])
    message = _error(read_label_table, table, labels=["Edema", "Mass"])
    assert "'Mass' holds '2' on line 3" in message
    table = small(["file", "Edema", "Mass"], [["a.jpg", "pos", "0"], ["b.jpg", "neg", "1"]], name="words.csv")
    assert "'Edema' holds 'pos' on line 2" in _error(read_label_table, table, labels=["Edema", "Mass"])


def test_duplicate_rows_that_disagree_name_the_image(small):
    table = small(["file", "dx"], [["a.jpg", "x"], ["b.jpg", "y"], ["a.jpg", "y"]])
    message = _error(read_label_table, table, labels="dx")
    assert "disagree" in message and "'a.jpg' (lines 2 and 4: x vs y)" in message
    agree = small(["file", "dx"], [["a.jpg", "x"], ["b.jpg", "y"], ["a.jpg", "x"]], name="agree.csv")
    t = read_label_table(agree, labels="dx")
    assert t.names == ["a.jpg", "b.jpg"] and t.record["duplicates"]["rows_merged"] == 1


def test_unknown_split_value_lists_the_allowed(small):
    table = small(["file", "dx", "split"], [["a.jpg", "x", "train"], ["b.jpg", "y", "holdout"]])
    message = _error(read_label_table, table, labels="dx", split_column="split")
    assert "'holdout' on line 3" in message and "train, val, valid, validation, test" in message


def test_bad_label_cells_and_groups(small):
    table = small(["file", "dx", "findings"], [["a.jpg", "", "Mass|No Finding"], ["b.jpg", "y", "Mass"]])
    assert "blank on line 2" in _error(read_label_table, table, labels="dx")
    assert "joins 'No Finding' with findings" in _error(read_label_table, table, labels="findings")
    assert "blank on line 2" in _error(read_label_table, table, labels="dx!=y")
    assert read_label_table(table, labels="dx!=").labels.tolist() == [0, 1]
    message = _error(read_label_table, table, labels="dx!=", group_column="PatientID")
    assert "no group column 'PatientID'" in message and "not all DICOM" in message
    assert "stands alone" in _error(read_label_table, table, labels="dx!=y,findings")


def test_extra_fields_beyond_the_header(small):
    table = small(["file", "dx"], [["a.jpg", "x", "surprise"]])
    assert "line 2 has 3 fields, the header 2" in _error(read_label_table, table, labels="dx")


def test_image_root_elsewhere_and_a_value_with_folders(tmp_path: Path, jpegs: list[Path]):
    for split, src in (("train", jpegs[0]), ("test", jpegs[1])):
        (tmp_path / "data" / split).mkdir(parents=True)
        shutil.copyfile(src, tmp_path / "data" / split / "a.jpg")
    table = _write(tmp_path / "tables" / "labels.csv", ["file", "dx"], [["train/a.jpg", "x"], ["test/a", "y"]])
    t = read_label_table(table, labels="dx", image_root=tmp_path / "data")
    assert t.files == [tmp_path / "data" / "train" / "a.jpg", tmp_path / "data" / "test" / "a.jpg"]
    assert t.record["path_column"]["resolved"] == {"table_folder": 0, "folder_above": 0, "absolute": 0, "name": 1,
                                                   "stem": 1}
    bare = _write(tmp_path / "tables" / "bare.csv", ["file", "dx"], [["a.jpg", "x"]])
    assert "'a.jpg' (2 files by name" in _error(read_label_table, bare, path_column="file", labels="dx",
                                                image_root=tmp_path / "data")


def test_dicom_files_named_by_uid_without_dcm(tmp_path: Path, small_data_dir: Path):
    import pydicom

    src = small_data_dir / "siim_acr_small"
    rows = _csv_rows(src / "train-rle.csv")[:4]
    (tmp_path / "dicom").mkdir()
    for r in rows:
        shutil.copyfile(src / "dicom-images" / f"{r['ImageId']}.dcm", tmp_path / "dicom" / r["ImageId"])
    table = _write(tmp_path / "labels.csv", ["ImageId", "EncodedPixels"],
                   [[r["ImageId"], r["EncodedPixels"]] for r in rows])
    t = read_label_table(table, labels="EncodedPixels==-1")
    assert [f.name for f in t.files] == [r["ImageId"] for r in rows]
    assert t.record["path_column"]["resolved"]["name"] == len(rows)
    assert t.groups.tolist() == [pydicom.dcmread(f).PatientID for f in t.files]
    assert t.labels.tolist() == [int(r["EncodedPixels"].strip() == "-1") for r in rows]
