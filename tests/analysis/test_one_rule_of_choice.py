"""One rule of choice: Table 1's top row, the report's chosen model and the trial ``tl.search``
prints are the same trial on the same results (tl.core.choice.rank_trials is their only rule)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
from analysis_builders import HEALTHY

from analysis.report_data import build_report_data
from tl.search.ranking import chosen_trial


def _curve(val_acc: list[float], val_loss: list[float]) -> dict:
    n = len(val_acc)
    return {"train_loss": HEALTHY["train_loss"][:n], "train_acc": HEALTHY["train_acc"][:n],
            "val_loss": val_loss, "val_acc": val_acc}


def _results_as_tune_gives_them(exp_path) -> list[SimpleNamespace]:
    """Ray's Result objects as tl.search sees them, rebuilt from the same trial folders."""
    results = []
    for folder in sorted(p for p in exp_path.iterdir() if (p / "params.json").is_file()):
        lines = (folder / "result.json").read_text().splitlines()
        frame = pd.DataFrame([json.loads(line) for line in lines if line.strip()])
        error = RuntimeError("boom") if (folder / "error.txt").is_file() else None
        results.append(SimpleNamespace(metrics_dataframe=None if frame.empty else frame, error=error,
                                       path=str(folder)))
    return results


def test_table1_top_row_chosen_model_and_printed_trial_agree(builder):
    exp = builder("choice")
    # ASHA stopped the highest-val trial: never tested, so it must not be handed out.
    exp.trial("c1c10001", _curve([0.95, 0.99, 0.97], [0.3, 0.1, 0.2]), epochs_run=3, done=True)
    # Two tested trials tie on best val acc; the lower best val loss wins, whatever the trial id.
    exp.trial("c1c10002", _curve([0.90, 0.96], [0.30, 0.20]), test_acc=0.88, planned=2)
    exp.trial("c1c10003", _curve([0.96, 0.95], [0.25, 0.15]), test_acc=0.80, planned=2)
    exp.trial("c1c10004", _curve([0.93, 0.94], [0.20, 0.10]), test_acc=0.95, planned=2)
    exp.trial("c1c10005", error="RuntimeError: boom")
    summary = build_report_data([exp.path], n_resamples=50)
    printed, value = chosen_trial(_results_as_tune_gives_them(exp.path), "val_acc", "max")
    top = summary.table.iloc[0]
    assert top["trial"] == "c1c10003", f"rule: tested first, then best val acc, then val loss; got {top['trial']}"
    assert printed.metrics_dataframe["trial_id"].iloc[-1] == top["trial"], "tl.search prints Table 1's top row"
    assert value == top["best_val_acc"] == 0.96
    assert summary.recommended.recommendation.trials == (top["trial"],), "the recommended model is the same trial"
