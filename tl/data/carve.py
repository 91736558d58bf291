"""Carving val and test out of train: stratified by label, and disjoint by group when one is known.

A pure function from labels (and groups) to index arrays, seeded, as scikit-learn's splitters;
the caller decodes. The grouped carve is ``StratifiedGroupKFold``: one fold is the carved split.
"""
from __future__ import annotations

import warnings

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
        TLError: fewer groups than folds. A stratum with fewer groups than folds is carved, unevenly:
            ``strata_for_folds`` pools such strata first.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, int(round(1 / fraction)))
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise TLError(f"too few groups to carve {fraction:.0%} by group: {n_groups} groups, "
                      f"need at least {n_splits}")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a stratum thinner than the folds (strata_for_folds pools them) is fine
        warnings.simplefilter("ignore", UserWarning)
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


def strata_for_folds(key: np.ndarray, groups: np.ndarray, folds: int,
                     names: dict | None = None) -> tuple[np.ndarray, str]:
    """Strata a grouped carve into ``folds`` folds can keep: each held by at least ``folds`` groups.

    A stratum held by fewer patients than there are folds cannot be spread over every fold (NIH's
    hernia: 9 images; a CheXpert-style table's rare finding), and need not stop the carve: such
    strata join one pooled stratum, and when the pool itself is that thin it joins the largest
    stratum, so those images are carved by group alone. Only fewer groups than folds refuses
    (``group_split``).

    Returns:
        (the strata to carve by, a one-line note of what was pooled; "" when nothing was).
    """
    key = np.asarray(key).copy()
    strata, counts = np.unique(key, return_counts=True)
    thin = [s for s in strata if len(set(groups[key == s])) < folds]
    if not thin:
        return key, ""
    label = (lambda s: str(names.get(int(s), s))) if names else str
    mask = np.isin(key, thin)
    pool = int(key.max()) + 1
    key[mask] = pool
    note = (f"{int(mask.sum()):,} images of {len(thin)} strata held by fewer than {folds} patients "
            f"({', '.join(label(s) for s in thin)}) carved as one pooled stratum")
    if len(set(groups[mask])) < folds and (~mask).any():
        rest, rest_counts = np.unique(key[~mask], return_counts=True)
        largest = rest[np.argmax(rest_counts)]
        key[mask] = largest
        note = note.replace("as one pooled stratum", f"with {label(largest)}, the largest stratum (the pool "
                                                      f"had {len(set(groups[mask]))} patients): not stratified")
    return key, note


def carve_splits(listing, seed: int, val_fraction: float, test_fraction: float) -> tuple[dict, dict, dict, dict]:
    """Carve the splits the listing lacks out of train: stratified and seeded, disjoint by group when
    train has groups. Returns (files, labels, groups, carved record) per split."""
    files = {s: list(v) for s, v in listing.files.items()}
    labels = dict(listing.labels)
    groups = dict(listing.groups or {})
    carved_record = {}
    findings = np.ndim(labels["train"]) == 2  # strata of findings: the rarest positive one, or none (K)
    names = {**dict(enumerate(listing.class_names)), **({len(listing.class_names): "no finding"} if findings else {})}
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in files:
            continue
        key, note = stratify_key(labels["train"]), ""
        if "train" in groups:
            key, note = strata_for_folds(key, groups["train"], max(2, int(round(1 / fraction))), names)
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
        if note:
            carved_record[split]["strata_note"] = note
    return files, labels, groups, carved_record
