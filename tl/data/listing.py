"""A dataset before decoding (``Listing``: image files, labels, official splits, groups), and the one
path from it to ``DatasetArrays``: carve the missing splits (``tl.data.carve``), decode every file once
(``tl.data.store``), record it all.

A folder tree (``tl.data.imagefolder``) and a label table (``tl.data.table_source``) both end as a
``Listing``, so carving, decoding, skipping unreadable files and the split record are written once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tl.data.arrays import SPLITS, DatasetArrays
from tl.data.carve import carve_splits
from tl.data.locate import cache_dir, relative_name
from tl.data.store import StoredSplits, store_splits
from tl.data.groups import groups_record


@dataclass
class Listing:
    """Image files and their labels per official split (``train`` always; ``val``/``test`` if shipped)."""

    name: str
    root: Path  # file names are recorded relative to it
    files: dict[str, list[Path]]
    labels: dict[str, np.ndarray]  # (N,) class indices, or (N, K) findings: 1, 0, -1 (uncertain)
    class_names: list[str]
    groups: dict[str, np.ndarray] | None = None  # patient (group) key per file, per split it covers
    group_source: str = ""
    unmatched: int = 0  # files that matched no group and stand alone
    record: dict = field(default_factory=dict)  # what the source says about itself (folder root, table)


def decode_splits(files: dict[str, list[Path]], image_size: int, skip_bad: bool, *, root: Path, name: str = "",
                  use_cache: bool = True) -> StoredSplits:
    """Each split's files decoded at ``image_size`` through the decode store (``tl.data.store``): in
    parallel, only what the store lacks, grey at one channel; the splits as read-only memmaps.
    ``use_cache`` False: a temporary store, read into memory."""
    return store_splits(files, root, image_size, skip_bad=skip_bad, name=name,
                        cache=cache_dir() / "decoded" if use_cache else None)


VAL_FRACTION, TEST_FRACTION = 0.1, 0.15  # what is carved out of train when a dataset ships no val or test


def build_arrays(listing: Listing, image_size: int, *, seed: int = 0, skip_bad: bool = False,
                 val_fraction: float = VAL_FRACTION, test_fraction: float = TEST_FRACTION,
                 use_cache: bool = True) -> DatasetArrays:
    """Carve, decode and record: the ``DatasetArrays`` of a listing at ``image_size``.

    The split record holds the seed, what was carved (fractions, files), the groups of each split,
    the files skipped as unreadable and a summary of how files were decoded (formats, DICOM VOI, ...).
    The pixels come from the decode store (``decode_splits``): another seed decodes nothing.
    """
    files, labels, groups, carved = carve_splits(listing, seed, val_fraction, test_fraction)
    stored = decode_splits(files, image_size, skip_bad, root=listing.root, name=listing.name, use_cache=use_cache)
    kept, bad = stored.kept, stored.bad
    record = {**listing.record, "seed": seed, "carved": carved, "decoding": stored.summary}
    for split in SPLITS:
        labels[split] = labels[split][kept[split]]
        files[split] = [files[split][i] for i in kept[split]]
        if split in groups:
            groups[split] = groups[split][kept[split]]
    if groups:
        record["groups"] = groups_record({s: groups[s] for s in SPLITS if s in groups}, listing.group_source,
                                         listing.unmatched)
    skipped = {s: v for s, v in bad.items() if v}
    if skipped:
        record["skipped_bad_images"] = skipped
        print(f"[tl.data] skipped {sum(map(len, skipped.values()))} unreadable images: "
              f"{', '.join(p for v in skipped.values() for p in v[:3])}")
    names = {s: [relative_name(p, listing.root) for p in files[s]] for s in SPLITS}
    return DatasetArrays(listing.name, stored.images, {s: labels[s] for s in SPLITS}, listing.class_names, record,
                         fingerprint=f"{listing.name}-{stored.key}", names=names,
                         groups={s: np.asarray(groups[s]) for s in SPLITS if s in groups},
                         image_fingerprints=stored.fingerprints)
