"""tl.core.cv: pooled out-of-fold predictions, their patient-bootstrap SE, and the one-se choice (issue 25)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tl.core.cv import choose, cv_summary, group_resamples, oof_figure, pool_folds
from tl.core.errors import TLError


def _fold(rows, probs_pos, labels, groups=None) -> dict:
    p = np.asarray(probs_pos, dtype=float)
    return {"probs": np.stack([1 - p, p], axis=1), "labels": np.asarray(labels), "rows": np.asarray(rows),
            "groups": None if groups is None else np.asarray(groups)}


def test_pooled_folds_cover_each_image_once_in_row_order_and_seeds_average():
    a = _fold([4, 0, 2], [0.9, 0.2, 0.6], [1, 0, 1])
    b = _fold([1, 3], [0.1, 0.7], [0, 1])
    b2 = _fold([1, 3], [0.3, 0.9], [0, 1])  # fold 1's second seed
    oof = pool_folds([(0, a), (1, b), (1, b2)])
    assert oof.rows.tolist() == [0, 1, 2, 3, 4] and oof.folds == 2
    assert np.allclose(oof.probs[:, 1], [0.2, 0.2, 0.6, 0.8, 0.9]) and oof.labels.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(TLError, match="do not partition"):
        pool_folds([(0, a), (1, _fold([2, 5], [0.5, 0.5], [0, 1]))])


def test_the_patient_bootstrap_is_wider_than_the_image_one_when_a_patient_repeats():
    """Ten images per patient with one label and one prediction each: resampling images pretends to 10x
    the evidence there is; resampling patients does not."""
    rng = np.random.default_rng(1)
    patient_label = rng.integers(0, 2, size=20)
    patient_right = rng.random(20) < 0.7
    labels = np.repeat(patient_label, 10)
    right = np.repeat(patient_right, 10)
    probs = np.where(right == (labels == 1), 0.8, 0.2)
    oof = pool_folds([(0, _fold(np.arange(200), probs, labels, np.repeat([f"p{i}" for i in range(20)], 10)))])
    by_patient = cv_summary({1: oof}, 200, 1, "val_acc", "max", "binary", 1, n_resamples=300)
    by_image = cv_summary({1: oof._replace(groups=None)}, 200, 1, "val_acc", "max", "binary", 1, n_resamples=300)
    assert by_patient["cv_acc"].iloc[0] == pytest.approx(right.mean())
    assert by_patient["cv_acc_se"].iloc[0] > 2 * by_image["cv_acc_se"].iloc[0]
    draws = group_resamples(oof.groups, 200, 5, 0)
    assert all(len(d) == 200 and all(len(set(d[i:i + 10] // 10)) == 1 for i in range(0, 200, 10)) for d in draws)


def _summary(values: dict[int, float], se: float) -> pd.DataFrame:
    return pd.DataFrame([{"recipe_id": r, "cv_acc": v, "cv_acc_se": se, "cv_complete": True} for r, v in values.items()])


def test_one_se_picks_the_cheaper_recipe_in_a_tie_and_best_picks_the_best():
    summary = _summary({1: 0.850, 2: 0.845, 3: 0.700}, se=0.010)
    costs = pd.DataFrame({"recipe_id": [1, 2, 3], "sec_per_epoch": [9.0, 2.0, 0.5], "total_params": [11e6, 4e6, 1e5]})
    assert choose(summary, costs, "val_acc", "max", "best")[0] == 1
    chosen, why = choose(summary, costs, "val_acc", "max", "one-se")
    assert chosen == 2 and "within one SE" in why and "2.00 s/epoch" in why, why  # 3 is cheaper but 0.15 behind
    costs.loc[costs["recipe_id"] == 2, "sec_per_epoch"] = 9.0  # equal time: fewer parameters decide
    assert choose(summary, costs, "val_acc", "max", "one-se")[0] == 2
    costs.loc[costs["recipe_id"] == 2, "total_params"] = 12e6
    assert choose(summary, costs, "val_acc", "max", "one-se")[0] == 1
    # val_loss: lower is better; within one SE above the best
    loss = pd.DataFrame([{"recipe_id": r, "cv_loss": v, "cv_loss_se": 0.02, "cv_complete": True}
                         for r, v in {1: 0.30, 2: 0.31}.items()])
    assert choose(loss, costs.assign(sec_per_epoch=[5.0, 1.0, 1.0]), "val_loss", "min", "one-se")[0] == 2


def test_a_recipe_missing_a_fold_cannot_win():
    full = pool_folds([(0, _fold([0, 1], [0.9, 0.1], [1, 0])), (1, _fold([2, 3], [0.8, 0.3], [1, 0]))])
    part = pool_folds([(0, _fold([0, 1], [0.9, 0.1], [1, 0]))])
    table = cv_summary({1: part, 2: full}, 4, 2, "val_acc", "max", "binary", 1, n_resamples=50)
    assert table.set_index("recipe_id")["cv_complete"].to_dict() == {1: False, 2: True}
    assert choose(table, pd.DataFrame({"recipe_id": [1, 2], "sec_per_epoch": [1.0, 1.0], "total_params": [1, 1]}),
                  "val_acc", "max", "best")[0] == 2


def test_out_of_fold_loss_is_the_log_loss():
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert oof_figure(probs, np.array([0, 1]), "val_loss", "binary", 1) == pytest.approx(-np.log([0.8, 0.6]).mean())


def test_the_same_predictions_are_summarized_once_and_other_ones_afresh(monkeypatch):
    """The recommendation, the finalists' table and the report rank the same stage: its bootstrap runs
    once per process; a change in any prediction, or in the settings, computes anew."""
    import tl.core.cv as cv

    calls = []
    real = cv._cv_summary
    monkeypatch.setattr(cv, "_cv_summary", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(cv, "_SUMMARIES", {})
    oof = pool_folds([(0, _fold([0, 2], [0.9, 0.3], [1, 0])), (1, _fold([1, 3], [0.2, 0.8], [0, 1]))])
    first = cv_summary({1: oof}, 4, 2, "val_acc", "max", "binary", 1, n_resamples=50)
    first.loc[0, "cv_acc"] = -1.0  # a caller's change stays in its copy
    again = cv_summary({1: oof}, 4, 2, "val_acc", "max", "binary", 1, n_resamples=50)
    assert len(calls) == 1 and again["cv_acc"].iloc[0] == 1.0
    changed = oof._replace(probs=oof.probs[:, ::-1].copy())  # every prediction flipped
    assert cv_summary({1: changed}, 4, 2, "val_acc", "max", "binary", 1, n_resamples=50)["cv_acc"].iloc[0] == 0.0
    cv_summary({1: oof}, 4, 2, "val_acc", "max", "binary", 1, n_resamples=60)
    assert len(calls) == 3
