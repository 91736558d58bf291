"""Carving val and test out of train: stratified by label, and disjoint by group when one is known.

A pure function from labels (and groups) to index arrays, seeded, as scikit-learn's splitters;
the caller decodes. The grouped carve is ``StratifiedGroupKFold``: one fold is the carved split.
"""
from __future__ import annotations

import numpy as np

from tl.core.errors import TLError


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: returns (kept indices, carved-out indices), each sorted."""
    rng = np.random.default_rng(seed)
    carved = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n = int(round(len(idx) * fraction))
        carved.extend(rng.permutation(idx)[:n].tolist())
    carved = np.array(sorted(carved), dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), carved)
    return kept, carved



def group_split(labels: np.ndarray, groups: np.ndarray, fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split stratified by ``labels`` and disjoint by ``groups``.

    ``StratifiedGroupKFold`` with ``round(1 / fraction)`` folds; the first fold is carved out, so
    the carved share is about ``fraction`` (exactly 1/folds of the groups' images, give or take).

    Returns:
        (kept indices, carved indices), each sorted.

    Raises:
        TLError: fewer groups than folds, or a class with fewer groups than folds (it could not
            appear on both sides).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, int(round(1 / fraction)))
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise TLError(f"too few groups to carve {fraction:.0%} by group: {n_groups} groups, "
                      f"need at least {n_splits}")
    for cls in np.unique(labels):
        k = len(set(groups[labels == cls]))
        if k < n_splits:
            raise TLError(f"too few groups to stratify a {fraction:.0%} carve: class {cls} has "
                          f"{k} groups, need at least {n_splits}")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    kept, carved = next(folds.split(np.zeros(len(labels)), labels, groups))
    return np.sort(kept), np.sort(carved)


