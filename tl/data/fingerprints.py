"""Image fingerprints and the near-duplicate search the split audit compares them with.

A fingerprint is a 256-bit difference hash (dHash: a 17x16 grey thumbnail, one bit per horizontal
gradient; survives re-encoding and slight resizing) and a 16-byte digest of the pixels (equal
digests: identical images). The decode store's workers compute both as they decode, with numpy
alone, so the audit (``tl.data.audit``) never reads the pixels again. ``near_pairs`` finds every
pair of hashes within a Hamming distance by multi-index hashing (faiss) instead of all pairs.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

HASH_SIDE = 16  # 16 rows x 16 gradients = 256 bits. The common 64-bit dHash is too coarse for
# chest X-rays: 109 of chest_xray's 624 test images hash identically to some distinct train image.
# Hamming distance (of 256 bits) up to which two images count as near duplicates. Measured on
# chest_xray (README, "Patient-grouped splits and the split audit"): a 10 % downsize plus a JPEG
# re-encode at quality 75 moves a hash by at most 6 bits at 64 px and 7 at 28 px (99th percentile
# 4 at both), while the nearest train image of a test image (none is a duplicate) is at least
# 12 bits away at 64 px and 8 at 28 px. 6 keeps false alarms at zero on both.
NEAR_THRESHOLD = 6


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
