"""Split audit: do train, val and test share images or patients?

Runs on the driver before Ray starts, on the decoded uint8 arrays every trial will see. Three
checks: identical pixels across two splits, near duplicates by perceptual hash (dHash: a 17x16
grey thumbnail, one bit per horizontal gradient, 256 bits; survives re-encoding and slight
resizing), and groups (patients) present in more than one split. It also warns when file names
look like they carry patient ids but no grouping was given. ``python -m tl.audit DATASET`` runs
it alone.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.core.results.split_audit import TRAIN_COPIES
from tl.data.arrays import SPLITS
from tl.data.fingerprints import HASH_SIDE, NEAR_THRESHOLD, image_fingerprints, near_pairs, near_pairs_method
from tl.data.groups import group_overlap
from tl.data.table_source import add_table_arguments, table_options_from_args

PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
THUMB = 64  # side of the thumbnails saved for the report
MAX_EXAMPLES = 6  # duplicate pairs kept for the report
# A digit-bearing name stem that repeats with only a trailing counter changed: "person12_virus_3"
# and "person12_virus_5", "IM-0429-0001-0001" and "...-0002", "00000001_000" and "00000001_001".
_COUNTER = re.compile(r"[-_.]?\d+$")
PATIENT_ID_SHARE = 0.1  # warn when at least this share of names shares a stem with another name


def _stem(name: str) -> str:
    """``Path(name).stem`` as string operations: a third of the time over 10^5 names."""
    return os.path.splitext(os.path.basename(name))[0]


def patient_id_warning(names: dict[str, list[str]]) -> str | None:
    """Return a warning when file names look like they carry patient ids, else None.

    A name looks like it does when its stem, less a trailing counter, contains a digit and is
    shared with another file (``person12_virus_3``/``person12_virus_5``).
    """
    stems = [_COUNTER.sub("", _stem(n)) for split in names.values() for n in split]
    stems = [s for s in stems if any(c.isdigit() for c in s)]
    counts = Counter(stems)
    shared = sum(c for c in counts.values() if c > 1)
    total = sum(len(v) for v in names.values())
    if not total or shared < PATIENT_ID_SHARE * total:
        return None
    example = next(n for split in names.values() for n in split
                   if counts.get(_COUNTER.sub("", _stem(n)), 0) > 1)
    return (f"{shared:,} of {total:,} file names share an id-like stem with another file (e.g. {example}): "
            "they may carry patient ids, yet no grouping was given; pass --groups REGEX (or a groups.csv) "
            "so carved splits keep each patient on one side")


def _thumb(image: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.array(image)).float().mean(0, keepdim=True)[None]  # a copy: image may be a read-only memmap
    return F.interpolate(x, size=(THUMB, THUMB), mode="area" if x.shape[-1] >= THUMB else "nearest")[0, 0] \
        .round().clamp(0, 255).byte().numpy()


def audit_splits(images: dict[str, np.ndarray], *, names: dict[str, list[str]] | None = None,
                 groups: dict | None = None, threshold: int = NEAR_THRESHOLD,
                 fingerprints: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[dict, dict]:
    """Audit the splits for shared images and patients.

    Args:
        images: uint8 (N, C, H, W) per split.
        names: file names per split, if known (the patient-id warning reads them).
        groups: the split record's ``groups`` entry (per split its groups), or None.
        threshold: Hamming distance of a near duplicate.
        fingerprints: per split, ``image_fingerprints`` of its images if already computed (the
            decode store's); then only the example pairs' pixels are read, for their thumbnails.

    Returns:
        (the record for ``tl_search.json``, example pairs with thumbnails for ``split_audit.npz``).
        The record: per pair of splits ``exact_duplicates`` and ``near_duplicates`` (pairs of images;
        near excludes exact) and how many images of the second split have any; ``copies_of_train``:
        per split, its images with an exact or near copy in train (their indices are in the pairs,
        ``train_copies_<split>``, so the figures on the images without one can be given); ``group_overlap``
        (None without grouping); ``warning``; ``near_search`` (how near pairs were found);
        ``seconds``.
    """
    t0 = time.perf_counter()
    present = [s for s in SPLITS if s in images and len(images[s])]
    found = {s: fingerprints[s] if fingerprints and s in fingerprints else image_fingerprints(images[s])
             for s in present}
    hashes, digests = {s: f[0] for s, f in found.items()}, {s: f[1] for s, f in found.items()}
    record: dict = {"near_threshold_bits": threshold, "hash": f"dHash {HASH_SIDE * HASH_SIDE}-bit",
                    "near_search": near_pairs_method(threshold), "exact_duplicates": {},
                    "near_duplicates": {}, "images_with_exact_duplicate": {}, "images_with_near_duplicate": {}}
    examples: list[tuple] = []
    copies: dict[str, list[np.ndarray]] = {}  # per split, the images with an exact or near copy in train
    for a, b in PAIRS:
        if a not in present or b not in present:
            continue
        ia, ib, dist = near_pairs(hashes[a], hashes[b], threshold)
        exact = (digests[a][ia] == digests[b][ib]).all(axis=1) if len(ia) else np.zeros(0, dtype=bool)
        key = f"{a}|{b}"
        record["exact_duplicates"][key] = int(exact.sum())
        record["near_duplicates"][key] = int((~exact).sum())
        record["images_with_exact_duplicate"][key] = int(len(np.unique(ib[exact])))
        record["images_with_near_duplicate"][key] = int(len(np.unique(ib[~exact])))
        if a == "train":
            copies.setdefault(b, []).append(ib)
        order = np.lexsort((dist, ~exact))  # exact first, then the closest
        examples += [(key, int(ia[k]), int(ib[k]), int(dist[k]), bool(exact[k])) for k in order[:MAX_EXAMPLES]]
    copied = {s: np.unique(np.concatenate(found_in)) for s, found_in in copies.items()}
    record["copies_of_train"] = {s: int(len(idx)) for s, idx in copied.items()}
    record["group_overlap"] = group_overlap(groups)
    record["unmatched_files"] = int(groups.get("unmatched_files", 0)) if groups else None
    record["warning"] = patient_id_warning(names) if names and not groups else None
    examples = sorted(examples, key=lambda e: (not e[4], e[3]))[:MAX_EXAMPLES]
    pairs = {"pair": np.array([e[0] for e in examples]), "index_a": np.array([e[1] for e in examples], dtype=np.int64),
             "index_b": np.array([e[2] for e in examples], dtype=np.int64),
             "distance": np.array([e[3] for e in examples], dtype=np.int64),
             "exact": np.array([e[4] for e in examples], dtype=bool),
             "thumb_a": np.stack([_thumb(images[e[0].split("|")[0]][e[1]]) for e in examples])
             if examples else np.zeros((0, THUMB, THUMB), np.uint8),
             "thumb_b": np.stack([_thumb(images[e[0].split("|")[1]][e[2]]) for e in examples])
             if examples else np.zeros((0, THUMB, THUMB), np.uint8)}
    pairs.update({f"{TRAIN_COPIES}{s}": idx.astype(np.int64) for s, idx in copied.items()})
    if names:
        pairs["name_a"] = np.array([_name(names, e[0].split("|")[0], e[1]) for e in examples])
        pairs["name_b"] = np.array([_name(names, e[0].split("|")[1], e[2]) for e in examples])
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record, pairs


def _name(names: dict[str, list[str]], split: str, i: int) -> str:
    split_names = names.get(split) or []
    return split_names[i] if i < len(split_names) else f"{split}[{i}]"


def audit_lines(record: dict) -> list[str]:
    """Return the 1-3 lines the search prints about the audit."""
    def fmt(counts: dict) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"

    lines = [f"split audit ({record['seconds']:.1f} s): exact duplicate pairs across splits: "
             f"{fmt(record['exact_duplicates'])}; near duplicates ({record['hash']}, <= {record['near_threshold_bits']} bits, "
             f"not exact): {fmt(record['near_duplicates'])}"]
    overlap = record["group_overlap"]
    unmatched = record.get("unmatched_files") or 0
    lines.append("  groups in two splits: " + (fmt(overlap) if overlap is not None else "unknown (no grouping given)")
                 + (f"; {unmatched:,} files matched no group and stand alone" if unmatched else ""))
    if record.get("warning"):
        lines.append(f"  warning: {record['warning']}")
    return lines


def save_pairs(path: Path, pairs: dict) -> None:
    """Write the example pairs (thumbnails, names, distances) the report shows."""
    np.savez_compressed(path, **pairs)


def _load_for_audit(dataset: str, image_size: int, groups: str | None, seed: int, table: dict | None = None):
    """Images, names and group record of a dataset; a multi-label .npz is read raw."""
    from tl.data import load_dataset, resolve_dataset_path
    from tl.data.groups import groups_from_regex, groups_record
    from tl.data.table_source import is_table

    path = resolve_dataset_path(dataset, None, offline=True)
    if path.is_file() and not is_table(path):  # read raw: the audit needs no labels, so multi-label sets work too
        with np.load(path) as npz:
            images = {s: npz[f"{s}_images"] for s in SPLITS if f"{s}_images" in npz.files}
            names = {s: [str(n) for n in npz[f"{s}_names"]] for s in SPLITS if f"{s}_names" in npz.files}
        images = {s: x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2) for s, x in images.items()}
        record = None
        if groups:
            if not names:
                raise TLError(f"{path}: --groups needs {{split}}_names arrays")
            flat = [n for s in SPLITS for n in names.get(s, [])]
            keys, missed = groups_from_regex(flat, groups)
            bounds = np.cumsum([0] + [len(names.get(s, [])) for s in SPLITS])
            record = groups_record({s: keys[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS) if s in names},
                                   f"regex {groups}", missed)
        return images, names, record, None
    arrays = load_dataset(dataset, image_size, seed=seed, groups=groups, table=table)
    return arrays.images, arrays.names, arrays.split_record.get("groups"), arrays.image_fingerprints


def main(argv: list[str] | None = None) -> int:
    """``python -m tl.audit DATASET [--groups REGEX]``: the split audit alone, printed."""
    p = argparse.ArgumentParser(prog="python -m tl.audit", description=main.__doc__)
    p.add_argument("dataset", help=".npz file, ImageFolder root, or a .csv/.tsv label table (with --labels)")
    p.add_argument("--groups", metavar="REGEX", help="patient id: first capture group of REGEX in each path")
    p.add_argument("--image-size", type=int, default=64, help="ImageFolder decode size (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of a carved split (default 0)")
    add_table_arguments(p)
    args = p.parse_args(argv)
    try:
        t0 = time.perf_counter()
        images, names, groups, fingerprints = _load_for_audit(args.dataset, args.image_size, args.groups,
                                                              args.seed, table_options_from_args(args))
        load_s = time.perf_counter() - t0
        record, _ = audit_splits(images, names=names, groups=groups, fingerprints=fingerprints)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"loaded {', '.join(f'{s} {len(x):,}' for s, x in images.items())} images in {load_s:.1f} s")
    print("\n".join(audit_lines(record)))
    print(f"images of the second split with a duplicate: exact {record['images_with_exact_duplicate']}, "
          f"near {record['images_with_near_duplicate']}")
    return 0
