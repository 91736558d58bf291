"""``load_dataset``: a dataset by name or path, decoded once per (dataset, image size) and cached on
disk, with its task resolved; the one entry point the search, trials, export and audit use.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from filelock import FileLock

from tl.data.arrays import SPLITS, DatasetArrays
from tl.data.imagefolder import load_image_folder
from tl.data.locate import cache_dir, resolve_dataset_path
from tl.data.npz import load_npz_splits


def _fingerprint(path: Path) -> str:
    """Cheap content fingerprint: names, sizes and mtimes of every file under ``path``."""
    h = hashlib.sha256()
    items = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in items:
        st = p.stat()
        h.update(f"{p.relative_to(path.parent)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _groups_tag(groups: str | None) -> str:
    """Cache-key part of a grouping: a grouped carve must not reuse an ungrouped one's entry.

    A ``groups.csv`` is a file under the root, so the folder's fingerprint already covers it.
    """
    return f"-groups{hashlib.sha256(groups.encode()).hexdigest()[:10]}" if groups else ""


def load_dataset(dataset: str, image_size: int, data_dir: str | Path | None = None, *,
                 offline: bool = False, seed: int = 0, skip_bad: bool = False,
                 use_cache: bool = True, groups: str | None = None, task: str | None = None,
                 positive_class: str | None = None) -> DatasetArrays:
    """Load a dataset by name or path, decoded at ``image_size`` (ImageFolder) or native (npz).

    ``.npz`` images keep their stored size (the trainable resizes batches); ImageFolder JPEGs are
    decoded once at ``image_size`` and cached under ``cache_dir()`` keyed by a data fingerprint,
    the seed and the grouping (``groups``: regex over file paths, see :mod:`tl.data.groups`).
    ``task`` and ``positive_class`` (TASK, POSITIVE_CLASS) override the task table; TLError if
    they do not fit the labels.
    """
    arrays = _load_arrays(dataset, image_size, data_dir, offline, seed, skip_bad, use_cache, groups)
    return arrays.apply_task(task, positive_class)


def _load_arrays(dataset, image_size, data_dir, offline, seed, skip_bad, use_cache, groups) -> DatasetArrays:
    path = resolve_dataset_path(dataset, data_dir, offline)
    if path.is_file():
        arrays = load_npz_splits(path, groups)
        arrays.fingerprint = _fingerprint(path)
        return arrays
    key = (f"{path.name}-{_fingerprint(path)}-{image_size}px-seed{seed}{_groups_tag(groups)}"
           f"{'-skipbad' if skip_bad else ''}")
    cache = cache_dir() / "decoded" / f"{key}.npz"
    if use_cache and cache.exists():
        return _read_cache(cache, key)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):
        if use_cache and cache.exists():
            return _read_cache(cache, key)
        arrays = load_image_folder(path, image_size, seed=seed, skip_bad=skip_bad, groups=groups)
        arrays.fingerprint = key
        if use_cache:
            tmp = cache.with_suffix(".part.npz")
            np.savez(tmp, meta=np.array(json.dumps({"name": arrays.name, "class_names": arrays.class_names,
                                                    "split_record": arrays.split_record,
                                                    "names": arrays.names})),
                     **{f"{s}_images": arrays.images[s] for s in SPLITS},
                     **{f"{s}_labels": arrays.labels[s] for s in SPLITS})
            os.replace(tmp, cache)
    return arrays


def _read_cache(path: Path, key: str) -> DatasetArrays:
    with np.load(path) as npz:
        meta = json.loads(str(npz["meta"]))
        return DatasetArrays(meta["name"], {s: npz[f"{s}_images"] for s in SPLITS},
                             {s: npz[f"{s}_labels"] for s in SPLITS}, meta["class_names"],
                             meta["split_record"], key, names=meta.get("names", {}))
