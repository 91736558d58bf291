"""Paired comparison families: sides chosen by validation, numbers from saved predictions."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_builders import HEALTHY, LABELS, OVERFIT, predictions_from_correct

from tl.core.errors import TLError
from analysis.comparisons import compare_trials, paired_comparisons
from analysis.recommended import figures_row, figures_with_intervals
from tl.core.recommend import SINGLE_PICK, recommend, recommended_predictions
from tl.core.results import Predictions, load_experiments
from tl.core.results import trial_table


def _correct(n_right: int, *, offset: int = 0) -> np.ndarray:
    correct = np.zeros(LABELS.size, dtype=bool)
    correct[offset:offset + n_right] = True
    return correct


@pytest.fixture
def comparisons(builder):
    exp_dir = builder()
    fine_tune = _correct(180)                     # right on images 0..179
    frozen = _correct(150)                        # right on 0..149: fine-tune alone on 30
    exp_dir.trial("a6a60001", HEALTHY, test_acc=0.9, freeze="none",
                  predictions=predictions_from_correct(fine_tune))
    exp_dir.trial("a6a60002", HEALTHY, test_acc=0.75, freeze="backbone",
                  predictions=predictions_from_correct(frozen))
    # A worse-by-val fine-tune trial with better test accuracy must not be picked.
    exp_dir.trial("a6a60003", OVERFIT, test_acc=1.0, freeze="none",
                  predictions=predictions_from_correct(np.ones(LABELS.size, bool)))
    exp_dir.trial("a6a60004", HEALTHY, test_acc=0.5, backbone="convmodel", weights="none",
                  predictions=predictions_from_correct(_correct(100)))
    exp_dir.trial("a6a60005", HEALTHY, epochs_run=2, weights="IMAGENET1K_V2")  # no predictions
    exp = load_experiments([exp_dir.path])
    frame = paired_comparisons(trial_table(exp), exp.predictions, "best_val_acc", "max",
                               n_resamples=500)
    return frame.set_index(["family", "scope"])


def test_fine_tune_vs_fixed_extractor(comparisons):
    row = comparisons.loc[("fine-tune vs fixed extractor", "backbone=resnet18")]
    assert (row["trial_a"], row["trial_b"]) == ("a6a60001", "a6a60002"), "sides picked by val"
    assert row["diff"] == pytest.approx(30 / 200), "A - B test accuracy"
    assert (row["a_only"], row["b_only"]) == (30, 0), "discordant counts"
    assert row["p_value"] == pytest.approx(2 * 0.5**30), "McNemar exact"
    # 30 of 200 discordant, all one way: SE = sqrt(0.15 * 0.85 / 200) = 0.025.
    assert 0.09 < row["ci_low"] < 0.15 < row["ci_high"] < 0.21, f"CI {row['ci_low']}, {row['ci_high']}"


def test_side_without_predictions_gets_a_note(comparisons):
    row = comparisons.loc[("IMAGENET1K_V1 vs IMAGENET1K_V2", "backbone=resnet18")]
    assert np.isnan(row["diff"]), "no V2 predictions: no number"
    assert "weights=IMAGENET1K_V2" in row["note"], row["note"]


def test_best_backbone_vs_other(comparisons):
    row = comparisons.loc[("best backbone vs other", "all trials")]
    assert (row["a"], row["b"]) == ("resnet18", "convmodel"), dict(row)
    assert row["diff"] == pytest.approx(0.9 - 0.5), "best resnet18 trial vs convmodel"


def test_different_test_labels_are_not_compared():
    probs = np.full((4, 2), 0.5)
    a = Predictions(probs, np.array([0, 1, 0, 1]))
    b = Predictions(probs, np.array([1, 1, 0, 1]))
    assert "not the same test split" in compare_trials(a, b)["note"]


def test_chosen_model_is_picked_on_val_with_intervals_on_test(builder):
    exp_dir = builder()
    exp_dir.trial("a6a60011", HEALTHY, test_acc=0.8, predictions=predictions_from_correct(_correct(160)))
    # Better on test, worse on val (best val acc 0.86 < 0.90): must not be the chosen model.
    exp_dir.trial("a6a60012", OVERFIT, test_acc=1.0, predictions=predictions_from_correct(np.ones(LABELS.size, bool)))
    exp = load_experiments([exp_dir.path])
    rec = recommend(exp)
    assert rec.kind == SINGLE_PICK and rec.trials == ("a6a60011",) and rec.val == pytest.approx(0.90)
    _, test = recommended_predictions(rec)
    row = figures_row(rec, test, figures_with_intervals(exp, test, n_resamples=500)).iloc[0]
    assert row["test_acc"] == pytest.approx(0.8) and row["test_acc_low"] < 0.8 < row["test_acc_high"]
    half = (row["test_acc_high"] - row["test_acc_low"]) / 2
    assert 0.02 < half < 0.08, "about 1.96 * sqrt(0.16 / 200) = 0.055"
    assert row["test_auc_low"] <= row["test_auc"] <= row["test_auc_high"]
    probs, labels = exp.predictions["a6a60011"][:2]
    predicted = probs.argmax(1)
    assert row["test_sensitivity"] == pytest.approx((predicted[labels == 1] == 1).mean())
    assert row["test_specificity"] == pytest.approx((predicted[labels == 0] == 0).mean())


def test_no_tested_trial_means_no_chosen_model(builder):
    exp_dir = builder()
    exp_dir.trial("a6a60021", HEALTHY, epochs_run=3)
    exp = load_experiments([exp_dir.path])
    with pytest.raises(TLError, match="no tested trial"):
        recommend(exp)


def test_same_labels_but_different_test_fingerprints_are_refused():
    """Carved test splits of two seeds: equal label vectors, other images."""
    probs = np.tile([0.2, 0.8], (len(LABELS), 1))
    a, b = Predictions(probs, LABELS, "aaaa1111"), Predictions(probs, LABELS, "bbbb2222")
    refused = compare_trials(a, b, n_resamples=10)
    assert set(refused) == {"note"} and "test fingerprints differ (aaaa1111 vs bbbb2222)" in refused["note"]
    assert compare_trials(a, a._replace(fingerprint="aaaa1111"), n_resamples=10)["n"] == len(LABELS)


def test_experiments_with_other_test_splits_are_noted_and_not_compared(builder):
    """Old predictions carry no fingerprint: the experiment's tl_search.json supplies it."""
    import json

    exps = []
    for name, fingerprint, freeze in (("seed0", "f0f0f0f0", "none"), ("seed1", "f1f1f1f1", "backbone")):
        exp = builder(name)
        meta = json.loads((exp.path / "tl_search.json").read_text())
        meta["dataset"]["test_fingerprint"] = fingerprint
        (exp.path / "tl_search.json").write_text(json.dumps(meta))
        exp.trial(f"d{name[-1]}d{name[-1]}0001", HEALTHY, test_acc=0.85, freeze=freeze)
        exps.append(exp.path)
    loaded = load_experiments(exps)
    assert any("tested on another test split" in n and "f1f1f1f1 vs f0f0f0f0" in n for n in loaded.notes), loaded.notes
    table = trial_table(loaded)
    rows = paired_comparisons(table, loaded.predictions, "best_val_acc", "max", n_resamples=10)
    row = rows[rows["family"] == "fine-tune vs fixed extractor"].iloc[0]
    assert "test fingerprints differ" in row["note"] and np.isnan(row["diff"]), dict(row)
