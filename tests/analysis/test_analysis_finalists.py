"""The finalist stage in the report: loaded from finalists/, labelled, kept out of Table 1, and
summarized as per-recipe val mean ± std, the winner and its seed ensemble with intervals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from analysis_builders import HEALTHY, LABELS, ExperimentBuilder, predictions_with_accuracy

from tl.core.results import load_experiments
from analysis.summarize import main
from analysis.report_data import build_report_data


def _curve(best_val: float) -> dict:
    return {**HEALTHY, "val_acc": [v - 0.90 + best_val for v in HEALTHY["val_acc"]]}


def _experiment_with_finalists(builder, crashed_seed: bool = False) -> ExperimentBuilder:
    """Two search recipes, each re-trained over seeds 1 and 2. Recipe 2 has the best single seed
    (0.97) but recipe 1 the best mean (0.945 vs 0.935). ``crashed_seed``: recipe 2's seed 3 errored."""
    exp = builder("fin")
    exp.trial("5ea00001", _curve(0.95), test_acc=0.85, lr=1e-3)
    exp.trial("5ea00002", _curve(0.94), test_acc=0.84, lr=3e-3)
    stage = ExperimentBuilder(exp.path, "finalists", meta=False)
    for recipe, source, lr, vals in ((1, "5ea00001", 1e-3, (0.94, 0.95)), (2, "5ea00002", 3e-3, (0.97, 0.90))):
        for seed, val in zip((1, 2), vals):
            probs = predictions_with_accuracy(0.80 + 0.02 * seed + 0.01 * recipe, seed=10 * recipe + seed)
            stage.trial(f"f1a{recipe}000{seed}", _curve(val), test_acc=0.0, predictions=probs, lr=lr, seed=seed,
                        stage="finalist", recipe_id=recipe, source_trial=source)
    if crashed_seed:
        stage.trial("f1a20003", error="RuntimeError: boom", seed=3, stage="finalist", recipe_id=2,
                    source_trial="5ea00002")
    return exp


def test_finalist_trials_are_labelled_and_kept_out_of_table_1(builder):
    exp = _experiment_with_finalists(builder)
    loaded = load_experiments([exp.path])
    assert sorted(loaded.trials["stage"]) == ["finalist"] * 4 + ["search"] * 2
    summary = build_report_data([exp.path], n_resamples=200)
    assert sorted(summary.table["trial"]) == ["5ea00001", "5ea00002"], "Table 1 ranks search trials only"
    assert "recipe_id" not in summary.experiment.frame.columns
    runs = summary.finalists.runs
    assert sorted(zip(runs["recipe_id"], runs["seed"])) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_winner_is_the_best_mean_val_and_its_ensemble_averages_its_seeds(builder):
    exp = _experiment_with_finalists(builder)
    fin = build_report_data([exp.path], n_resamples=200).finalists
    recipes = fin.recipes.set_index("recipe_id")
    assert fin.recipes["recipe_id"].iloc[0] == 1 and fin.recipes["winner"].iloc[0], fin.recipes
    assert np.isclose(recipes.loc[1, "val_mean"], 0.945) and np.isclose(recipes.loc[2, "val_mean"], 0.935)
    assert np.isclose(recipes.loc[2, "val_std"], np.std([0.97, 0.90], ddof=1))
    mine = fin.runs[fin.runs["recipe_id"] == 1]
    assert np.isclose(recipes.loc[1, "test_acc_mean"], mine["test_acc"].mean())
    seeds = [np.load(next((exp.path / "finalists").glob(f"*f1a1000{s}*")) / "test_predictions.npz")["probs"]
             for s in (1, 2)]
    expected = ((seeds[0] + seeds[1]).argmax(1) == LABELS).mean()
    ens = fin.ensemble.iloc[0]
    assert np.isclose(ens["test_acc"], expected) and ens["n_seeds"] == 2
    assert ens["test_acc_low"] <= ens["test_acc"] <= ens["test_acc_high"] < 1
    assert "best mean val_acc" in fin.protocol and "without early stopping" in fin.protocol


def test_seed_ensemble_sensitivity_is_of_the_datasets_positive_class(builder):
    """BreastMNIST's positive class is 0 (malignant): the ensemble's sensitivity must be class 0's recall."""
    exp = _experiment_with_finalists(builder)
    meta = json.loads((exp.path / "tl_search.json").read_text())
    meta.setdefault("dataset", {})["positive_class"] = 0
    (exp.path / "tl_search.json").write_text(json.dumps(meta))
    fin = build_report_data([exp.path], n_resamples=50).finalists
    pred = fin.ensemble_predictions.probs.argmax(1)
    ens = fin.ensemble.iloc[0]
    assert np.isclose(ens["test_sensitivity"], (pred[LABELS == 0] == 0).mean()), ens
    assert np.isclose(ens["test_specificity"], (pred[LABELS == 1] == 1).mean()), ens


def test_report_and_csv_show_the_finalists(builder, tmp_path, capsys):
    exp = _experiment_with_finalists(builder)
    meta = json.loads((exp.path / "tl_search.json").read_text())
    meta["finalists"] = {"k": 2, "candidates": 2, "seeds": [1, 2]}
    (exp.path / "tl_search.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert main([str(exp.path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    winner_line = next(line for line in printed.splitlines() if line.startswith("finalist winner:"))
    assert "recipe 1 " in winner_line
    csv = pd.read_csv(out / "finalists.csv")
    assert list(csv["recipe_id"]) == [1, 2] and list(csv["winner"]) == [True, False]
    assert f"test AUC {csv['test_auc_mean'][0]:.4f} ± {csv['test_auc_std'][0]:.4f} over 2 seeds" in winner_line
    assert len(pd.read_csv(out / "finalist_trials.csv")) == 4 and len(pd.read_csv(out / "finalist_ensemble.csv")) == 1
    html = (out / "report.html").read_text()
    md = (out / "summary.md").read_text()
    for text in (html, md):
        assert "Finalists" in text and "the 2 best of 2 tested search trials" in text
        assert winner_line in text, "the report shows the line the console printed"


def test_a_finalist_seed_that_errored_is_left_out_and_named(builder):
    exp = _experiment_with_finalists(builder, crashed_seed=True)
    fin = build_report_data([exp.path], n_resamples=100).finalists
    recipes = fin.recipes.set_index("recipe_id")
    assert recipes.loc[2, "n_seeds"] == 2 and np.isclose(recipes.loc[2, "val_mean"], 0.935)
    assert "recipe 2: 2 of 3 seeds ran all their epochs" in fin.notes, fin.notes
