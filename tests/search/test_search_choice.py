"""The trial ``tl.search`` prints is chosen by the rule ``analysis.summarize`` uses."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from tl.search.ranking import chosen_trial


def _result(trial_id: str, val_acc: list[float], val_loss: list[float], tested: bool = True, error=None):
    frame = pd.DataFrame({"trial_id": trial_id, "val_acc": val_acc, "val_loss": val_loss})
    if tested:
        frame["test_acc"] = [None] * (len(frame) - 1) + [0.5]
    return SimpleNamespace(metrics_dataframe=frame, error=error, metrics=frame.iloc[-1].dropna().to_dict(),
                           config={}, path=f"/x/{trial_id}")


def test_val_acc_tie_goes_to_the_lower_val_loss_whatever_the_order():
    first = _result("aaaa0001", [0.90, 0.979], [0.20, 0.082])
    later = _result("bbbb0002", [0.979, 0.969], [0.090, 0.062])  # best acc early, lowest loss later
    for order in ([first, later], [later, first]):
        best, value = chosen_trial(order, "val_acc", "max")
        assert best is later and value == 0.979, "tie on val acc must go to the lower best val loss"


def test_a_tested_trial_beats_a_higher_val_trial_asha_stopped():
    stopped = _result("aaaa0001", [0.99], [0.05], tested=False)
    tested = _result("bbbb0002", [0.95, 0.96], [0.2, 0.1])
    assert chosen_trial([stopped, tested], "val_acc", "max")[0] is tested


def test_errored_trials_are_skipped_and_untested_ones_rank_when_nothing_was_tested():
    errored = _result("aaaa0001", [0.99], [0.01], error=RuntimeError("boom"))
    low = _result("bbbb0002", [0.80], [0.5], tested=False)
    high = _result("cccc0003", [0.85], [0.6], tested=False)
    assert chosen_trial([errored, low, high], "val_acc", "max")[0] is high
    assert chosen_trial([errored], "val_acc", "max") == (None, None)


def test_min_mode_and_full_ties_fall_back_to_trial_id():
    a = _result("bbbb0002", [0.3, 0.2], [0.3, 0.2])
    b = _result("aaaa0001", [0.2], [0.2])
    best, value = chosen_trial([a, b], "val_loss", "min")
    assert best is b and value == 0.2
