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
import hashlib
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tl.core.errors import TLError
from tl.data.tabular import add_table_arguments, table_options_from_args
from tl.data.groups import group_overlap

SPLITS = ("train", "val", "test")
PAIRS = (("train", "val"), ("train", "test"), ("val", "test"))
HASH_SIDE = 16  # 16 rows x 16 gradients = 256 bits. The common 64-bit dHash is too coarse for
# chest X-rays: 109 of chest_xray's 624 test images hash identically to some distinct train image.
# Hamming distance (of 256 bits) up to which two images count as near duplicates. Measured on
# chest_xray (README, "Patient-grouped splits and the split audit"): a 10 % downsize plus a JPEG
# re-encode at quality 75 moves a hash by at most 6 bits at 64 px and 7 at 28 px (99th percentile
# 4 at both), while the nearest train image of a test image (none is a duplicate) is at least
# 12 bits away at 64 px and 8 at 28 px. 6 keeps false alarms at zero on both.
NEAR_THRESHOLD = 6
THUMB = 64  # side of the thumbnails saved for the report
MAX_EXAMPLES = 6  # duplicate pairs kept for the report
# A digit-bearing name stem that repeats with only a trailing counter changed: "person12_virus_3"
# and "person12_virus_5", "IM-0429-0001-0001" and "...-0002", "00000001_000" and "00000001_001".
_COUNTER = re.compile(r"[-_.]?\d+$")
PATIENT_ID_SHARE = 0.1  # warn when at least this share of names shares a stem with another name


def _bin_matrix(n: int, out: int) -> np.ndarray:
    """0/1 (out, n): which of ``n`` pixels each of ``out`` cells covers, as adaptive average
    pooling cuts them (neighbouring cells share a pixel when ``out`` does not divide ``n``)."""
    i = np.arange(out)[:, None]
    start, end = (i * n) // out, -((-(i + 1) * n) // out)
    pixel = np.arange(n)[None, :]
    return ((pixel >= start) & (pixel < end)).astype(np.float64)


def dhash(images: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Return the 256-bit difference hash of each image of (N, C, H, W) uint8: uint64 (N, 4).

    Each image is area-averaged to 16 x 17 cells and bit (r, c) says whether cell (r, c + 1) is
    brighter than cell (r, c). Cell sums are integer-valued products with 0/1 bin matrices (exact
    in float64) and two cells are compared as sum_a * area_b > sum_b * area_a, so no bit depends on
    rounding, and only numpy is needed: the decode store's workers hash what they decode without
    importing torch.
    """
    n, _, height, width = images.shape
    words = HASH_SIDE * HASH_SIDE // 64
    out = np.empty((n, words), dtype=np.uint64)
    rows, cols = _bin_matrix(height, HASH_SIDE), _bin_matrix(width, HASH_SIDE + 1)  # (16, H), (17, W)
    area = rows.sum(1)[:, None] * cols.sum(1)[None, :]  # (16, 17)
    for i in range(0, n, chunk):
        x = np.asarray(images[i:i + chunk]).sum(1, dtype=np.float64)  # channels summed: the mean's order
        cells = rows @ x @ cols.T  # (n, 16, 17) sums of integers: exact in float64
        bits = cells[:, :, 1:] * area[:, :-1] > cells[:, :, :-1] * area[:, 1:]
        packed = np.ascontiguousarray(np.packbits(bits.reshape(len(x), -1), axis=1))
        out[i:i + chunk] = packed.view(">u8").astype(np.uint64)
    return out


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """Return a 16-byte digest per image of its decoded pixels (equal digests: identical images), as
    uint8 (N, 16). A grey image digests alike at 1 channel and repeated to 3 (the decode store keeps
    grey at one channel and repeats it where a split holds colour too)."""
    out = np.empty((len(images), 16), dtype=np.uint8)
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.shape[0] == 3 and np.array_equal(im[0], im[1]) and np.array_equal(im[0], im[2]):
            im = im[:1]
        out[i] = np.frombuffer(hashlib.blake2b(np.ascontiguousarray(im).data, digest_size=16).digest(), np.uint8)
    return out


def image_fingerprints(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dHash uint64 (N, 4), pixel digest uint8 (N, 16)) of each image: what the audit compares. The
    decode store computes them in its workers, as it decodes, so a search's driver never reads the
    pixels to audit them."""
    return dhash(images), pixel_digests(images)


# Multi-index hashing (Norouzi et al., "Fast exact search in Hamming space with multi-index
# hashing", TPAMI 2014): cut the 256 bits into m disjoint chunks. Two hashes within r bits differ
# in at most r chunks, so when r < m they agree exactly on at least one chunk: looking each hash
# up by each chunk finds every near pair, and the full distance of those candidates removes the
# rest. m = threshold + 1 chunks, the fewest that stay exact, so the chunks are as wide as they
# can be: X-ray dHashes are far from uniform (the same body outline gives the same gradients), and
# with 16 chunks of 16 bits 14 % of PneumoniaMNIST's train x val pairs (22 % on chestxray14_1000)
# shared a chunk, barely better than comparing all pairs; 7 chunks of 36 bits with the bits
# shuffled leave 0.07 % (0.1 %). Shuffled: a chunk of one dHash row (or column) repeats across
# patients, a chunk of bits from all over the image much less (rows 0.5 %, shuffled 0.07 %).
MAX_CHUNKS = 16  # above threshold 15, chunks of < 16 bits collide for a third or more of the pairs
# of real X-rays (measured: 29 % at 12-bit chunks, 75 % at 8), and verifying that many candidates
# one by one is slower than all pairs in blocks: such thresholds use near_pairs_all_pairs.
_MAX_CHUNK_BITS = 56  # faiss reads a chunk as 8 bytes shifted by up to 7 bits: at most 57 bits
_BIT_ORDER = np.random.default_rng(0).permutation(HASH_SIDE * HASH_SIDE)  # fixed: chunk c is bits
# _BIT_ORDER[c * b:(c + 1) * b] of the dHash; any fixed partition keeps the search exact


def near_pairs_all_pairs(a: np.ndarray, b: np.ndarray, threshold: int,
                         block: int = 4_000_000) -> tuple[np.ndarray, ...]:
    """Return (index in a, index in b, Hamming distance) of every pair within ``threshold`` bits.

    The O(N*M) reference: every pair is compared (numpy, in blocks of ``block`` words). Pairs come
    sorted by index in a, then index in b. ``near_pairs`` finds the same pairs without comparing
    all of them; this one stays for thresholds above ``MAX_CHUNKS - 1`` and as the tests' reference.
    """
    rows = max(1, block // max(1, len(b) * a.shape[1]))
    found_a, found_b, found_d = [], [], []
    for i in range(0, len(a), rows):
        dist = np.bitwise_count(a[i:i + rows, None, :] ^ b[None, :, :]).sum(-1, dtype=np.int64)
        ia, ib = np.nonzero(dist <= threshold)
        found_a.append(ia + i)
        found_b.append(ib)
        found_d.append(dist[ia, ib])
    cat = (lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t))
    return cat(found_a, np.int64), cat(found_b, np.int64), cat(found_d, np.int64)


def near_pairs_method(threshold: int) -> str:
    """Return how ``near_pairs`` searches at ``threshold``, as the audit record names it."""
    if threshold >= MAX_CHUNKS:
        return "all pairs (numpy)"
    nhash, bits = _chunks(threshold)
    return f"multi-index hashing (faiss IndexBinaryMultiHash, {nhash} x {bits}-bit chunks)"


def hash_chunks(threshold: int) -> list[np.ndarray]:
    """Return the dHash bit positions of each chunk ``near_pairs`` indexes at ``threshold``.

    Bit k of a dHash is row k // 16, gradient k % 16: word k // 64 of the uint64 (N, 4) hash, its
    (63 - k % 64)-th least significant bit. Bits in no chunk still count in the distance.
    """
    nhash, bits = _chunks(threshold)
    return [_BIT_ORDER[c * bits:(c + 1) * bits] for c in range(nhash)]


def near_pairs(a: np.ndarray, b: np.ndarray, threshold: int) -> tuple[np.ndarray, ...]:
    """Return (index in a, index in b, Hamming distance) of every pair within ``threshold`` bits.

    Exactly the pairs, distances and order of ``near_pairs_all_pairs``, found by multi-index
    hashing: the smaller split is indexed by ``threshold + 1`` chunks of its hashes and the larger
    one looked up chunk by chunk, so only pairs that share a chunk are compared.

    Args:
        a, b: dHashes, uint64 (N, 4) and (M, 4).
        threshold: the largest Hamming distance of a near pair, >= 0. From ``MAX_CHUNKS`` on the
            search compares all pairs (chunks that narrow would match most pairs anyway).

    Raises:
        ValueError: a negative threshold, or hashes that are not 256 bits.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 bits, got {threshold}")
    for name, h in (("a", a), ("b", b)):
        if h.ndim != 2 or h.shape[1] * 64 != HASH_SIDE * HASH_SIDE:
            raise ValueError(f"{name} must be {HASH_SIDE * HASH_SIDE}-bit hashes, uint64 (N, 4), got shape {h.shape}")
    if threshold >= MAX_CHUNKS:
        return near_pairs_all_pairs(a, b, threshold)
    if not len(a) or not len(b):
        return tuple(np.zeros(0, np.int64) for _ in range(3))
    import faiss

    swap = len(a) < len(b)  # index the smaller split: adding is one thread, looking up is all of them
    indexed, queries = (a, b) if swap else (b, a)
    nhash, bits = _chunks(threshold)
    index = faiss.IndexBinaryMultiHash(HASH_SIDE * HASH_SIDE, nhash, bits)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(_cpu_allotment())
    try:
        index.add(_faiss_codes(indexed))
        lims, faiss_dist, found = index.range_search(_faiss_codes(queries), threshold + 1)  # radius is strict: <
    finally:
        faiss.omp_set_num_threads(threads)
    iq = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims).astype(np.int64))
    ia, ib = (found.astype(np.int64), iq) if swap else (iq, found.astype(np.int64))
    order = np.lexsort((ib, ia))  # the reference's order: by index in a, then in b
    ia, ib, faiss_dist = ia[order], ib[order], faiss_dist[order]
    # The distances again from the uint64 words: a packing that lost bits or mixed rows shows here.
    dist = np.bitwise_count(a[ia] ^ b[ib]).sum(-1, dtype=np.int64)
    if not np.array_equal(dist, faiss_dist):
        raise RuntimeError(f"faiss and the uint64 hashes disagree on {(dist != faiss_dist).sum()} of {len(dist)} "
                           "distances: the packing of hashes into faiss codes is broken")
    return ia, ib, dist


def _chunks(threshold: int) -> tuple[int, int]:
    """(number of chunks, bits per chunk) of an exact search at ``threshold``: r < m chunks."""
    nhash = threshold + 1
    return nhash, min(HASH_SIDE * HASH_SIDE // nhash, _MAX_CHUNK_BITS)


def _faiss_codes(hashes: np.ndarray) -> np.ndarray:
    """uint8 (N, 32) faiss codes of uint64 (N, 4) dHashes, bits in ``_BIT_ORDER``.

    Backed by one spare zero row: faiss reads each chunk as 8 bytes, so the last chunk of the last
    code reads past the code's 32 bytes; the spare row keeps that read inside the array.
    """
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(len(hashes), -1), axis=1)
    codes = np.zeros((len(hashes) + 1, bits.shape[1] // 8), dtype=np.uint8)
    codes[:-1] = np.packbits(bits[:, _BIT_ORDER], axis=1)
    return codes[:-1]


def _cpu_allotment() -> int:
    """Threads this process may use: its CPU affinity, capped by torch's thread count (which
    follows OMP_NUM_THREADS), so the audit on a shared machine takes no more than the search will."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, torch.get_num_threads()))


def patient_id_warning(names: dict[str, list[str]]) -> str | None:
    """Return a warning when file names look like they carry patient ids, else None.

    A name looks like it does when its stem, less a trailing counter, contains a digit and is
    shared with another file (``person12_virus_3``/``person12_virus_5``).
    """
    stems = [_COUNTER.sub("", Path(n).stem) for split in names.values() for n in split]
    stems = [s for s in stems if any(c.isdigit() for c in s)]
    counts = Counter(stems)
    shared = sum(c for c in counts.values() if c > 1)
    total = sum(len(v) for v in names.values())
    if not total or shared < PATIENT_ID_SHARE * total:
        return None
    example = next(n for split in names.values() for n in split
                   if counts.get(_COUNTER.sub("", Path(n).stem), 0) > 1)
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
        near excludes exact) and how many images of the second split have any; ``group_overlap``
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
        order = np.lexsort((dist, ~exact))  # exact first, then the closest
        examples += [(key, int(ia[k]), int(ib[k]), int(dist[k]), bool(exact[k])) for k in order[:MAX_EXAMPLES]]
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
    from tl.data.tabular import is_table

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


if __name__ == "__main__":
    sys.exit(main())
