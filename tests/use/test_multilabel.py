"""Multilabel end to end without Ray: a synthetic 3-finding set whose findings are visible squares
(so a working model must learn them; a code check, not a result) through the trainable, the saved
predictions, tl.export / tl.predict and analysis.summarize. Finding "rare" has positives in train
only, like hernia in chestxray14_1000: it must be left out of val/test mean AUC and named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_builders import build_experiment
from tl.data import load_dataset
from tl.train.trainable import run_epochs

FINDINGS = ["top_left", "bottom_right", "rare"]
CORNERS = {0: (2, 2), 1: (20, 20), 2: (2, 20)}


def write_multilabel_npz(path: Path, n: dict | None = None, seed: int = 0) -> Path:
    """32 px noise; finding k present = a bright 8 px square at its corner. "rare" only in train."""
    n = n or {"train": 240, "val": 60, "test": 60}
    rng = np.random.default_rng(seed)
    arrays = {"class_names": np.array(FINDINGS)}
    for split, count in n.items():
        images = rng.integers(20, 90, (count, 32, 32)).astype(np.uint8)
        labels = (rng.random((count, 3)) < [0.4, 0.3, 0.1 if split == "train" else 0.0]).astype(np.uint8)
        for i, k in zip(*np.nonzero(labels)):
            r, c = CORNERS[k]
            images[i, r:r + 8, c:c + 8] = 230
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("multilabel")
    data = write_multilabel_npz(root / "findings.npz")
    exp = root / "exp"
    last = build_experiment(exp, data, [{"lr": 3e-3, "epochs": 3, "metric": "val_auc", "class_weight": "balanced"},
                                        {"lr": 1e-4, "epochs": 1, "metric": "val_auc"}])
    meta = json.loads((exp / "tl_search.json").read_text())
    (exp / "tl_search.json").write_text(json.dumps({**meta, "metric": "val_auc"}))
    return {"exp": exp, "data": data, "last": last, "root": root}


def test_trainable_reports_multilabel_metrics_and_saves_sigmoid_probabilities(experiment):
    last = experiment["last"]["00000000"]
    for key in ("val_auc", "val_map", "val_acc", "val_exact_match", "val_auc_top_left", "test_auc", "test_map"):
        assert key in last, f"missing {key}: {sorted(last)}"
    assert np.isnan(last["test_auc_rare"]), "a finding with no positive in test has no AUC"
    assert last["test_auc"] > 0.8, f"squares are easy; mean AUC {last['test_auc']:.3f} (code check)"
    saved = np.load(next(experiment["exp"].glob("00000000_*")) / "test_predictions.npz")
    assert saved["probs"].shape == (60, 3) and saved["labels"].shape == (60, 3), saved["probs"].shape
    assert ((saved["probs"] >= 0) & (saved["probs"] <= 1)).all()
    assert not np.allclose(saved["probs"].sum(1), 1), "sigmoid per finding, not a softmax over findings"


def test_feature_cache_trains_a_multilabel_head(experiment):
    arrays = load_dataset(str(experiment["data"]), 32)
    cfg = {"backbone": "convmodel", "weights": "none", "freeze": "backbone", "feature_cache": True,
           "epochs": 1, "batch_size": 32, "image_size": 32, "metric": "val_auc"}
    metrics = [m for m, _ in run_epochs(cfg, arrays, None, device=torch.device("cpu"))]
    assert "test_auc" in metrics[-1] and "val_map" in metrics[-1], sorted(metrics[-1])


def test_export_and_predict_a_multilabel_bundle(experiment, tmp_path):
    from tl.use.bundle import load_bundle
    from tl.use.export import export
    from tl.use.predict import predict_rows

    from tl.use.export import main as export_main

    assert export_main([str(experiment["exp"]), "--out", str(tmp_path / "cli"), "--gradcam", "0"]) == 0
    meta = export(experiment["exp"], tmp_path / "bundle", gradcam=1)
    assert meta["task"] == "multilabel" and meta["thresholds"] == [0.5] * 3, meta
    assert meta["temperature"] == 1.0 and "skipped" in meta["provenance"]["calibration"]["calibration_note"]
    bundle = load_bundle(tmp_path / "bundle", device="cpu")
    saved = np.load(next(experiment["exp"].glob("00000000_*")) / "test_predictions.npz")
    arrays = load_dataset(str(experiment["data"]), 32)
    assert np.abs(bundle.predict(arrays.images["test"]) - saved["probs"]).max() < 1e-5
    rows = predict_rows(bundle, [f"{experiment['data']}:test"], progress=False)
    first = saved["probs"][0]
    assert rows[0]["label_at_threshold"] == ";".join(f for f, p in zip(FINDINGS, first) if p >= 0.5), rows[0]
    assert set(rows[0]) >= {"p_top_left", "p_bottom_right", "p_rare"}, rows[0].keys()


def test_summary_reports_mean_auc_per_finding_and_no_mcnemar(experiment, tmp_path):
    from analysis.summarize import write_outputs
    from analysis.report_data import build_report_data

    summary = build_report_data([experiment["exp"]], n_resamples=200)
    rec = summary.recommended
    chosen = rec.figures.iloc[0]
    assert rec.recommendation.trials == ("00000000",), chosen
    assert abs(chosen["test_auc"] - experiment["last"]["00000000"]["test_auc"]) < 1e-9, "one AUC, two places"
    assert 0 < chosen["acc_no_finding"] < 1 and chosen["test_acc"] >= chosen["acc_no_finding"] - 0.2
    rare = rec.findings.set_index("finding").loc["rare"]
    assert np.isnan(rare["auc"]) and "left out" in rare["note"], rec.findings
    assert rec.calibration is None and summary.confusion == {}
    diag = summary.diagnostics.set_index("trial").loc["00000000"]
    best_val_auc = summary.table.set_index("trial").loc["00000000", "best_val_auc"]
    assert np.isclose(diag["val_test_gap"], best_val_auc - chosen["test_auc"]), "diagnostics watch mean AUC"
    assert len(summary.roc) == 1 and len(next(iter(summary.roc.values()))) == 3, "one ROC per finding"
    probs = np.mean([np.load(d / "test_predictions.npz")["probs"] for d in sorted(experiment["exp"].glob("0000000*"))], 0)
    labels = np.load(next(experiment["exp"].glob("00000000_*")) / "test_predictions.npz")["labels"]
    ensemble_acc = summary.top_k["test_acc"].iloc[0]
    assert abs(ensemble_acc - ((probs >= 0.5) == labels.astype(bool)).mean()) < 1e-9, "ensemble ACC: per label"
    written = write_outputs(summary, tmp_path / "out")
    report = (tmp_path / "out" / "summary.md").read_text()
    assert "Per-finding test AUC" in report and "no finding" in report and "rare" in report
    assert any(p.name == "report.html" for p in written)


def test_paired_comparison_of_multilabel_trials_is_a_mean_auc_bootstrap():
    from analysis.comparisons import MCNEMAR_NOT_APPLICABLE, compare_trials
    from tl.core.results import Predictions

    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 5)
    good = Predictions(labels * 0.8 + 0.1, labels)
    coin = Predictions(np.full(labels.shape, 0.5), labels)
    row = compare_trials(good, coin, n_resamples=200)
    assert row["acc_a"] == 1.0 and row["acc_b"] == 0.5 and row["diff"] == 0.5, row
    assert row["note"] == MCNEMAR_NOT_APPLICABLE and np.isnan(row["p_value"]), row


def test_finalist_seed_ensemble_figures_use_the_mean_auc_for_multilabel():
    from tl.core.finalists import ensemble_figures
    from tl.core.results import Predictions

    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 5)
    probs = np.where(labels == 1, 0.7, 0.2)
    probs[0, 0] = 0.1  # one positive of finding 0 now ranks below the negatives' 0.2: AUC 1 - 10/100
    figures = ensemble_figures(Predictions(probs, labels), n_resamples=50)
    assert np.isclose(figures["test_auc"], (0.9 + 1.0) / 2), figures
    assert np.isclose(figures["test_acc"], 1 - 1 / 40), figures  # one of 40 labels wrong at 0.5
    assert "test_sensitivity" not in figures, figures
