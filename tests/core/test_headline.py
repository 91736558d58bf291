"""Which test figures lead, by task (issue 29 item 4): multilabel leads with the mean AUC and reads
label accuracy against predicting "no finding" everywhere; binary names its class balance; ordinal
leads with QWK and MAE in grades."""
from __future__ import annotations

import numpy as np

from tl.core.finalists import ensemble_figures
from tl.core.headline import headline_parts, no_finding_accuracy
from tl.core.metrics import quadratic_weighted_kappa
from tl.core.results.files import Predictions


def test_multilabel_leads_with_mean_auc_and_reads_accuracy_against_no_finding():
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 3)) < [0.1, 0.3, 0.0]).astype(np.int8)  # the third finding: no positive
    labels[:5, 1] = -1  # uncertain: left out of every figure
    probs = rng.random((60, 3)) * 0.4
    test = Predictions(probs, labels)
    decided = labels != -1
    assert no_finding_accuracy(test) == (labels[decided] == 0).mean()
    figures = ensemble_figures(test, n_resamples=50)
    parts, extra = headline_parts("multilabel", figures, test, class_names=["Hernia", "Effusion", "Mass"])
    assert parts[0].startswith("mean AUC ") and parts[1].startswith("label accuracy ")
    assert f"(predicting no finding everywhere: {(labels[decided] == 0).mean():.3f})" in parts[1]
    positives = [int((labels[:, 0] == 1).sum()), int((labels[decided[:, 1], 1] == 1).sum())]
    assert extra[0].startswith("per finding, test AUC (positives): Hernia ")
    assert f"({positives[0]})" in extra[0] and f"({positives[1]})" in extra[0] and "Mass n/a (0)" in extra[0]


def test_binary_names_its_class_balance_beside_accuracy():
    labels = np.array([0] * 30 + [1] * 10)
    probs = np.tile([0.9, 0.1], (40, 1))
    figures = ensemble_figures(Predictions(probs, labels), n_resamples=50, positive=1)
    parts, _ = headline_parts("binary", figures, Predictions(probs, labels), class_names=["benign", "malignant"])
    assert parts[0].startswith("acc 0.750 ") and "(positive class 'malignant' 10 of 40, 25%)" in parts[0], parts
    assert [p.split()[0] for p in parts] == ["acc", "auc", "sensitivity", "specificity"]


def test_ordinal_leads_with_qwk_and_mae_in_grades():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=80)
    predicted = np.clip(labels + rng.integers(-1, 2, size=80), 0, 4)
    probs = np.full((80, 5), 0.05)
    probs[np.arange(80), predicted] = 0.8
    figures = ensemble_figures(Predictions(probs, labels), n_resamples=50, task="ordinal")
    assert np.isclose(figures["test_qwk"], quadratic_weighted_kappa(predicted, labels, 5))
    assert np.isclose(figures["test_mae"], np.abs(predicted - labels).mean())
    assert figures["test_qwk_low"] <= figures["test_qwk"] <= figures["test_qwk_high"]
    parts, _ = headline_parts("ordinal", figures)
    assert [p.split()[0] for p in parts] == ["qwk", "mae", "acc", "auc"] and parts[1].endswith("grades")
    assert "test_qwk" not in ensemble_figures(Predictions(probs, labels), n_resamples=10), "only when ordinal"
