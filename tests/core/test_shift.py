"""tl.core.shift on constructed data: the val-vs-test classifier reads 0.5 for one population and
near 1 for two, grouping by patient is what keeps it honest, prevalence re-weighting is exact, and
the Task E sentence says what the numbers say, or that there are too few images to tell."""
from __future__ import annotations

import numpy as np
import pytest

from tl.core.metrics import binary_auc
from tl.core.results.files import Predictions
from tl.core.shift import (
    DomainShift, class_counts, domain_classifier, domain_folds, prevalence_weights, reweighted_accuracy,
    shift_diagnosis, weighted_auc,
)

FAST = {"n_resamples": 200}


def _predictions(labels: np.ndarray, right: np.ndarray, n_classes: int = 2) -> Predictions:
    """Probabilities that call ``labels`` where ``right`` and the next class elsewhere (confidence 0.8)."""
    called = np.where(right, labels, (labels + 1) % n_classes)
    probs = np.full((len(labels), n_classes), 0.2 / (n_classes - 1))
    probs[np.arange(len(labels)), called] = 0.8
    return Predictions(probs, labels)


def _split(counts: dict[int, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """labels and correctness: class c has counts[c] = (images, right ones)."""
    labels = np.concatenate([np.full(n, c) for c, (n, _) in counts.items()])
    right = np.concatenate([np.arange(n) < r for n, r in counts.values()])
    return labels, right


def test_one_population_reads_near_half_with_an_interval_covering_it():
    rng = np.random.default_rng(0)
    found = domain_classifier(rng.normal(size=(200, 8)), rng.normal(size=(250, 8)), **FAST)
    assert abs(found.auc - 0.5) < 0.08 and found.low < 0.5 < found.high, found
    assert (found.n_val, found.n_test, found.grouped, found.n_groups) == (200, 250, False, 450)


def test_shifted_features_read_near_one():
    rng = np.random.default_rng(1)
    found = domain_classifier(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1.0, **FAST)
    assert found.auc > 0.95 and found.low > 0.9, found


def test_grouping_by_patient_removes_the_auc_a_classifier_gets_from_recognising_patients():
    """Four images per patient, patients split between val and test, one population: by image the
    classifier sees each held-out patient's other images in training and 'detects' a shift that is not
    there; folds by patient read 0.5."""
    rng = np.random.default_rng(2)
    patient = np.repeat(np.arange(100), 4)
    x = rng.normal(size=(100, 200))[patient] + 0.3 * rng.normal(size=(400, 200))
    by_image = domain_classifier(x[:200], x[200:], **FAST)
    by_patient = domain_classifier(x[:200], x[200:], patient[:200], patient[200:] - 50, **FAST)
    assert by_image.auc > 0.95, by_image
    assert by_patient.grouped and by_patient.n_groups == 100, "test's ids restart at 0: read within their split"
    assert by_patient.low < 0.5 < by_patient.high, by_patient


def test_grouped_folds_never_put_a_patient_in_two_folds():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 60, size=500)
    is_test = (groups >= 25).astype(int)
    fold = domain_folds(is_test, groups, 5)
    assert all(len(set(fold[groups == g])) == 1 for g in np.unique(groups))
    assert sorted(set(fold)) == [0, 1, 2, 3, 4] and all(set(is_test[fold == k]) == {0, 1} for k in range(5))


def test_weighted_auc_is_the_rank_auc_at_unit_weights_and_counts_a_doubled_row_twice():
    rng = np.random.default_rng(4)
    scores, positive = np.round(rng.random(300), 1), rng.random(300) < 0.4  # rounded: many ties
    assert weighted_auc(scores, positive, np.ones(300)) == pytest.approx(binary_auc(scores, positive))
    twice = np.r_[np.arange(300), [0, 5]]
    weights = np.ones(300)
    weights[[0, 5]] = 2
    assert weighted_auc(scores, positive, weights) == pytest.approx(binary_auc(scores[twice], positive[twice]))


def test_prevalence_reweighting_is_exact():
    """Val: 80 PNEUMONIA (72 right), 20 NORMAL (10 right) = 0.82. At test's 50/50 mix val would score
    0.5 * 0.9 + 0.5 * 0.5 = 0.70; the weights are p_test / p_val per class."""
    val_labels, val_right = _split({1: (80, 72), 0: (20, 10)})
    test_labels = np.r_[np.ones(50, int), np.zeros(50, int)]
    weights = prevalence_weights(val_labels, test_labels, 2)
    assert set(np.round(weights[val_labels == 1], 6)) == {0.625} and set(np.round(weights[val_labels == 0], 6)) == {2.5}
    assert reweighted_accuracy(val_right, val_labels, test_labels, 2) == pytest.approx(0.70)
    assert np.isnan(reweighted_accuracy(val_right, np.ones(100, int), test_labels, 2)), "val lacks a class test has"


def test_the_sentence_states_prevalence_its_share_of_the_gap_and_the_image_shift():
    val_labels, val_right = _split({1: (80, 72), 0: (20, 10)})  # val acc 0.82
    test_labels, test_right = _split({1: (60, 30), 0: (40, 20)})  # test acc 0.50
    shift = DomainShift(0.91, 0.88, 0.94, 0.95, 100, 100, True, 150, 5)
    found = shift_diagnosis(_predictions(val_labels, val_right), _predictions(test_labels, test_right),
                            ["NORMAL", "PNEUMONIA"], shift, positive=1)
    frame = found.frame.set_index(["quantity", "class"])
    row = frame.loc[("prevalence", "PNEUMONIA")]
    assert (row["test_count"], row["test_n"], row["val_count"], row["val_n"]) == (60, 100, 80, 100)
    at_test = frame.loc[("accuracy at test's prevalence", "")]
    assert at_test["val"] == pytest.approx(0.6 * 0.9 + 0.4 * 0.5) and at_test["value"] == pytest.approx(0.82 - 0.74)
    assert frame.loc[("recall", "PNEUMONIA"), "test"] == pytest.approx(0.5)
    sentence = found.sentence
    for text in ("0.320 below val", "60.0 % PNEUMONIA (60/100) vs 80.0 % (80/100) in val",
                 "would be 0.740", "about 0.080 of the 0.320 gap (25%)", "AUC 0.91 [0.88, 0.94]",
                 "covariate shift", "Recall falls most for PNEUMONIA: 0.90 on val vs 0.50 on test",
                 "mostly the images themselves"):
        assert text in sentence, f"{text!r} not in: {sentence}"
    assert found.too_few == ""


def test_prevalence_alone_is_named_when_it_explains_the_gap_and_alike_images_are_said_so():
    val_labels, val_right = _split({1: (90, 90), 0: (60, 30)})  # 0.80; recall 1.0 / 0.5
    test_labels, test_right = _split({1: (20, 20), 0: (80, 40)})  # 0.60 = what val's recalls give at test's mix
    alike = DomainShift(0.52, 0.45, 0.58, 0.95, 150, 100, False, 250, 5)
    found = shift_diagnosis(_predictions(val_labels, val_right), _predictions(test_labels, test_right),
                            ["NORMAL", "PNEUMONIA"], alike, positive=1)
    assert "prevalence explains about 0.200 of the 0.200 gap (100%)" in found.sentence, found.sentence
    assert "look alike" in found.sentence and "change in class prevalence" in found.sentence, found.sentence


def test_too_few_images_says_the_data_cannot_tell():
    val_labels, val_right = _split({1: (20, 18), 0: (10, 9)})
    test_labels, test_right = _split({1: (60, 30), 0: (40, 20)})
    found = shift_diagnosis(_predictions(val_labels, val_right), _predictions(test_labels, test_right),
                            ["NORMAL", "PNEUMONIA"], None, positive=1)
    assert found.too_few == "val has 30 images (fewer than 50)"
    assert "too few images to tell" in found.sentence and "val has 30 images" in found.sentence, found.sentence
    thin, thin_right = _split({1: (100, 90), 0: (3, 3)})
    assert "3 NORMAL" in shift_diagnosis(_predictions(thin, thin_right), _predictions(test_labels, test_right),
                                         ["NORMAL", "PNEUMONIA"]).too_few


def test_multiclass_names_the_class_whose_prevalence_moved_most():
    val_labels, val_right = _split({0: (50, 45), 1: (50, 45), 2: (50, 45)})
    test_labels, test_right = _split({0: (30, 27), 1: (30, 27), 2: (90, 45)})
    found = shift_diagnosis(_predictions(val_labels, val_right, 3), _predictions(test_labels, test_right, 3),
                            ["a", "b", "c"])
    assert "Test has 60.0 % c (90/150) vs 33.3 % (50/150) in val" in found.sentence, found.sentence
    assert "has not run" in found.sentence


def test_multilabel_prevalence_is_per_finding_over_decided_labels_and_reweighting_is_skipped():
    rng = np.random.default_rng(5)
    labels = (rng.random((120, 3)) < [0.1, 0.3, 0.5]).astype(int)
    labels[:10, 0] = -1  # uncertain: counted nowhere
    counts, n = class_counts(labels, 3)
    assert n.tolist() == [110, 120, 120] and counts[0] == int((labels[10:, 0] == 1).sum())
    found = shift_diagnosis(Predictions(rng.random((120, 3)), labels), Predictions(rng.random((120, 3)), labels),
                            ["x", "y", "z"])
    row = found.frame.set_index("quantity").loc["accuracy at test's prevalence"]
    assert np.isnan(row["val"]) and "multilabel" in row["note"]


def test_a_gap_within_what_the_split_sizes_allow_is_called_chance():
    val_labels, val_right = _split({1: (50, 43), 0: (50, 42)})  # 0.85
    test_labels, test_right = _split({1: (50, 40), 0: (50, 40)})  # 0.80: 0.05 +- 0.105
    found = shift_diagnosis(_predictions(val_labels, val_right), _predictions(test_labels, test_right),
                            ["NORMAL", "PNEUMONIA"], positive=1)
    acc = found.frame.set_index("quantity").loc["accuracy"]
    assert acc["value"] == pytest.approx(0.05) and acc["high"] - acc["value"] == pytest.approx(0.105, abs=5e-4)
    assert "within chance at 100 val and 100 test images" in found.sentence, found.sentence
    assert "may be chance" in found.sentence, found.sentence


def test_a_modest_auc_says_the_images_differ_somewhat_not_that_test_is_another_population():
    val_labels, val_right = _split({1: (80, 72), 0: (20, 10)})
    test_labels, test_right = _split({1: (60, 30), 0: (40, 20)})
    modest = DomainShift(0.63, 0.60, 0.67, 0.95, 100, 100, True, 150, 5)
    sentence = shift_diagnosis(_predictions(val_labels, val_right), _predictions(test_labels, test_right),
                               ["NORMAL", "PNEUMONIA"], modest, positive=1).sentence
    assert "differ somewhat" in sentence and "measurably though not grossly" in sentence, sentence
    assert "another population" not in sentence, sentence
