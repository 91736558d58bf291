"""A published run reads back as published: the experiment folder committed under docs/results (a real
search of NIH's own label table, with a finalist stage) goes through today's loader, rule of choice
and report, and gives the model and figures its committed report shows. A change to the experiment
folder's format, or to what is recommended, fails here."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.report_data import build_report_data
from tl.core.recommend import FINALIST_ENSEMBLE, recommend
from tl.core.results import load_experiments

RESULT = Path(__file__).resolve().parents[1] / "docs" / "results" / "nih-table-8x10-finalists"


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return pd.read_csv(RESULT / "chosen.csv", dtype={"trials": str})


def test_the_committed_folder_recommends_what_its_report_says(committed):
    exp = load_experiments([RESULT / "experiment"])
    rec = recommend(exp)
    assert rec.kind == FINALIST_ENSEMBLE, rec.kind
    assert ", ".join(rec.trials) == committed["trials"].iloc[0], (rec.trials, committed["trials"].iloc[0])
    finalists = pd.read_csv(RESULT / "finalists.csv")
    winner = finalists[finalists["winner"]].iloc[0]
    assert rec.recipe_id == int(winner["recipe_id"]) and rec.val == pytest.approx(winner["val_mean"], abs=1e-12)


def test_its_figures_are_recomputed_from_the_folder_alone(committed):
    """The report's numbers come from the saved predictions, not from anything the search printed."""
    data = build_report_data([RESULT / "experiment"])
    row = data.recommended.figures.iloc[0]
    for column in ("test_acc", "test_acc_low", "test_acc_high", "test_auc", "test_auc_low", "test_auc_high"):
        assert row[column] == pytest.approx(committed[column].iloc[0], abs=1e-12), column
    trials = pd.read_csv(RESULT / "trials.csv", dtype={"trial": str})
    assert list(data.table["trial"]) == list(trials["trial"]), "Table 1's order"
    audit = data.audits[0].counts
    assert (audit["groups in both"].astype(str) == "0").all(), "carved by patient: no patient in two splits"
