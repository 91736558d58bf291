"""``load_dataset``: a dataset by name or path, decoded once per (files, image size) into the decode
store (``tl.data.store``) and carved, with its task resolved; the one entry point the search,
trials, export and audit use.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tl.core.tasks import Task, resolve_task
from tl.data.arrays import DatasetArrays
from tl.data.imagefolder import list_image_folder
from tl.data.listing import Listing, build_arrays
from tl.data.locate import resolve_dataset_path
from tl.data.npz import load_npz_splits
from tl.data.table_source import TableOptions, is_table, list_label_table


def _fingerprint(path: Path) -> str:
    """Cheap content fingerprint: names, sizes and mtimes of every file under ``path``."""
    h = hashlib.sha256()
    items = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in items:
        st = p.stat()
        h.update(f"{p.relative_to(path.parent)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_dataset(dataset: str, image_size: int, data_dir: str | Path | None = None, *,
                 offline: bool = False, seed: int = 0, skip_bad: bool = False,
                 use_cache: bool = True, groups: str | None = None, task: str | None = None,
                 positive_class: str | None = None, table: dict | None = None) -> DatasetArrays:
    """Load a dataset by name or path, decoded at ``image_size`` (folders, tables) or native (npz).

    ``.npz`` images keep their stored size (the trainable resizes batches); the files of an
    ImageFolder tree or a label table (``.csv``/``.tsv``, read with ``table``'s options, see
    ``tl.data.table_source.TableOptions``) are decoded once at ``image_size`` into the decode store under
    ``cache_dir()/decoded``, keyed by the files' names, sizes and mtimes, never by the seed or the
    grouping (``groups``: regex over file paths, see :mod:`tl.data.groups`): the carve is indices
    applied after decoding, its splits memory-mapped files. ``use_cache`` False: a temporary store,
    read into memory. ``task`` and ``positive_class`` (TASK, POSITIVE_CLASS) override the task
    table; TLError if they do not fit the labels.
    """
    arrays = _load_arrays(dataset, image_size, data_dir, offline, seed, skip_bad, use_cache, groups, table)
    return arrays.apply_task(task, positive_class)


def check_labels(dataset: str, data_dir: str | Path | None = None, *, offline: bool = False,
                 groups: str | None = None, task: str | None = None, positive_class: str | None = None,
                 table: dict | None = None) -> Task:
    """The dataset's task from its labels alone, decoding nothing: an ``.npz`` is read, a folder or
    a label table only listed. What the search checks before it starts Ray, so a table, a task or a
    metric that does not fit stops it in seconds.

    Raises:
        TLError: what ``load_dataset`` would raise for the labels (a bad table, a task they do not fit).
    """
    found = list_source(resolve_dataset_path(dataset, data_dir, offline), groups, table)
    if isinstance(found, DatasetArrays):
        return found.apply_task(task, positive_class).task_info
    return resolve_task(found.labels, found.class_names, task=task, positive_class=positive_class,
                        where=found.name)


_listed: dict | None = None  # within listed_once(): each (path, groups, table)'s Listing


@contextmanager
def listed_once() -> Iterator[None]:
    """Within, a folder or label table is listed once, not once per check and image size: a command's
    label check, fold check, subgroup plan and decode then share one listing (10^5 files take
    seconds to walk). Only for the span of one command: a listing is not revisited once it ends."""
    global _listed
    outer, _listed = _listed, {}
    try:
        yield
    finally:
        _listed = outer


def list_source(path: Path, groups: str | None, table: dict | None) -> Listing | DatasetArrays:
    """What a dataset path holds before decoding: a label table's or an image folder's ``Listing``
    (files, labels, official splits, groups), or an ``.npz``'s arrays (its pixels are the file)."""
    key = (str(Path(path).resolve()), groups, json.dumps(table, sort_keys=True, default=str))
    if _listed is not None and key in _listed:
        return _listed[key]
    if is_table(path):
        found = list_label_table(path, TableOptions.from_mapping(table), groups)
    elif path.is_file():
        return load_npz_splits(path, groups)  # arrays its callers change: read again (an .npz reads fast)
    else:
        found = list_image_folder(path, groups)
    if _listed is not None:
        _listed[key] = found
    return found


def _load_arrays(dataset, image_size, data_dir, offline, seed, skip_bad, use_cache, groups, table) -> DatasetArrays:
    path = resolve_dataset_path(dataset, data_dir, offline)
    found = list_source(path, groups, table)
    if isinstance(found, DatasetArrays):
        found.fingerprint = _fingerprint(path)
        return found
    return build_arrays(found, image_size, seed=seed, skip_bad=skip_bad, use_cache=use_cache)
