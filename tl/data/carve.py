"""Carving val and test out of train: stratified by label, and disjoint by group when one is known.

A pure function from labels (and groups) to index arrays, seeded, as scikit-learn's splitters;
the caller decodes. The grouped carve is ``StratifiedGroupKFold``: one fold is the carved split.
"""
from __future__ import annotations

import numpy as np

from tl.core.errors import TLError
from tl.data.locate import relative_name


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


def stratify_key(labels: np.ndarray) -> np.ndarray:
    """One stratum per image: its class; for findings (N, K), its rarest positive finding (K: none), so
    a carve keeps rare findings on both sides."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels
    positive = labels == 1
    rarity = np.argsort(np.argsort(positive.sum(0), kind="stable"), kind="stable")  # 0 = rarest finding
    ranked = np.where(positive, rarity[None, :], labels.shape[1])
    return np.where(positive.any(1), np.argmin(ranked, axis=1), labels.shape[1])


def pool_thin_strata(key: np.ndarray, groups: np.ndarray, folds: int) -> np.ndarray:
    """Findings' strata held by fewer patients than the carve has folds join one pooled stratum: a
    rare finding (NIH's hernia: 9 images) cannot be spread over every fold, and need not stop the carve."""
    key = np.asarray(key).copy()
    pooled = key.max() + 1
    for stratum in np.unique(key):
        if len(set(groups[key == stratum])) < folds:
            key[key == stratum] = pooled
    return key


def carve_splits(listing, seed: int, val_fraction: float, test_fraction: float) -> tuple[dict, dict, dict, dict]:
    """Carve the splits the listing lacks out of train: stratified and seeded, disjoint by group when
    train has groups. Returns (files, labels, groups, carved record) per split."""
    files = {s: list(v) for s, v in listing.files.items()}
    labels = dict(listing.labels)
    groups = dict(listing.groups or {})
    carved_record = {}
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in files:
            continue
        key = stratify_key(labels["train"])
        if "train" in groups and np.ndim(labels["train"]) == 2:
            key = pool_thin_strata(key, groups["train"], max(2, int(round(1 / fraction))))
        if "train" in groups:
            kept, carved = group_split(key, groups["train"], fraction, seed)
            groups[split], groups["train"] = groups["train"][carved], groups["train"][kept]
        else:
            kept, carved = stratified_split(key, fraction, seed)
        files[split] = [files["train"][i] for i in carved]
        labels[split] = labels["train"][carved]
        files["train"] = [files["train"][i] for i in kept]
        labels["train"] = labels["train"][kept]
        carved_record[split] = {"fraction": fraction, "from": "train", "n": len(carved),
                                "by": "label and group" if "train" in groups else "label",
                                "files": [relative_name(p, listing.root) for p in files[split]]}
    return files, labels, groups, carved_record
