"""tl.core.tasks: the task table, task inference and overrides, the metrics per task against
hand-computed values, the loss chosen per task, and bad task input as one error line before Ray."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tl.data import load_dataset
from tl.core.errors import TLError
from tl.core.metrics import average_precision, quadratic_weighted_kappa, split_metrics
from tl.core.tasks import MEDMNIST, TASK_METRICS, check_metric, medmnist_file, medmnist_md5, medmnist_url, resolve_task
from tl.train.trainable import MaskedBCEWithLogits, build_criterion, class_weights

ROOT = Path(__file__).resolve().parents[2]
TWELVE = ("pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
          "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist")


def test_table_has_every_2d_medmnist_set_at_four_sizes():
    assert set(MEDMNIST) == set(TWELVE), sorted(MEDMNIST)
    for flag, info in MEDMNIST.items():
        assert sorted(info.md5) == [28, 64, 128, 224], flag
        assert all(len(m) == 32 and int(m, 16) >= 0 for m in info.md5.values()), flag
        if info.task == "binary":
            assert info.positive in info.labels, f"{flag}: positive {info.positive!r} not a class"
    assert MEDMNIST["chestmnist"].task == "multilabel" and len(MEDMNIST["chestmnist"].labels) == 14
    assert MEDMNIST["retinamnist"].task == "ordinal"
    # values read from MedMNIST v3's medmnist/info.py
    assert medmnist_md5("pneumoniamnist_64") == "8f4eceb4ccffa70c672198ea285246c6"
    assert medmnist_file("pneumoniamnist_64") == ("pneumoniamnist", 64)
    assert medmnist_file("pneumoniamnist") == ("pneumoniamnist", 28) and medmnist_file("pneumoniamnist_32") is None
    assert medmnist_url("chestmnist_224").endswith("/10519652/files/chestmnist_224.npz?download=1")


def test_breastmnist_positive_class_is_malignant_and_sensitivity_follows_it():
    labels = {"train": np.array([0, 1, 1, 0])}
    task = resolve_task(labels, list(MEDMNIST["breastmnist"].labels), "binary", MEDMNIST["breastmnist"].positive)
    assert task.positive == 0 and task.positive_name == "malignant", task
    # class 0 (malignant) rows: 0, 1 (one called malignant); benign rows: 2, 3 (both called benign)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])
    m = split_metrics(probs, np.array([0, 0, 1, 1]), "test", "binary", task.positive)
    assert m["test_sensitivity"] == 0.5 and m["test_specificity"] == 1.0, m
    # p(malignant) 0.9, 0.2 for malignant vs 0.3, 0.1 for benign: 3 of 4 pairs ordered right
    assert m["test_auc"] == 0.75, m

def test_task_inference_and_overrides():
    multi = {"train": np.array([[0, 1, 1], [1, 0, 0]]), "val": np.array([[0, 0, 1], [1, 1, 0]])}
    assert resolve_task(multi, ["a", "b", "c"]).kind == "multilabel"
    assert resolve_task({"train": np.array([0, 1, 1])}, ["n", "p"]).kind == "binary"
    assert resolve_task({"train": np.array([0, 4, 2])}, list("01234")).kind == "multiclass"
    assert resolve_task({"train": np.array([0, 4, 2])}, list("01234"), task="ordinal").kind == "ordinal"
    assert resolve_task({"train": np.array([0, 1])}, ["n", "p"], positive_class="n").positive == 0


@pytest.mark.parametrize("labels, names, kwargs, message", [
    ({"train": np.array([[0, 2], [1, 0]])}, ["a", "b"], {}, "must be 0 or 1"),
    ({"train": np.array([0, 1])}, ["a", "b"], {"task": "regression"}, "TASK must be one of"),
    ({"train": np.array([0, 4])}, list("01234"), {"task": "binary"}, "needs 2 classes"),
    ({"train": np.array([[0, 1], [1, 0]])}, ["a", "b"], {"task": "multiclass"}, "does not fit multi-hot"),
    ({"train": np.array([0, 1])}, ["a", "b"], {"task": "multilabel"}, "needs labels of shape"),
    ({"train": np.array([0, 1])}, ["normal", "pneumonia"], {"positive_class": "sick"}, "not a class name"),
    ({"train": np.array([0, 3])}, list("0123"), {"positive_class": "1"}, "binary tasks only"),
])
def test_bad_task_input_raises_naming_the_cause(labels, names, kwargs, message):
    with pytest.raises(TLError, match=message):
        resolve_task(labels, names, **kwargs)


def test_metric_must_be_one_the_task_reports():
    check_metric("val_qwk", "ordinal")
    check_metric("val_auc", "multilabel")
    with pytest.raises(TLError, match="val_qwk is not reported for a multilabel task"):
        check_metric("val_qwk", "multilabel")
    with pytest.raises(TLError, match="val_sensitivity"):
        check_metric("val_sensitivity", "multiclass")


def test_multilabel_metrics_by_hand():
    # finding a: positives rows 0, 1 score 0.9, 0.4; negatives 0.6, 0.2 -> 3 of 4 pairs: AUC 0.75
    # finding b: positive row 2 (0.7) beats 0.1, 0.3, 0.2           -> AUC 1
    # finding c: no positive in the split                              -> left out of the mean
    probs = np.array([[0.9, 0.1, 0.2], [0.4, 0.3, 0.1], [0.6, 0.7, 0.3], [0.2, 0.2, 0.6]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
    m = split_metrics(probs, labels, "val", "multilabel", names=["a", "b", "pleural thickening"])
    assert math.isclose(m["val_auc"], (0.75 + 1.0) / 2), m
    assert m["val_auc_a"] == 0.75 and m["val_auc_b"] == 1.0 and np.isnan(m["val_auc_pleural_thickening"]), m
    # AP a: ranked 0.9(+) 0.6(-) 0.4(+) 0.2(-): precisions at hits 1, 2/3 -> (1 + 2/3) / 2; AP b = 1
    assert math.isclose(m["val_map"], ((1 + 2 / 3) / 2 + 1) / 2), m
    # at 0.5: row0 [1,0,0] right; row1 [0,0,0] wrong on a; row2 [1,1,0] wrong on a; row3 [0,0,1] wrong on c
    assert math.isclose(m["val_acc"], 9 / 12) and m["val_exact_match"] == 0.25, m
    assert set(k for k in m if "_auc_" not in k) == {f"val_{k}" for k in TASK_METRICS["multilabel"] if k != "loss"}


def test_average_precision_matches_a_hand_value_with_ties():
    # scores 0.8(+) 0.5(+) 0.5(-) 0.1(-): at 0.8 P=1 R=.5; at 0.5 P=2/3 R=1 -> AP = .5*1 + .5*2/3
    assert math.isclose(average_precision(np.array([0.8, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0])), 0.5 + 1 / 3)


def test_ordinal_metrics_by_hand():
    labels = np.array([0, 1, 2, 2])
    pred = np.array([0, 2, 2, 0])
    probs = np.eye(3)[pred]
    m = split_metrics(probs, labels, "val", "ordinal")
    assert m["val_acc"] == 0.5 and m["val_mae"] == (0 + 1 + 0 + 2) / 4, m
    # observed: (0,0) (1,2) (2,2) (2,0); row sums [1,1,2], col sums [2,0,2]; weights (i-j)^2/4
    # sum w*O = 1/4 + 4/4 = 1.25; E = outer([1,1,2], [2,0,2]) / 4, sum w*E = 0.5 + 0.25 + 1 = 1.75
    obs = np.zeros((3, 3)); np.add.at(obs, (labels, pred), 1)
    w = (np.subtract.outer(range(3), range(3)) ** 2) / 4
    expected = 1 - (w * obs).sum() / (w * np.outer(obs.sum(1), obs.sum(0)) / 4).sum()
    assert math.isclose(m["val_qwk"], expected) and math.isclose(expected, 1 - 1.25 / 1.75), (m, expected)
    assert quadratic_weighted_kappa(labels, labels, 3) == 1.0
    assert math.isclose(m["val_balanced_acc"], (1 + 0 + 0.5) / 3), m


def test_loss_is_chosen_by_task_and_balanced_weights_are_inverse_frequency():
    multi = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    bce = build_criterion("multilabel", multi, 2, "balanced")
    assert isinstance(bce, MaskedBCEWithLogits), bce  # binary cross-entropy per finding, uncertain labels masked
    assert torch.allclose(bce.pos_weight, torch.tensor([3.0, 1.0])), bce.pos_weight  # negatives / positives
    for task in ("binary", "multiclass", "ordinal"):
        assert isinstance(build_criterion(task, np.array([0, 1, 1]), 2), nn.CrossEntropyLoss), task
    ce = build_criterion("binary", np.array([0, 1, 1, 1]), 2, "balanced")
    assert torch.allclose(ce.weight, torch.tensor([2.0, 4 / 6])), ce.weight  # N / (C * count)
    assert torch.allclose(class_weights(np.array([0, 0, 1, 1]), 2), torch.ones(2))
    with pytest.raises(TLError, match="class_weight"):
        build_criterion("binary", np.array([0, 1]), 2, "inverse")


def test_chestxray14_loads_as_multilabel_with_its_finding_names(data_dir):
    arrays = load_dataset(str(data_dir / "chestxray14_1000.npz"), 64)
    assert arrays.task == "multilabel" and arrays.labels["train"].shape == (725, 14), arrays.labels["train"].shape
    assert arrays.class_names[0] == "atelectasis" and arrays.class_names[-1] == "hernia", arrays.class_names
    assert arrays.labels["val"][:, -1].sum() == 0  # hernia: no positive in val (README)


def _write_space(tmp: Path, body: str) -> Path:
    path = tmp / "space.py"
    path.write_text((ROOT / "search_spaces" / "smoke.py").read_text() + body)
    return path


def _multilabel_npz(tmp: Path, bad: bool = False) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (20, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (20, 3), dtype=np.uint8)
    if bad:
        arrays["train_labels"][0, 1] = 2
    np.savez(tmp / "multi.npz", **arrays)
    return tmp / "multi.npz"


CLI_CASES = {
    "multilabel labels not 0/1": (lambda t: ["--dataset", str(_multilabel_npz(t, bad=True))], "must be 0 or 1"),
    "unknown TASK": (lambda t: [], "TASK: must be one of", 'TASK = "regression"\n'),
    "binary TASK on 3 findings": (lambda t: ["--dataset", str(_multilabel_npz(t))], "does not fit multi-hot",
                                  'TASK = "binary"\n'),
    "val_qwk on multilabel": (lambda t: ["--dataset", str(_multilabel_npz(t))], "val_qwk is not reported",
                              'METRIC = "val_qwk"\n'),
    "POSITIVE_CLASS not a class name": (lambda t: [], "not a class name", 'POSITIVE_CLASS = "sick"\n'),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_task_input_is_one_error_line_before_ray(case, tmp_path, small_data_dir, capsys, monkeypatch):
    import ray

    from tl.search.cli import main

    make, must, *body = CLI_CASES[case]
    monkeypatch.setattr("tl.search.cli.init_ray", lambda *a, **k: pytest.fail("Ray started on bad input"))
    space = _write_space(tmp_path, body[0] if body else "")
    code = main([str(space), "--data-dir", str(small_data_dir), "--offline", "--storage", str(tmp_path / "r"),
                 "--name", "bad", *make(tmp_path)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, f"{case}: exit {code}, stderr {err[-800:]}"
    assert must in errors[0], f"{case}: {errors[0]!r} does not name {must!r}"
    assert not (tmp_path / "r" / "bad").exists() and not ray.is_initialized(), case


def test_task_space_files_load_and_name_their_task_metrics():
    from tl.search.space import load_space

    chest = load_space(ROOT / "search_spaces" / "chest14.py")
    assert chest.metric == "val_auc" and chest.groups == r"^(\d{8})_" and "class_weight" in chest.params
    retina = load_space(ROOT / "search_spaces" / "retina.py")
    assert retina.task == "ordinal" and retina.metric == "val_qwk"
    check_metric(retina.metric, retina.task)


def test_recommended_model_sensitivity_is_about_the_positive_class():
    from tl.core.finalists import ensemble_figures
    from tl.core.results import Predictions

    # class 0 positive: rows 0-1 malignant (one called malignant), rows 2-3 benign (both right)
    pred = Predictions(np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]]), np.array([0, 0, 1, 1]))
    row = ensemble_figures(pred, n_resamples=50, positive=0)
    assert row["test_sensitivity"] == 0.5 and row["test_specificity"] == 1.0, row
    assert row["test_auc"] == 0.75, row


def test_val_threshold_for_best_balanced_accuracy_by_hand():
    from tl.core.metrics import best_balanced_threshold
    from tl.train.trainable import threshold_metrics

    # positive class 0; p(class 0): positives 0.9, 0.4, 0.35; negatives 0.3, 0.2, 0.1
    # at 0.5 only one positive is called (balanced 2/3); at 0.35 all three, no negative: 1.0
    p0 = np.array([0.9, 0.4, 0.35, 0.3, 0.2, 0.1])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert best_balanced_threshold(p0, labels, positive=0) == 0.35
    probs = np.stack([p0, 1 - p0], 1)
    m = threshold_metrics(probs, labels, probs[[0, 3]], labels[[0, 3]], positive=0)
    assert m["val_threshold"] == 0.35 and m["test_balanced_acc_at_val_threshold"] == 1.0, m
