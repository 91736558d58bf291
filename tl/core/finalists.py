"""Finalists over seeds: which search trials are re-trained, with which seeds, and how they score.

Pure Python, numpy and pandas (no Ray, no torch), so ``tl.search`` and ``analysis`` share it.
After the search, the top K tested recipes by the rule of choice are re-trained for their full
epochs with S new seeds each; the winner is the recipe with the best mean val metric
(:func:`tl.core.choice.rank_recipes`), and its seeds' test probabilities are averaged into one
ensemble.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tl.core.choice import rank_recipes
from tl.core.errors import TLError

STAGE_KEY, STAGE = "stage", "finalist"  # config keys that mark a finalist trial
RECIPE_KEY, SOURCE_KEY = "recipe_id", "source_trial"
FINALIST_DIR = "finalists"  # the finalist stage's Tuner folder inside the experiment folder
DEFAULT_SEEDS = 3


def parse_count(flag: str, raw) -> int:
    """Return ``raw`` as an integer >= 1, or raise TLError naming ``flag`` and what it got.

    ``bool`` is refused (``True`` is an int to Python, not a count to a user).
    """
    value = raw
    if isinstance(raw, str):
        try:
            value = int(raw.strip())
        except ValueError:
            raise TLError(f"{flag} must be an integer >= 1, got {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TLError(f"{flag} must be an integer >= 1, got {raw!r}")
    return value


def finalist_seeds(search_seeds, n: int) -> list[int]:
    """Return ``n`` seeds none of the search used: the integers after the search's largest.

    Every recipe gets the same seeds, so recipes are compared on equal draws.
    """
    start = max((int(s) for s in search_seeds), default=-1) + 1
    return list(range(start, start + n))


def finalist_configs(configs: list[dict], source_trials: list[str], seeds: list[int]) -> list[dict]:
    """Return one trial config per (recipe, seed), recipe ids 1..K in the order given (search rank).

    Each is the search trial's config with a new ``seed``, marked ``stage="finalist"`` and carrying
    its ``recipe_id`` and ``source_trial``; the optimizer's bookkeeping (``weights_for_*``) is dropped.
    """
    out = []
    for recipe_id, (config, source) in enumerate(zip(configs, source_trials), start=1):
        plain = {k: v for k, v in config.items() if not k.startswith("weights_for_")}
        for seed in seeds:
            out.append({**plain, "seed": int(seed), STAGE_KEY: STAGE, RECIPE_KEY: recipe_id,
                        SOURCE_KEY: str(source)})
    return out


def recipe_summary(runs: pd.DataFrame, val_column: str, mode: str) -> pd.DataFrame:
    """Return one row per recipe, the winner first (:func:`tl.core.choice.rank_recipes`).

    Args:
        runs: one row per finalist trial: ``recipe_id``, ``seed``, ``trial``, ``val_column`` (the
            trial's best val metric over epochs), ``best_val_loss``, ``test_acc``, ``test_auc``.
            Only trials that ran all their epochs (``test_acc`` not NaN) count.
        val_column: the val figure averaged over seeds, e.g. ``best_val_acc``.
        mode: ``max`` or ``min``.

    Returns:
        ``recipe_id``, ``n_seeds``, ``seeds``, ``val_mean``, ``val_std`` (sample std, NaN for one
        seed), ``val_loss_mean``, ``test_acc_mean``/``_std``, ``test_auc_mean``/``_std``,
        ``trials``, and ``winner`` (True on the top row when it has a mean).
    """
    columns = ["recipe_id", "n_seeds", "seeds", "val_mean", "val_std", "val_loss_mean", "test_acc_mean",
               "test_acc_std", "test_auc_mean", "test_auc_std", "trials", "winner"]
    rows = []
    for recipe_id, group in runs.groupby("recipe_id", sort=True):
        done = group.dropna(subset=["test_acc"]).sort_values("seed")
        rows.append({
            "recipe_id": int(recipe_id), "n_seeds": len(done),
            "seeds": ", ".join(str(int(s)) for s in done["seed"]),
            "val_mean": done[val_column].mean(), "val_std": done[val_column].std(ddof=1),
            "val_loss_mean": done["best_val_loss"].mean(),
            "test_acc_mean": done["test_acc"].mean(), "test_acc_std": done["test_acc"].std(ddof=1),
            "test_auc_mean": done["test_auc"].mean(), "test_auc_std": done["test_auc"].std(ddof=1),
            "trials": ", ".join(map(str, done["trial"]))})
    if not rows:
        return pd.DataFrame(columns=columns)
    ranked = rank_recipes(pd.DataFrame(rows), "val_mean", mode)
    ranked["winner"] = [i == 0 and pd.notna(v) for i, v in enumerate(ranked["val_mean"])]
    return ranked[columns]


def seed_ensemble(probs: list[np.ndarray], labels: list[np.ndarray],
                  fingerprints: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (mean of the seeds' test probabilities, the shared labels).

    Raises:
        ValueError: no seeds, or the seeds were not tested on one split (test fingerprints,
            labels or shapes differ); averaging them would mix images.
    """
    if not probs:
        raise ValueError("no finalist seed saved test predictions")
    known = {f for f in fingerprints if f}
    if len(known) > 1:
        raise ValueError(f"the seeds' test fingerprints differ ({', '.join(sorted(known))}): "
                         "not one test split, no ensemble")
    if any(p.shape != probs[0].shape for p in probs) or any(not np.array_equal(y, labels[0]) for y in labels):
        raise ValueError("the seeds' test labels differ: not one test split, no ensemble")
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axis=0), labels[0]
