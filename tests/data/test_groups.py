"""tl.data.groups: patient-grouped carving (disjoint by group, stratified by label), its bad input and
its place in the decode cache's key."""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tl.data import load_dataset, load_image_folder, load_npz_splits
from tl.core.errors import TLError
from tl.data.carve import group_split, strata_for_folds
from tl.data.folds import assignment_for, check_folds, fold_arrays
from tl.data.groups import KERMANY_REGEX, group_overlap

ROOT = Path(__file__).resolve().parents[2]
N_TRAIN, N_TEST = 30, 3  # per class; the first 30 PNEUMONIA files hold ~11 patients with 2 images


@pytest.fixture
def kermany_subset(tmp_path: Path, small_data_dir: Path) -> Path:
    """A small real chest_xray copy with several images per patient, no val/."""
    root = tmp_path / "kermany"
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for cls in ("NORMAL", "PNEUMONIA"):
            (root / split / cls).mkdir(parents=True)
            for p in sorted((small_data_dir / "chest_xray" / split / cls).iterdir())[:n]:
                shutil.copyfile(p, root / split / cls / p.name)
    return root


def _patients(names: list[str]) -> set[str]:
    pattern = re.compile(KERMANY_REGEX)
    return {pattern.search(n).group(1) for n in names}


def test_kermany_regex_carves_val_sharing_no_patient_with_train(kermany_subset: Path):
    for seed in (0, 1):
        plain = load_image_folder(kermany_subset, 16, seed=seed)
        leaked = _patients(plain.names["train"]) & _patients(plain.names["val"])
        assert leaked, "the image-level carve of this subset should share a patient (else the test proves nothing)"
        grouped = load_image_folder(kermany_subset, 16, seed=seed, groups=KERMANY_REGEX)
        train, val = _patients(grouped.names["train"]), _patients(grouped.names["val"])
        assert not train & val, f"seed {seed}: val shares patients {sorted(train & val)} with train"
        assert sorted(np.unique(grouped.labels["val"])) == [0, 1], "val must hold both classes"
        record = grouped.split_record["groups"]["splits"]
        assert record["val"]["n_groups"] == len(val) and record["train"]["n_groups"] == len(train)
        assert set(record["val"]["groups"]) == val
        assert group_overlap(grouped.split_record["groups"]) == {"train|val": 0}
        assert grouped.split_record["carved"]["val"]["by"] == "label and group"
        assert "test" not in record, "the official test/ folder is not grouped (ids restart per split)"


def test_normal2_prefix_is_kept_apart_from_plain_im_ids():
    names = ["train/NORMAL/IM-0001-0001.jpeg", "train/NORMAL/NORMAL2-IM-0001-0001.jpeg",
             "train/PNEUMONIA/person12_virus_3.jpeg", "train/NORMAL/IM-0429-0001-0002.jpeg"]
    keys = [re.search(KERMANY_REGEX, n).group(1) for n in names]
    assert keys == ["IM-0001", "NORMAL2-IM-0001", "person12", "IM-0429"], keys


def test_group_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat([0, 1], 100)
    groups = np.array([f"p{i // 4}" for i in range(200)], dtype=object)  # 4 images per patient
    kept, carved = group_split(labels, groups, 0.2, seed=3)
    assert not set(groups[kept]) & set(groups[carved]), "a patient on both sides"
    assert len(carved) == 40 and np.bincount(labels[carved]).tolist() == [20, 20], np.bincount(labels[carved])
    again = group_split(labels, groups, 0.2, seed=3)[1]
    other = group_split(labels, groups, 0.2, seed=4)[1]
    assert np.array_equal(carved, again) and not np.array_equal(carved, other), "seeded"


def test_a_class_thinner_than_the_folds_is_carved_not_refused():
    """Issue 25: only fewer groups than folds refuses; a class held by one patient is carved by group alone."""
    labels = np.array([0] * 20 + [1] * 20)
    groups = np.array(["a"] * 20 + [f"p{i}" for i in range(20)], dtype=object)  # class 0: one patient
    key, note = strata_for_folds(labels, groups, 10, {0: "NORMAL", 1: "PNEUMONIA"})
    assert "NORMAL" in note and "not stratified" in note, note  # the pool of one patient joins class 1
    kept, carved = group_split(key, groups, 0.1, seed=0)
    assert not set(groups[kept]) & set(groups[carved]) and len(kept) + len(carved) == 40
    with pytest.raises(TLError, match="too few groups to carve 10% by group: 5 groups, need at least 10"):
        group_split(labels[:5], np.array([f"p{i}" for i in range(5)], dtype=object), 0.1, seed=0)


def test_thin_strata_pool_and_a_thick_pool_stays_stratified():
    groups = np.array([f"p{i // 2}" for i in range(200)], dtype=object)  # 100 patients, 2 images each
    key = np.zeros(200, dtype=int)
    key[:20], key[20:28], key[28:34] = 1, 2, 3  # 10, 4 and 3 patients: 2 and 3 are thin for 5 folds
    pooled, note = strata_for_folds(key, groups, 5)
    assert set(np.unique(pooled)) == {0, 1, 4} and (pooled[20:34] == 4).all(), np.unique(pooled)
    assert note.startswith("14 images of 2 strata held by fewer than 5 patients (2, 3) carved as one pooled"), note
    same, none = strata_for_folds(key, groups, 3)
    assert none == "" and np.array_equal(same, key), "nothing thin: nothing changes"


FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def chexpert_table(tmp_path: Path, small_data_dir: Path) -> Path:
    """Issue 25's table: CheXpert's layout (the patient in the path), five finding columns with 1, 0, -1
    and blanks, 40 patients of 2 studies each, findings held by one or two of them."""
    sources = sorted((small_data_dir / "nih_cxr14_small" / "images").glob("*.png"))
    findings = FINDINGS
    release = tmp_path / "CheXpert-v1.0-small"
    rows = []
    for i in range(80):  # 40 patients x 2 studies
        patient = i // 2
        rel = f"train/patient{patient:05d}/study{i % 2 + 1}/view1_frontal.png"
        (release / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[i % len(sources)], release / rel)
        values = ["" if (i + k) % 3 else "0.0" for k in range(5)]
        values[4] = "1.0" if patient % 2 else ("-1.0" if patient % 5 == 0 else "0.0")  # common, some uncertain
        values[0] = "1.0" if patient % 4 == 1 else values[0]
        values[2] = "1.0" if patient == 7 else values[2]  # one patient
        values[3] = "1.0" if patient in (3, 11) else values[3]  # two patients
        rows.append([f"CheXpert-v1.0-small/{rel}", "Female", "60", "Frontal", "AP", *values])
    table = release / "train.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *findings], *rows])
    return table


def test_chexpert_layout_with_thin_findings_carves_by_patient(tmp_path: Path, small_data_dir: Path):
    """Grouped, the CheXpert-layout table carves (it used to stop with 'too few groups to stratify a
    15% carve'), disjoint by patient, says what it pooled; and it cuts into 5 patient-disjoint folds."""
    table = chexpert_table(tmp_path, small_data_dir)
    arrays = load_dataset(str(table), 16, groups=r"(patient\d+)", table={"labels": FINDINGS}, use_cache=False)

    assert arrays.task == "multilabel" and sum(len(arrays.labels[s]) for s in ("train", "val", "test")) == 80
    by_split = {s: {re.search(r"patient\d+", n).group(0) for n in arrays.names[s]} for s in ("train", "val", "test")}
    assert not by_split["train"] & by_split["val"] and not by_split["train"] & by_split["test"] \
        and not by_split["val"] & by_split["test"], "a patient in two splits"
    notes = [c.get("strata_note", "") for c in arrays.split_record["carved"].values()]
    assert any("Consolidation" in n and "Edema" in n for n in notes), notes
    assert (arrays.labels["train"] == -1).any(), "uncertain labels are kept for the policy to apply"

    lines = check_folds(str(table), None, 5, 0, groups=r"(patient\d+)", table={"labels": FINDINGS})
    assert "stratified by label and patient" in lines[0] and not any("official val" in line for line in lines)
    folds, _ = assignment_for(arrays, 5, 0)
    patients = np.array([re.search(r"patient\d+", n).group(0) for n in [*arrays.names["train"], *arrays.names["val"]]])
    assert sorted(set(folds)) == [0, 1, 2, 3, 4] and len(folds) == len(patients)
    assert all(len(set(folds[patients == p])) == 1 for p in set(patients)), "a patient in two folds"
    fold = fold_arrays(arrays, 5, 2, 0)
    assert not {re.search(r"patient\d+", n).group(0) for n in fold.names["val"]} & \
        {re.search(r"patient\d+", n).group(0) for n in fold.names["train"]}
    assert fold.names["test"] == arrays.names["test"], "test is never in a fold"


def test_regex_without_capture_group_or_matching_nothing_fails_naming_a_file(kermany_subset: Path):
    with pytest.raises(TLError, match=r"no capture group.*IM-0115-0001\.jpeg") as info:
        load_image_folder(kermany_subset, 16, groups=r"person\d+")
    assert r"person\d+" in str(info.value)
    with pytest.raises(TLError, match=r"matches no file; a file name here: train/NORMAL/IM-0115-0001\.jpeg"):
        load_image_folder(kermany_subset, 16, groups=r"(patient\d+)")


def test_groups_csv_missing_and_unknown_files_are_counted(kermany_subset: Path):
    train = sorted(str(p.relative_to(kermany_subset)) for p in (kermany_subset / "train").rglob("*.jpeg"))
    rows = [f"{f},{re.search(KERMANY_REGEX, f).group(1)}" for f in train[:-2]] + ["train/NORMAL/gone.jpeg,x"]
    (kermany_subset / "groups.csv").write_text("file,group\n" + "\n".join(rows) + "\n")
    with pytest.raises(TLError, match="2 of 60 files have no group .* and 1 rows name unknown files"):
        load_image_folder(kermany_subset, 16)
    rows = rows[:-1] + [f"{f},{re.search(KERMANY_REGEX, f).group(1)}" for f in train[-2:]]
    (kermany_subset / "groups.csv").write_text("file,group\n" + "\n".join(rows) + "\n")
    arrays = load_image_folder(kermany_subset, 16)
    assert arrays.split_record["groups"]["source"] == "groups.csv"
    assert not _patients(arrays.names["train"]) & _patients(arrays.names["val"])


def test_grouped_and_ungrouped_carves_have_their_own_cache_entries(kermany_subset: Path, tl_cache_dir: Path):
    plain = load_dataset(str(kermany_subset), 16, seed=0)
    grouped = load_dataset(str(kermany_subset), 16, seed=0, groups=KERMANY_REGEX)
    assert plain.fingerprint != grouped.fingerprint, "the feature cache keys on this fingerprint"
    # One decode store (the grouping is not part of its key), each carve its own rows of it.
    assert plain.images["val"].chunks == grouped.images["val"].chunks, "one store"
    assert plain.fingerprint.split("-")[-1] != grouped.fingerprint.split("-")[-1], "a carve key each"
    assert not np.array_equal(plain.images["val"].rows, grouped.images["val"].rows), "each carve has its own rows"
    again = load_dataset(str(kermany_subset), 16, seed=0, groups=KERMANY_REGEX)
    assert again.names["val"] == grouped.names["val"] and "groups" in again.split_record
    assert not _patients(again.names["train"]) & _patients(again.names["val"])


def test_npz_names_are_grouped_for_the_record(tmp_path: Path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, ids in (("train", ["00000001_000", "00000001_001", "00000002_000"]),
                       ("val", ["00000003_000"]), ("test", ["00000002_001", "00000004_000"])):
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(ids), 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(len(ids))[:, None] % 2
        arrays[f"{split}_names"] = np.array([f"{i}.png" for i in ids])
    np.savez(tmp_path / "nih.npz", **arrays)
    loaded = load_npz_splits(tmp_path / "nih.npz", groups=r"^(\d{8})_")
    assert group_overlap(loaded.split_record["groups"]) == {"train|val": 0, "train|test": 1, "val|test": 0}


def test_search_cli_bad_regex_is_one_line_exit_2_and_no_folder(kermany_subset: Path, tmp_path: Path):
    space = tmp_path / "space.py"
    space.write_text(f"DATASET = {str(kermany_subset)!r}\nGROUPS = r'IM-\\d+'\n")
    proc = subprocess.run([sys.executable, "-m", "tl.search", str(space), "--storage", str(tmp_path / "res"),
                           "--name", "bad"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --groups 'IM-\\d+' has no capture group"), lines
    assert not (tmp_path / "res" / "bad").exists()


def test_bare_folder_carves_test_and_val_each_patient_disjoint(kermany_subset: Path):
    root = kermany_subset / "train"  # bare CLASS/ folders: test and val are both carved
    arrays = load_image_folder(root, 16, seed=2, groups=KERMANY_REGEX)
    patients = {s: _patients(arrays.names[s]) for s in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not patients[a] & patients[b], f"{a} and {b} share {sorted(patients[a] & patients[b])}"
    assert group_overlap(arrays.split_record["groups"]) == {"train|val": 0, "train|test": 0, "val|test": 0}
    assert sum(len(arrays.labels[s]) for s in ("train", "val", "test")) == 2 * N_TRAIN
