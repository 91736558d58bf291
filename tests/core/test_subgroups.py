"""tl.core.subgroups on constructed predictions: a subgroup the model fails is flagged, a tiny one is
listed and never flagged, each column's subgroups add up to the test split, multilabel scores the mean
AUC with positives = images with any finding, and the subgroups file reads back as written."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tl.core.errors import TLError
from tl.core.results.files import SUBGROUPS_FILE, Predictions
from tl.core.subgroups import (IMAGE_COLUMN, MIN_IMAGES, MIN_POSITIVES, TEST_AUC, read_test_subgroups,
                               recommended_subgroups, subgroup_table, write_test_subgroups)

RESAMPLES = 200  # enough for the intervals asserted on; 2000 (the default) costs ten times as much


def _binary(rng, labels: np.ndarray, skill: float) -> np.ndarray:
    """Probabilities of a model that ranks positives above negatives with ``skill`` (1 right, -1 inverted)."""
    score = np.clip(0.5 + skill * (labels - 0.5) * 0.6 + rng.normal(0, 0.15, len(labels)), 0.01, 0.99)
    return np.stack([1 - score, score], axis=1)


@pytest.fixture(scope="module")
def binary_case():
    """200 test images: site A (120) where the model is good, B (60) where it is near chance, C (20)
    where it is inverted; sex M/F/unknown spread evenly."""
    rng = np.random.default_rng(0)
    sizes = {"A": 120, "B": 60, "C": 20}
    sites = np.repeat(list(sizes), list(sizes.values()))
    labels = np.concatenate([rng.permutation(np.arange(n) % 2) for n in sizes.values()])
    probs = np.concatenate([_binary(rng, labels[sites == s], skill) for s, skill in (("A", 1), ("B", 0.05), ("C", -1))])
    sex = np.array(["M", "F", "unknown", "F"] * 50)
    values = pd.DataFrame({"site": sites, "sex": sex})
    table = subgroup_table(Predictions(probs, labels), values, task="binary", n_resamples=RESAMPLES)
    return table, sizes


def test_each_column_adds_up_to_the_test_split(binary_case):
    table, sizes = binary_case
    for column, rows in table.groupby("column"):
        assert rows["images"].sum() == 200, f"{column}: {rows['images'].tolist()}"
    sex = table[table["column"] == "sex"]
    assert sex["subgroup"].iloc[-1] == "unknown", "unknown is listed last"
    assert dict(zip(table[table["column"] == "site"]["subgroup"], table[table["column"] == "site"]["images"])) == sizes


def test_the_subgroup_the_model_fails_is_flagged(binary_case):
    table, _ = binary_case
    row = table[(table["column"] == "site") & (table["subgroup"] == "B")].iloc[0]
    assert row["images"] >= MIN_IMAGES and row["positives"] >= MIN_POSITIVES
    assert row[f"{TEST_AUC}_high"] < row[f"{TEST_AUC}_overall"], row.to_dict()
    assert row["flagged"] and "test_auc" in row["worse_than_overall"], row.to_dict()
    good = table[(table["column"] == "site") & (table["subgroup"] == "A")].iloc[0]
    assert not good["flagged"] and good["test_auc"] > good["test_auc_overall"], good.to_dict()
    assert not table[table["column"] == "sex"]["flagged"].any(), "sex is spread evenly: nothing to flag"


def test_a_tiny_subgroup_is_listed_not_flagged(binary_case):
    table, _ = binary_case
    row = table[(table["column"] == "site") & (table["subgroup"] == "C")].iloc[0]
    assert row["images"] == 20 and row["test_auc"] == 0.0, "the inverted model ranks every pair wrong"
    assert "test_auc" in row["worse_than_overall"], "its interval lies below the overall figure..."
    assert not row["flagged"] and "listed, not flagged" in row["note"], "...but 20 images are too few to flag"


def test_multilabel_scores_the_mean_auc_and_counts_images_with_any_finding():
    rng = np.random.default_rng(1)
    labels = (rng.random((90, 3)) < 0.3).astype(np.int64)
    labels[0, 1] = -1  # uncertain: counts nowhere
    probs = np.clip(labels * 0.6 + rng.random((90, 3)) * 0.4, 0, 1)
    view = np.array(["AP", "PA", "PA"] * 30)
    table = subgroup_table(Predictions(probs, labels), pd.DataFrame({"view": view}), n_resamples=RESAMPLES)
    assert [c for c in table.columns if c.startswith("test_") and "_" not in c[5:]] == ["test_auc"], table.columns
    for _, row in table.iterrows():
        rows = view == row["subgroup"]
        assert row["positives"] == int((labels[rows] == 1).any(axis=1).sum()), row.to_dict()
    assert table["images"].sum() == 90


def test_rows_that_do_not_match_the_predictions_are_refused():
    pred = Predictions(np.full((4, 2), 0.5), np.array([0, 1, 0, 1]))
    with pytest.raises(TLError, match="not one test split"):
        subgroup_table(pred, pd.DataFrame({"sex": ["M", "F", "M"]}))


def test_the_file_reads_back_and_is_scored_only_for_its_own_test_split(tmp_path):
    import json

    frame = pd.DataFrame({IMAGE_COLUMN: ["a.png", "b.png", "c.png", "d.png"], "Sex": ["M", "F", "", "F"]})
    write_test_subgroups(tmp_path, frame)
    (tmp_path / "tl_search.json").write_text(json.dumps({"subgroups": {"test_fingerprint": "abc", "sources": {}}}))
    read, record = read_test_subgroups(tmp_path)
    assert read[IMAGE_COLUMN].tolist() == frame[IMAGE_COLUMN].tolist() and read["Sex"].tolist() == ["M", "F", "", "F"]
    assert record["test_fingerprint"] == "abc"
    pred = Predictions(np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]]), np.array([0, 1, 0, 1]), "abc")
    found = recommended_subgroups([tmp_path], pred, n_resamples=20)
    assert found.frame["images"].sum() == 4 and not found.notes
    other = recommended_subgroups([tmp_path], pred._replace(fingerprint="xyz"), n_resamples=20)
    assert other.frame.empty and "another test split" in other.notes[0]
    assert recommended_subgroups([tmp_path / "none"], pred) is None, f"no {SUBGROUPS_FILE}: no subgroups"
