"""K folds over train + val for cross-validation: index sets over the decoded splits, never test.

The finalist stage with ``--cv K`` validates each recipe on every labelled non-test image once, out
of fold. The folds pool train and val (an official val joins the pool too: the console says so),
are stratified by label (findings: the rarest positive one, as the carve does) and disjoint by
patient whenever a grouping is known (scikit-learn's ``StratifiedGroupKFold``, else
``StratifiedKFold``), seeded. Strata thinner than the folds are pooled the carve's way
(``tl.data.carve.strata_for_folds``); only fewer groups (or images) than folds refuses.

A fold is a view of the decoded arrays by index: nothing is decoded again. Every fold trial
recomputes the same assignment from the same labels, groups, K and seed (a pure function), so the
driver checks it before Ray starts and the trials need no file from it.
"""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np

from tl.core.errors import TLError
from tl.data.arrays import ChunkRows, DatasetArrays
from tl.data.carve import carve_splits, stratify_key, strata_for_folds
from tl.data.dataset import list_source
from tl.data.listing import TEST_FRACTION, VAL_FRACTION
from tl.data.locate import resolve_dataset_path

POOLED = ("train", "val")  # what the folds partition; test is never in a fold


def pooled(arrays: DatasetArrays) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels, groups or None) of train then val, in that order: the rows the folds index."""
    labels = np.concatenate([np.asarray(arrays.labels[s]) for s in POOLED])
    if all(s in arrays.groups for s in POOLED):
        groups = np.concatenate([np.asarray(arrays.groups[s]).astype(str) for s in POOLED])
    else:
        groups = None
    return labels, groups


def check_k(k) -> int:
    """``k`` as the fold count (an integer >= 2), else TLError naming ``--cv``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise TLError(f"--cv must be an integer >= 2 (the number of folds), got {k!r}")
    return k


def fold_assignment(labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int,
                    names: dict | None = None) -> tuple[np.ndarray, str]:
    """Return (the fold, 0..k-1, of each pooled image; a one-line note of pooled strata, or "").

    Raises:
        TLError: k < 2; fewer images, or fewer groups, than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    check_k(k)
    labels = np.asarray(labels)
    n = len(labels)
    if n < k:
        raise TLError(f"--cv {k}: train and val hold {n} image(s), fewer than the folds; nothing to fold")
    per_image = groups is None
    keys = np.arange(n).astype(str) if per_image else np.asarray(groups).astype(str)
    n_groups = len(set(keys.tolist()))
    if n_groups < k:
        raise TLError(f"--cv {k}: train and val hold {n_groups} patient group(s), fewer than the folds")
    strata, note = strata_for_folds(stratify_key(labels), keys, k, names)
    if per_image:
        note = note.replace("patients", "images")
    splitter = (StratifiedKFold(n_splits=k, shuffle=True, random_state=seed) if per_image
                else StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed))
    folds = np.full(n, -1, dtype=np.int64)
    with warnings.catch_warnings():  # strata thinner than the folds were pooled above; uneven is fine
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, held) in enumerate(splitter.split(np.zeros(n), strata, None if per_image else keys)):
            folds[held] = i
    return folds, note


def assignment_for(arrays: DatasetArrays, k: int, seed: int) -> tuple[np.ndarray, str]:
    """:func:`fold_assignment` of ``arrays``' pooled train + val."""
    labels, groups = pooled(arrays)
    names = dict(enumerate(arrays.class_names))
    if np.ndim(labels) == 2:
        names[len(arrays.class_names)] = "no finding"
    return fold_assignment(labels, groups, k, seed, names)


def _take(arrays: DatasetArrays, field_of, rows: np.ndarray) -> np.ndarray:
    """Pooled rows of one per-split array (images, labels or groups), gathered split by split, so a
    memory-mapped split is read only where the fold needs it."""
    n_train = len(arrays.labels["train"])
    parts = [np.asarray(field_of("train")[rows[rows < n_train]]),
             np.asarray(field_of("val")[rows[rows >= n_train] - n_train])]
    return np.concatenate(parts)


def _fold_images(arrays: DatasetArrays, rows: np.ndarray):
    """One side of a fold's images. Carved from the decode store, train and val are rows of the same
    chunks, and so is the fold (a view: a fold trial starts without reading the pool into memory);
    otherwise (an ``.npz``'s arrays) the rows are gathered."""
    train, val = arrays.images["train"], arrays.images["val"]
    pool = train.joined(val) if isinstance(train, ChunkRows) and isinstance(val, ChunkRows) else None
    return pool.subset(rows) if pool is not None else _take(arrays, lambda p: arrays.images[p], rows)


def fold_arrays(arrays: DatasetArrays, k: int, fold: int, seed: int) -> DatasetArrays:
    """The fold ``fold`` of ``k`` as a ``DatasetArrays``: train = the other folds, val = this fold
    (both in pooled order), test unchanged. ``split_record["cv"]`` records the fold and each side's
    pooled rows: the trial saves the val ones beside its val (out-of-fold) predictions, and the
    feature cache maps a fold onto the features of the whole pool (``tl.train.feature_cache``).
    ``fingerprint`` stays the source's: what is derived from the pixels (those features) is shared."""
    folds, _ = assignment_for(arrays, k, seed)
    if not 0 <= fold < k:
        raise TLError(f"fold {fold} is not one of 0..{k - 1}")
    rows = {"train": np.flatnonzero(folds != fold), "val": np.flatnonzero(folds == fold)}
    images = {**arrays.images, **{s: _fold_images(arrays, r) for s, r in rows.items()}}
    labels = {**arrays.labels, **{s: _take(arrays, lambda p: np.asarray(arrays.labels[p]), r) for s, r in rows.items()}}
    names = dict(arrays.names)
    if all(s in names for s in POOLED):
        every = [*names["train"], *names["val"]]
        names.update({s: [every[i] for i in r] for s, r in rows.items()})
    groups = dict(arrays.groups)
    if all(s in groups for s in POOLED):
        groups.update({s: _take(arrays, lambda p: np.asarray(arrays.groups[p]).astype(str), r) for s, r in rows.items()})
    record = {**arrays.split_record, "cv": {"k": k, "fold": fold, "seed": seed, "n_pooled": len(folds),
                                            "n_train": len(arrays.labels["train"]), "train_rows": rows["train"],
                                            "val_rows": rows["val"]}}
    copy = replace(arrays, images=images, labels=labels, names=names, groups=groups, split_record=record,
                   image_fingerprints=None)
    copy._fingerprints = {s: f for s, f in arrays._fingerprints.items() if s == "test"}
    return copy


def check_folds(dataset: str, data_dir, k: int, seed: int, *, offline: bool = False, groups: str | None = None,
                table: dict | None = None) -> list[str]:
    """Check, before anything is decoded or Ray starts, that train + val can be cut into ``k`` folds
    (listing and carving only). Returns console lines: what the folds pool, and strata pooled.

    Raises:
        TLError: k < 2; fewer images or patient groups in train + val than folds.
    """
    found = list_source(resolve_dataset_path(dataset, data_dir, offline), groups, table)
    if isinstance(found, DatasetArrays):
        labels, keys = pooled(found)
        official_val, names = True, found.class_names
    else:
        official_val, names = "val" in found.files, found.class_names
        _, carved, carved_groups, _ = carve_splits(found, seed, VAL_FRACTION, TEST_FRACTION)
        labels = np.concatenate([np.asarray(carved[s]) for s in POOLED])
        keys = (np.concatenate([np.asarray(carved_groups[s]).astype(str) for s in POOLED])
                if all(s in carved_groups for s in POOLED) else None)
    strata_names = {**dict(enumerate(names)), **({len(names): "no finding"} if np.ndim(labels) == 2 else {})}
    _, note = fold_assignment(labels, keys, k, seed, strata_names)
    by = "label and patient" if keys is not None else "label (no patient grouping known)"
    lines = [f"--cv {k}: finalists train on {k} folds of train + val ({len(labels):,} images), stratified by {by}; "
             "test is in no fold"]
    if official_val:
        lines.append(f"--cv {k}: the dataset's official val split joins train in the folds (cross-validation pools them)")
    if note:
        lines.append(f"--cv {k}: {note}")
    return lines
