"""The search's own pick from Ray's Results: each trial's reported rows become a report row
(``tl.core.results.trial_row``) ranked by the one rule of choice (``tl.core.choice``), so the
console, the finalist stage and the report agree on which trial is best."""
from __future__ import annotations

import json
import sys

from tl.core.columns import HEADLINE_TEST_METRICS, is_tested
from tl.core.results import ERROR_FILE
from tl.search.space import SearchSpace


def chosen_trial(results, metric: str, mode: str):
    """Return (the Result the search picks, its best ``metric``), or (None, None).

    The rule is :func:`tl.core.choice.rank_trials` over :func:`tl.core.results.trial_row` rows, as
    the report ranks Table 1; errored trials and trials that never reported ``metric`` are left out.
    """
    ranked = ranked_results(results, metric, mode)
    return (ranked[0][1], ranked[0][2]) if ranked else (None, None)


def ranked_results(results, metric: str, mode: str) -> list[tuple[str, object, float, bool]]:
    """Return (trial id, Result, best ``metric``, tested) per trial, best first by the rule of choice.

    Each Result's reported rows become a ``tl.core.results.trial_row`` (the rows the report's Table 1
    is made of) and are ranked by ``tl.core.choice.rank_trials``. Errored trials and trials that
    never reported ``metric`` are left out; the finalists are the top tested ones.
    """
    import pandas as pd

    from tl.core.choice import rank_trials
    from tl.core.results import rank_column, trial_row

    rows, by_trial = [], {}
    for i, result in enumerate(results):
        frame = result.metrics_dataframe
        if result.error or frame is None or metric not in frame or frame[metric].dropna().empty:
            continue
        trial = str(frame["trial_id"].dropna().iloc[-1]) if "trial_id" in frame else f"{i:08d}"
        curve = frame if "epoch" in frame else frame.assign(epoch=range(1, len(frame) + 1))
        rows.append({"trial": trial, **trial_row(curve, metric, mode, status="COMPLETED")})
        by_trial[trial] = result
    if not rows:
        return []
    column = rank_column(metric)
    ranked = rank_trials(pd.DataFrame(rows), column, mode)
    return [(row["trial"], by_trial[row["trial"]], float(row[column]), is_tested(row)) for _, row in ranked.iterrows()]


def print_outcome(results, ranked: list, space: SearchSpace, where: str) -> int:
    """Print the chosen trial (``ranked``'s first, see :func:`ranked_results`); 1 if there is none."""
    n_err = len(results.errors)
    print(f"\n[tl.search] {len(results)} trials, {n_err} errored. Experiment folder: {where}")
    if not ranked:
        what = "every trial errored" if n_err == len(results) else f"no trial reported {space.metric}"
        print(f"error: {what}; see {ERROR_FILE} in the trial folders", file=sys.stderr)
        return 1
    _, best, best_value, _ = ranked[0]
    shown = {k: best.config[k] for k in ("backbone", "weights", "freeze", "lr", "batch_size", "weight_decay",
                                         "epochs", "image_size") if k in best.config}
    print(f"[tl.search] best trial by {space.metric} (val only): {json.dumps(shown, default=str)}")
    m = best.metrics or {}
    figures = [f"best {space.metric}={best_value:.4f}"]
    figures += [f"{k}={m[k]:.4f}" for k in HEADLINE_TEST_METRICS if k in m]
    print("  " + "  ".join(figures) + ("" if is_tested(m) else "  (stopped early: not tested)"))
    print(f"  trial folder: {best.path}")
    print(f"[tl.search] next: python -m analysis.summarize {where}")
    if "://" not in where:
        print(f"[tl.search] curves per trial: tensorboard --logdir {where}")
    return 0
