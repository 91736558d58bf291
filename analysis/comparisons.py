"""The paired comparisons the seed reports made by hand, computed on saved test predictions.

Families: fine-tune (freeze none) vs fixed extractor (freeze backbone) per backbone;
IMAGENET1K_V1 vs IMAGENET1K_V2 per backbone; the best backbone vs each other backbone. Each
side is its best trial by the validation metric among trials with saved test predictions
(picking by test accuracy would bias the comparison).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tl.core.choice import rank_trials
from tl.core.metrics import task_auc
from tl.core.results import Predictions
from tl.core.stats import N_RESAMPLES, SEED, bootstrap_interval, mcnemar_exact, paired_bootstrap_ci

# Why multilabel pairs are compared on mean AUC: McNemar counts images one model gets right and the
# other wrong, and a 14-finding image has no single right or wrong.
MCNEMAR_NOT_APPLICABLE = ("multilabel: paired bootstrap of the mean-AUC difference (A - B); McNemar does not "
                          "apply (an image has 14 findings, not one right-or-wrong answer)")

# (family, column, value of side A, value of side B), compared within each backbone.
WITHIN_BACKBONE = (
    ("fine-tune vs fixed extractor", "freeze", "none", "backbone"),
    ("IMAGENET1K_V1 vs IMAGENET1K_V2", "weights", "IMAGENET1K_V1", "IMAGENET1K_V2"),
)
BEST_BACKBONE_FAMILY = "best backbone vs other"
COLUMNS = ["family", "scope", "a", "b", "trial_a", "trial_b", "n", "acc_a", "acc_b", "diff",
           "ci_low", "ci_high", "a_only", "b_only", "p_value", "note"]


def compare_trials(pred_a: Predictions, pred_b: Predictions, *, n_resamples: int = N_RESAMPLES,
                   seed: int = SEED) -> dict:
    """Return accuracies, A - B difference with bootstrap CI, and McNemar counts and p-value.

    A pair whose test fingerprints (images, labels, file list) or test labels differ is not the
    same test split: only a one-line note is returned. Carved test splits of different seeds
    can have equal label vectors and different images, so labels alone cannot tell.
    """
    if pred_a.fingerprint and pred_b.fingerprint and pred_a.fingerprint != pred_b.fingerprint:
        return {"note": f"test fingerprints differ ({pred_a.fingerprint} vs {pred_b.fingerprint}): "
                        "not the same test images, not compared"}
    if not np.array_equal(pred_a.labels, pred_b.labels):  # also False for different shapes
        return {"note": "test labels differ: not the same test split, not compared"}
    if pred_a.multilabel:  # acc_a/acc_b hold mean AUCs here; the note says so
        def mean_auc(p: Predictions, i: np.ndarray) -> float:
            return task_auc(p.probs[i], p.labels[i])
        ci = bootstrap_interval(lambda i: mean_auc(pred_a, i) - mean_auc(pred_b, i), len(pred_a.labels),
                                n_resamples=n_resamples, seed=seed)
        return {"n": int(len(pred_a.labels)), "acc_a": task_auc(pred_a.probs, pred_a.labels), "acc_b": task_auc(pred_b.probs, pred_b.labels),
                "diff": ci.value, "ci_low": ci.low, "ci_high": ci.high, "a_only": np.nan, "b_only": np.nan,
                "p_value": np.nan, "note": MCNEMAR_NOT_APPLICABLE}
    ca, cb = pred_a.correct, pred_b.correct
    ci = paired_bootstrap_ci(ca, cb, n_resamples=n_resamples, seed=seed)
    test = mcnemar_exact(ca, cb)
    return {"n": int(ca.size), "acc_a": float(ca.mean()), "acc_b": float(cb.mean()),
            "diff": ci.diff, "ci_low": ci.low, "ci_high": ci.high, "a_only": test.a_only,
            "b_only": test.b_only, "p_value": test.p_value, "note": ""}


def _best_with_predictions(rows: pd.DataFrame, predictions: dict[str, Predictions],
                           column: str, mode: str) -> str | None:
    usable = rows[rows["trial"].isin(list(predictions)) & rows[column].notna()]
    return None if usable.empty else str(rank_trials(usable, column, mode)["trial"].iloc[0])


def _pair_row(family: str, scope: str, a: str, b: str, rows_a: pd.DataFrame, rows_b: pd.DataFrame,
              predictions: dict[str, Predictions], column: str, mode: str, **kw) -> dict:
    trial_a = _best_with_predictions(rows_a, predictions, column, mode)
    trial_b = _best_with_predictions(rows_b, predictions, column, mode)
    row = {"family": family, "scope": scope, "a": a, "b": b, "trial_a": trial_a or "",
           "trial_b": trial_b or ""}
    missing = [side for side, t in ((a, trial_a), (b, trial_b)) if t is None]
    if missing:
        row["note"] = f"no {' or '.join(missing)} trial with test predictions"
        return row
    return {**row, **compare_trials(predictions[trial_a], predictions[trial_b], **kw)}


def paired_comparisons(table: pd.DataFrame, predictions: dict[str, Predictions], column: str,
                       mode: str, *, n_resamples: int = N_RESAMPLES,
                       seed: int = SEED) -> pd.DataFrame:
    """Return one row per comparison (columns :data:`COLUMNS`); ``diff`` is acc(A) - acc(B).

    A comparison is listed when both sides have at least one trial; a side without saved test
    predictions leaves the numbers empty and says so in ``note``.

    Args:
        table: Table 1 (needs ``trial``, ``backbone`` and ``column``; ``freeze``/``weights`` for
            their families).
        predictions: test predictions by trial key.
        column: validation column that picks each side's best trial.
        mode: ``max`` or ``min``.
    """
    kw = {"n_resamples": n_resamples, "seed": seed}
    rows = []
    if "backbone" not in table.columns:
        return pd.DataFrame(columns=COLUMNS)
    backbones = sorted(table["backbone"].dropna().astype(str).unique())
    for family, col, value_a, value_b in WITHIN_BACKBONE:
        if col not in table.columns:
            continue
        for backbone in backbones:
            mine = table[table["backbone"] == backbone]
            rows_a, rows_b = mine[mine[col] == value_a], mine[mine[col] == value_b]
            if len(rows_a) and len(rows_b):
                rows.append(_pair_row(family, f"backbone={backbone}", f"{col}={value_a}",
                                      f"{col}={value_b}", rows_a, rows_b, predictions, column,
                                      mode, **kw))
    best = _best_with_predictions(table, predictions, column, mode)
    if best is not None:
        top = str(table.loc[table["trial"] == best, "backbone"].iloc[0])
        for other in (b for b in backbones if b != top):
            rows.append(_pair_row(
                BEST_BACKBONE_FAMILY, "all trials", top, other, table[table["backbone"] == top],
                table[table["backbone"] == other], predictions, column, mode, **kw))
    return pd.DataFrame(rows, columns=COLUMNS)
