"""Experiments on two datasets: one answer per dataset, the recipe x dataset table, and no table that
ranks trials of one dataset against trials of the other (issue 30)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from analysis_builders import HEALTHY, OVERFIT

from analysis.summarize import main
from tl.core.across import group_by_dataset

HISTOLOGY = {"name": "kather2016_240", "task": "multiclass", "num_classes": 3,
             "class_names": ["ADIPOSE", "STROMA", "TUMOR"], "split_sizes": {"train": 160, "val": 20, "test": 60},
             "test_fingerprint": "f00dcafe"}


def _set_dataset(exp, record: dict) -> None:
    meta = json.loads((exp.path / "tl_search.json").read_text())
    meta["dataset"] = record
    (exp.path / "tl_search.json").write_text(json.dumps(meta))


def _three_class_predictions(accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=60)
    right = rng.random(60) < accuracy
    predicted = np.where(right, labels, (labels + 1) % 3)
    probs = np.full((60, 3), 0.1)
    probs[np.arange(60), predicted] = 0.8
    return probs, labels


def _two_datasets(builder):
    pneumonia = builder("pneumonia")
    pneumonia.trial("a7a70001", HEALTHY, test_acc=0.89, lr=1e-3)
    pneumonia.trial("a7a70002", OVERFIT, test_acc=0.83, freeze="backbone", lr=3e-3)
    pneumonia.trial("a7a70003", HEALTHY, test_acc=0.80, backbone="convmodel", weights="none", lr=1e-2)
    pneumonia.trial("a7a70005", HEALTHY, epochs_run=3, backbone="densenet121", lr=5e-2)  # stopped: never tested
    histology = builder("histology")
    _set_dataset(histology, HISTOLOGY)
    histology.trial("b0b00001", HEALTHY, test_acc=0.7, predictions=_three_class_predictions(0.7, 1))
    histology.trial("b0b00002", OVERFIT, test_acc=0.6, predictions=_three_class_predictions(0.6, 2),
                    backbone="convmodel", weights="none")
    histology.trial("b0b00003", HEALTHY, test_acc=0.5, predictions=_three_class_predictions(0.5, 3),
                    backbone="efficientnet_b0")
    return pneumonia, histology


def test_two_datasets_get_one_answer_each_and_a_recipe_table(builder, tmp_path: Path, capsys):
    pneumonia, histology = _two_datasets(builder)
    out = tmp_path / "out"
    assert main([str(pneumonia.path), str(histology.path), "--out", str(out)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out

    # Each dataset's own report ranks only its own trials.
    for folder, prefix, other in (("pneumoniamnist", "a7a7", "b0b0"), ("kather2016_240", "b0b0", "a7a7")):
        for name in ("trials.csv", "groups.csv", "comparisons.csv", "diagnostics.csv"):
            frame = pd.read_csv(out / folder / name)
            ids = " ".join(str(v) for v in frame.to_numpy().ravel())
            assert other not in ids, f"{folder}/{name} ranks a trial of the other dataset"
        assert pd.read_csv(out / folder / "trials.csv")["trial"].astype(str).str.startswith(prefix).all()

    table = pd.read_csv(out / "recipes_by_dataset.csv")
    assert {"pneumoniamnist:test_acc", "kather2016_240:test_acc", "pneumoniamnist:rank",
            "kather2016_240:rank"} <= set(table.columns), list(table.columns)
    recipes = {tuple(r) for r in table[["backbone", "weights", "freeze"]].astype(str).to_numpy()}
    # Tested recipes only: densenet121 stopped before its test, so it is in no cell.
    assert recipes == {("resnet18", "IMAGENET1K_V1", "none"), ("resnet18", "IMAGENET1K_V1", "backbone"),
                       ("convmodel", "none", "none"), ("efficientnet_b0", "IMAGENET1K_V1", "none")}
    row = table.set_index(["backbone", "freeze"])
    # A recipe one dataset did not run is missing there, not ranked last, and its mean rank is its one rank.
    assert np.isnan(row.loc[("efficientnet_b0", "none"), "pneumoniamnist:rank"])
    assert row.loc[("efficientnet_b0", "none"), "datasets_ranked"] == 1
    assert row.loc[("efficientnet_b0", "none"), "mean_rank"] == row.loc[("efficientnet_b0", "none"),
                                                                       "kather2016_240:rank"]
    assert row.loc[("convmodel", "none"), "datasets_ranked"] == 2
    for label, metric_column in (("pneumoniamnist", "pneumoniamnist:val_acc"), ("kather2016_240", "kather2016_240:val_acc")):
        ranked = table.dropna(subset=[f"{label}:rank"])
        k = len(ranked)
        assert ranked[f"{label}:rank"].sum() == k * (k + 1) / 2, "ranks 1..k within a dataset, ties averaged"
        for (_, x), (_, y) in ((a, b) for a in ranked.iterrows() for b in ranked.iterrows()):
            if x[metric_column] > y[metric_column]:
                assert x[f"{label}:rank"] < y[f"{label}:rank"], "a better val figure ranks higher"
            if x[metric_column] == y[metric_column]:
                assert x[f"{label}:rank"] == y[f"{label}:rank"], "a tie shares its rank"
        best = ranked.loc[ranked[f"{label}:rank"].idxmin()]
        trials = pd.read_csv(out / label / "trials.csv")
        assert best[f"{label}:trial"] in set(trials["trial"].astype(str))
        assert ((ranked[f"{label}:low"] <= ranked[f"{label}:test_acc"])
                & (ranked[f"{label}:test_acc"] <= ranked[f"{label}:high"])).all()

    html = (out / "report.html").read_text()
    assert html.count("Recommended model: pneumoniamnist") == 1 and html.count("Recommended model: kather2016_240") == 1
    assert ">Recommended model<" not in html, "a single pick across datasets"
    assert "Recipes across datasets" in html
    assert "== pneumoniamnist" in printed and "== kather2016_240" in printed and "recipes across 2 datasets" in printed


def test_one_dataset_keeps_the_single_report(builder, tmp_path: Path, capsys):
    pneumonia, _ = _two_datasets(builder)
    second = builder("pneumonia-again")
    second.trial("c0c00001", HEALTHY, test_acc=0.88)
    out = tmp_path / "out"
    assert main([str(pneumonia.path), str(second.path), "--out", str(out)]) == 0, capsys.readouterr().err
    assert not (out / "recipes_by_dataset.csv").exists()
    trials = set(pd.read_csv(out / "trials.csv")["trial"].astype(str))
    assert {"a7a70001", "c0c00001"} <= trials, "experiments on one dataset still merge"


def test_two_datasets_sharing_a_name_stay_apart(builder):
    a, b = builder("a"), builder("b")
    _set_dataset(a, {**HISTOLOGY, "test_fingerprint": "aaaaaaaa11"})
    _set_dataset(b, {**HISTOLOGY, "test_fingerprint": "bbbbbbbb22"})
    groups = group_by_dataset([a.path, b.path])
    assert sorted(groups) == ["kather2016_240-aaaaaa", "kather2016_240-bbbbbb"]
