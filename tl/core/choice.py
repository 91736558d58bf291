"""The one rule that picks the trial a search hands its user.

``tl.search`` prints it, and ``analysis`` ranks Table 1 and the chosen-model section by it. It is
pure pandas on a per-trial table, so analysis can import it without Ray or the training loop.
"""
from __future__ import annotations

import pandas as pd

from tl.core.columns import tested_mask

TIE_BREAK = "best_val_loss"
RULE = ("trials tested at the end of their epochs come first (ASHA-stopped ones were never "
        "tested); then the best {metric} over all epochs ({mode}); ties go to the lower best val "
        "loss, then to the trial id")


def rule_text(metric: str, mode: str) -> str:
    """Return the rule in one sentence, for the report and the console."""
    return RULE.format(metric=metric, mode=mode)


def rank_trials(table: pd.DataFrame, column: str, mode: str) -> pd.DataFrame:
    """Return ``table`` (one row per trial) sorted best-first by the rule of choice.

    Keys in order: rows with a value in ``column`` first; tested rows (``tl.core.columns.tested_mask``)
    before untested ones, when the table says; ``column`` (``mode`` max or min); the lower
    ``best_val_loss`` (val accuracy ties often: it counts images); the ``trial`` id.

    Args:
        table: needs ``trial`` and ``column``; ``test_acc`` and ``best_val_loss`` are used if present.
        column: the ranking figure, e.g. ``best_val_acc`` (best value over epochs).
        mode: ``max`` or ``min``.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    keyed = table.assign(_no_value=table[column].isna(), _untested=~tested_mask(table))
    keys = ["_no_value", "_untested", column]
    if TIE_BREAK in table.columns and column != TIE_BREAK:
        keys.append(TIE_BREAK)
    keys.append("trial")
    ascending = [True, True, mode == "min"] + [True] * (len(keys) - 3)
    ranked = keyed.sort_values(keys, ascending=ascending, na_position="last", kind="mergesort")
    return ranked.drop(columns=["_no_value", "_untested"]).reset_index(drop=True)


RECIPE_RULE = ("the recipe with the best mean {metric} over its seeds ({mode}); ties go to the lower "
               "mean best val loss, then to the lower recipe id (the better search rank)")


def recipe_rule_text(metric: str, mode: str) -> str:
    """Return the finalists' rule of choice in one clause, for the report and the console."""
    return RECIPE_RULE.format(metric=metric, mode=mode)


def rank_recipes(table: pd.DataFrame, column: str, mode: str) -> pd.DataFrame:
    """Return ``table`` (one row per finalist recipe) sorted best-first: the winner on top.

    Keys in order: rows with a value in ``column`` first; ``column`` (``mode`` max or min, a mean
    over seeds); the lower ``val_loss_mean`` when present; the ``recipe_id``.

    Args:
        table: needs ``recipe_id`` and ``column``; ``val_loss_mean`` is used if present.
        column: the mean val metric over seeds, e.g. ``val_mean``.
        mode: ``max`` or ``min``.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    keyed = table.assign(_no_value=table[column].isna())
    keys = ["_no_value", column] + (["val_loss_mean"] if "val_loss_mean" in table.columns
                                    and column != "val_loss_mean" else []) + ["recipe_id"]
    ascending = [True, mode == "min"] + [True] * (len(keys) - 2)
    ranked = keyed.sort_values(keys, ascending=ascending, na_position="last", kind="mergesort")
    return ranked.drop(columns="_no_value").reset_index(drop=True)
