"""The split audit a search recorded: counts from ``tl_search.json`` (``split_audit``) and the
duplicate pairs' thumbnails from ``split_audit.npz``, both written by ``tl.search`` before Ray
started (``tl.audit`` computes them). Reading only; the report draws them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from tl.core.results.files import AUDIT_FILE, SEARCH_FILE, dataset_record

TRAIN_COPIES = "train_copies_"  # + split: in split_audit.npz, the indices of its images with a copy in train
COLUMNS = ["experiment", "splits", "exact duplicate pairs", "near duplicate pairs",
           "images with exact duplicate", "images with near duplicate", "groups in both"]


class SplitAudit(NamedTuple):
    """The audit of one experiment's splits."""

    experiment: str
    counts: pd.DataFrame  # one row per pair of splits (COLUMNS)
    method: str  # e.g. "dHash 256-bit, near = Hamming distance <= 8 bits, took 0.9 s"
    warning: str | None
    grouped: bool
    grouping: str | None  # how images were grouped and how many groups each split holds
    pairs: dict[str, np.ndarray]  # thumb_a, thumb_b, pair, distance, exact (+ name_a, name_b)


def _shared_groups(record: dict, pair: str) -> str:
    """Text, not a number: "unknown" (no grouping) and "not grouped" (an official split) are not 0."""
    overlap = record.get("group_overlap")
    if overlap is None:
        return "unknown"
    return str(overlap[pair]) if pair in overlap else "not grouped"


def _counts(name: str, record: dict) -> pd.DataFrame:
    rows = [{"experiment": name, "splits": pair.replace("|", " / "),
             "exact duplicate pairs": record["exact_duplicates"].get(pair, 0),
             "near duplicate pairs": record.get("near_duplicates", {}).get(pair, 0),
             "images with exact duplicate": record.get("images_with_exact_duplicate", {}).get(pair, np.nan),
             "images with near duplicate": record.get("images_with_near_duplicate", {}).get(pair, np.nan),
             "groups in both": _shared_groups(record, pair)}
            for pair in record["exact_duplicates"]]
    return pd.DataFrame(rows, columns=COLUMNS)


def _grouping(meta: dict) -> str | None:
    dataset = dataset_record(meta)
    split = dataset.get("split") if isinstance(dataset.get("split"), dict) else {}
    groups = split.get("groups")
    if not isinstance(groups, dict) or not isinstance(groups.get("splits"), dict):
        return None
    per_split = ", ".join(f"{s} {g.get('n_groups', '?'):,} groups / {g.get('n_images', '?'):,} images"
                          for s, g in groups["splits"].items())
    unmatched = groups.get("unmatched_files") or 0
    return (f"grouped by {groups.get('source', '?')}: {per_split}"
            + (f"; {unmatched} files matched no group and stand alone" if unmatched else ""))


def _pairs(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError):
        return {}


def read_split_audits(paths: Sequence[Path]) -> list[SplitAudit]:
    """Return the audit of each experiment that recorded one (searches before it did not)."""
    audits = []
    for path in paths:
        try:
            meta = json.loads((Path(path) / SEARCH_FILE).read_text())
        except (OSError, ValueError):
            continue
        record = meta.get("split_audit") if isinstance(meta, dict) else None
        if not isinstance(record, dict) or "exact_duplicates" not in record:
            continue
        method = (f"{record.get('hash', 'perceptual hash')}, near = Hamming distance <= "
                  f"{record.get('near_threshold_bits')} bits, took {record.get('seconds', float('nan')):.1f} s")
        audits.append(SplitAudit(Path(path).name, _counts(Path(path).name, record), method,
                                 record.get("warning"), record.get("group_overlap") is not None,
                                 _grouping(meta), _pairs(Path(path) / AUDIT_FILE)))
    return audits


def train_copies(experiment: Path, split: str = "test") -> np.ndarray | None:
    """Indices of ``split``'s images with an exact or near copy in train, as the audit found them
    (``split_audit.npz``); None for an experiment whose audit did not record them."""
    pairs = _pairs(Path(experiment) / AUDIT_FILE)
    key = f"{TRAIN_COPIES}{split}"
    return pairs[key].astype(np.int64) if key in pairs else None
