"""Finalists over seeds, the pure parts: counts, seeds, configs, per-recipe mean/std, the winner rule
and the seed ensemble, on hand-made tables (no Ray, no training)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tl.core.choice import rank_recipes
from tl.core.errors import TLError
from tl.core.finalists import finalist_configs, finalist_seeds, parse_count, recipe_summary
from tl.core.results import Predictions, mean_predictions


@pytest.mark.parametrize("raw", ["0", "-2", "1.5", "abc", "", True, 0, 2.0])
def test_counts_below_one_or_not_integers_are_refused(raw):
    with pytest.raises(TLError, match=r"--finalists must be an integer >= 1, got"):
        parse_count("--finalists", raw)


def test_counts_parse_from_text_and_ints():
    assert parse_count("--finalist-seeds", " 3 ") == 3 and parse_count("FINALISTS", 2) == 2


def test_finalist_seeds_avoid_every_search_seed_and_are_shared_by_recipes():
    assert finalist_seeds([0, 0, 0], 3) == [1, 2, 3]
    assert finalist_seeds([4, 0, 2], 2) == [5, 6], "a seed list in the space: start after its largest"
    configs = finalist_configs([{"lr": 0.1, "seed": 0, "weights_for_convmodel": "none"}, {"lr": 0.2, "seed": 0}],
                               ["aaa", "bbb"], [5, 6])
    assert [(c["recipe_id"], c["seed"], c["lr"], c["source_trial"]) for c in configs] == \
        [(1, 5, 0.1, "aaa"), (1, 6, 0.1, "aaa"), (2, 5, 0.2, "bbb"), (2, 6, 0.2, "bbb")]
    assert all(c["stage"] == "finalist" and "weights_for_convmodel" not in c for c in configs)


def _runs(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["recipe_id", "seed", "trial", "best_val_acc", "best_val_loss",
                                       "test_acc", "test_auc"])


def test_recipe_mean_std_and_the_best_mean_val_wins_not_the_best_single_seed():
    runs = _runs([(1, 1, "a1", 0.99, 0.10, 0.80, 0.90), (1, 2, "a2", 0.90, 0.20, 0.82, 0.91),  # mean 0.945
                  (2, 1, "b1", 0.96, 0.15, 0.85, 0.93), (2, 2, "b2", 0.95, 0.15, 0.87, 0.95)])  # mean 0.955
    table = recipe_summary(runs, "best_val_acc", "max")
    assert list(table["recipe_id"]) == [2, 1], "recipe 1 has the best single seed, recipe 2 the best mean"
    assert list(table["winner"]) == [True, False]
    win = table.iloc[0]
    assert math.isclose(win["val_mean"], 0.955) and math.isclose(win["val_std"], np.std([0.96, 0.95], ddof=1))
    assert math.isclose(win["test_acc_mean"], 0.86) and math.isclose(win["test_acc_std"], np.std([0.85, 0.87], ddof=1))
    assert win["seeds"] == "1, 2" and win["trials"] == "b1, b2" and win["n_seeds"] == 2


def test_ties_on_mean_val_go_to_lower_mean_val_loss_then_recipe_id():
    runs = _runs([(1, 1, "a", 0.95, 0.30, 0.8, 0.9), (2, 1, "b", 0.95, 0.20, 0.8, 0.9),
                  (3, 1, "c", 0.95, 0.20, 0.8, 0.9)])
    assert list(recipe_summary(runs, "best_val_acc", "max")["recipe_id"]) == [2, 3, 1]
    loss = pd.DataFrame({"recipe_id": [2, 1], "val_mean": [0.3, 0.3]})
    assert list(rank_recipes(loss, "val_mean", "min")["recipe_id"]) == [1, 2], "full tie: lower recipe id"


def test_seeds_that_did_not_finish_do_not_count_and_a_recipe_without_any_cannot_win():
    runs = _runs([(1, 1, "a1", 0.99, 0.1, np.nan, np.nan), (1, 2, "a2", 0.90, 0.2, 0.8, 0.9),
                  (2, 1, "b1", 0.99, 0.1, np.nan, np.nan)])
    table = recipe_summary(runs, "best_val_acc", "max")
    first = table.iloc[0]
    assert first["recipe_id"] == 1 and first["n_seeds"] == 1 and first["val_mean"] == 0.90
    assert math.isnan(first["val_std"]), "one seed has no sample std"
    assert table.iloc[1]["n_seeds"] == 0 and not table.iloc[1]["winner"]


def test_seed_ensemble_averages_probabilities_of_one_test_split():
    labels = np.array([0, 1, 1])
    a = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    mean = mean_predictions([Predictions(a, labels, "f1"), Predictions(b, labels, "f1")])
    assert np.allclose(mean.probs, [[0.8, 0.2], [0.4, 0.6], [0.4, 0.6]]) and (mean.labels == labels).all()
    assert mean.fingerprint == "f1"
    assert (mean.probs.argmax(1) == labels).mean() == 1.0, "the ensemble is right where each seed was right once"
    with pytest.raises(TLError, match="fingerprints differ"):
        mean_predictions([Predictions(a, labels, "f1"), Predictions(b, labels, "f2")])
    with pytest.raises(TLError, match="labels differ"):
        mean_predictions([Predictions(a, labels), Predictions(b, labels[::-1])])
    with pytest.raises(TLError, match="no saved predictions"):
        mean_predictions([])


def test_more_finalists_than_tested_trials_takes_those_there_are_and_says_so():
    from types import SimpleNamespace

    from tl.search.finalist_stage import plan_finalists

    results = [SimpleNamespace(config={"lr": lr, "seed": 0}) for lr in (0.1, 0.2, 0.3)]
    ranked = [("t1", results[0], 0.95, True), ("t2", results[1], 0.97, False), ("t3", results[2], 0.90, True)]
    configs, plan, lines = plan_finalists(results, ranked, k=5, n_seeds=2)
    assert [(c["source_trial"], c["seed"]) for c in configs] == [("t1", 1), ("t1", 2), ("t3", 1), ("t3", 2)], \
        "ASHA-stopped (untested) trials are never finalists"
    assert plan["k"] == 2 and plan["candidates"] == 2 and plan["seeds"] == [1, 2]
    assert lines == ["--finalists 5: only 2 search trial(s) ran all their epochs and were tested; re-training 2"]
    assert plan_finalists(results, ranked, k=1, n_seeds=2)[2] == [], "enough tested trials: nothing to say"
