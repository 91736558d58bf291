"""Grouping keys (patients) per image, what a split record keeps of them, and their overlap.

Images of one patient look alike; when some land in train and others in val, val measures
recall of the patient, not generalisation. A key comes from the first capture group of a regex
over each file's path relative to the dataset root (``--groups`` / ``GROUPS``; for an ``.npz``,
over its ``{split}_names``), or from a ``groups.csv`` (``file,group``) in the ImageFolder root.
The carve that uses them is ``tl.data.carve.group_split``.
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np

from tl.core.errors import TLError

GROUPS_CSV = "groups.csv"
# Kermany chest_xray file names: personN_bacteria_M / personN_virus_M; IM-NNNN-MMMM; NORMAL2-IM-NNNN-MMMM.
KERMANY_REGEX = r"((?:NORMAL2-)?IM-\d+|person\d+)"


def groups_from_regex(names: list[str], regex: str) -> tuple[np.ndarray, int]:
    """Return the first capture group of ``regex`` searched in each name, and how many missed.

    A name the regex does not match becomes a group of its own (it cannot leak into another
    image's group), and is counted so the caller can say so.

    Raises:
        TLError: the regex does not compile, has no capture group, or matches no name.
    """
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise TLError(f"--groups '{regex}' is not a valid regex: {exc}") from None
    if pattern.groups < 1:
        raise TLError(f"--groups '{regex}' has no capture group: wrap the patient id in ( ), "
                      f"e.g. '{KERMANY_REGEX}'; a file name here: {names[0] if names else '(none)'}")
    keys, missed = [], 0
    for name in names:
        match = pattern.search(name)
        if match is None or match.group(1) is None:
            keys.append(f"<unmatched>{name}")
            missed += 1
        else:
            keys.append(match.group(1))
    if names and missed == len(names):
        raise TLError(f"--groups '{regex}' matches no file; a file name here: {names[0]}")
    return np.array(keys, dtype=object), missed


def groups_from_csv(path: Path, names: list[str], known: set[str]) -> np.ndarray:
    """Return the group of each of ``names`` from a ``file,group`` CSV.

    Args:
        path: the CSV; ``file`` is the path relative to the dataset root.
        names: the files that need a group (the pool a split is carved from).
        known: every file of the dataset; a CSV row naming another file is an error.

    Raises:
        TLError: unreadable CSV, missing columns, files without a group or unknown files.
    """
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TLError(f"{path}: unreadable ({exc})") from None
    if not rows or not {"file", "group"} <= set(rows[0]):
        raise TLError(f"{path}: needs a header 'file,group' and one row per image")
    table = {r["file"].strip(): r["group"].strip() for r in rows}
    missing = [n for n in names if n not in table]
    unknown = sorted(set(table) - known)
    if missing or unknown:
        raise TLError(f"{path}: {len(missing)} of {len(names)} files have no group"
                      f"{f' (e.g. {missing[0]})' if missing else ''} and {len(unknown)} rows name "
                      f"unknown files{f' (e.g. {unknown[0]})' if unknown else ''}")
    return np.array([table[n] for n in names], dtype=object)


def groups_record(groups: dict[str, np.ndarray], source: str, unmatched: int = 0) -> dict:
    """Return what ``tl_search.json`` keeps of a grouping: per split its groups and counts."""
    out: dict = {"source": source, "unmatched_files": unmatched, "splits": {}}
    for split, keys in groups.items():
        counts = Counter(keys.tolist())
        out["splits"][split] = {"n_groups": len(counts), "n_images": int(len(keys)),
                                "max_images_per_group": max(counts.values()) if counts else 0,
                                "groups": sorted(counts)}
    return out


def group_overlap(record: dict | None) -> dict[str, int] | None:
    """Return, per pair of grouped splits, how many groups occur in both (None: no grouping)."""
    if not record:
        return None
    splits = record["splits"]
    names = list(splits)
    return {f"{a}|{b}": len(set(splits[a]["groups"]) & set(splits[b]["groups"]))
            for i, a in enumerate(names) for b in names[i + 1:]}
