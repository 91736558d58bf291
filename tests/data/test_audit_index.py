"""tl.data.audit.near_pairs (multi-index hashing through faiss) finds exactly the pairs of the all-pairs
reference: on real X-rays, on planted pairs at every distance around the threshold, and on empty
and one-image splits."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tl.data.audit import audit_splits
from tl.data.fingerprints import MAX_CHUNKS, NEAR_THRESHOLD, dhash, hash_chunks, near_pairs, near_pairs_all_pairs, near_pairs_method

SPLITS = ("train", "val", "test")
PAIRS = (("train", "val"), ("train", "test"), ("val", "test"), ("test", "train"))
THRESHOLDS = sorted({0, 3, NEAR_THRESHOLD, 10})


def _triples(found: tuple[np.ndarray, ...]) -> set[tuple[int, int, int]]:
    return set(zip(*(x.tolist() for x in found)))


def _assert_same_as_reference(a: np.ndarray, b: np.ndarray, threshold: int, what: str) -> tuple[np.ndarray, ...]:
    got, ref = near_pairs(a, b, threshold), near_pairs_all_pairs(a, b, threshold)
    assert _triples(got) == _triples(ref), \
        (f"{what} at {threshold} bits: missed {sorted(_triples(ref) - _triples(got))[:5]}, "
         f"extra {sorted(_triples(got) - _triples(ref))[:5]}")
    for name, x, y in zip(("index a", "index b", "distance"), got, ref):
        assert x.dtype == y.dtype == np.int64 and np.array_equal(x, y), f"{what}: {name} differs in order or dtype"
    return got


@pytest.fixture(scope="module")
def real_hashes(data_dir) -> dict[str, dict[str, np.ndarray]]:
    """dHashes of the official splits of PneumoniaMNIST (28 px) and chestxray14_1000 (64 px)."""
    out = {}
    for file in ("pneumoniamnist.npz", "chestxray14_1000.npz"):
        with np.load(data_dir / file) as npz:
            out[file] = {s: dhash(npz[f"{s}_images"][:, None]) for s in SPLITS}
    return out


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("file", ["pneumoniamnist.npz", "chestxray14_1000.npz"])
def test_real_splits_give_the_all_pairs_result(real_hashes, file, threshold):
    hashes = real_hashes[file]
    found = {f"{a}|{b}": _assert_same_as_reference(hashes[a], hashes[b], threshold, f"{file} {a}|{b}")
             for a, b in PAIRS}
    if file == "pneumoniamnist.npz" and threshold >= 3:
        # Not vacuous: PneumoniaMNIST's train and val share 10 near-identical images (measured).
        assert len(found["train|val"][0]) == 10, f"train|val pairs at {threshold} bits: {len(found['train|val'][0])}"


def _flip(h: np.ndarray, bits) -> np.ndarray:
    """A copy of one dHash (uint64 (4,)) with the given dHash bit positions flipped."""
    out = h.copy()
    for k in bits:
        out[k // 64] ^= np.uint64(1) << np.uint64(63 - k % 64)
    return out


def _planted(threshold: int, seed: int = 0):
    """Random hashes with pairs planted at every distance 0..threshold+2.

    For each distance d and each chunk s: d bits flipped, one per chunk in turn starting after s,
    so d flips hit min(d, chunks) chunks: at d = threshold only chunk s is left intact (the
    tightest case the pigeonhole allows), and with fewer than threshold + 1 chunks none would be.
    The bit within each chunk varies with s and d, so flips land all over every chunk. Also 8
    pairs per distance with the d bits drawn anywhere, bits in no chunk too.
    Returns (a, b, {(index a, index b): planted distance}).
    """
    rng = np.random.default_rng(seed)
    chunks = hash_chunks(threshold)
    plans = []
    for d in range(threshold + 3):
        for s in range(len(chunks)):
            hit = [chunks[(s + 1 + i) % len(chunks)] for i in range(d)]
            bits = [int(c[(s * 7 + d * 5 + i // len(chunks)) % len(c)]) for i, c in enumerate(hit)]
            assert len(set(bits)) == d, f"planted bits collide: {bits}"
            plans.append(bits)
        plans += [rng.choice(256, d, replace=False).tolist() for _ in range(8)]
    # Random 256-bit hashes lie ~128 bits apart (closest of 10^6 pairs: ~90): no pair is near by chance.
    a = rng.integers(0, 2**64, (3 * len(plans), 4), dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 2**64, (2 * len(plans), 4), dtype=np.uint64, endpoint=False)
    ia, ib = rng.permutation(len(a))[:len(plans)], rng.permutation(len(b))[:len(plans)]
    for i, j, bits in zip(ia, ib, plans):
        b[j] = _flip(a[i], bits)
    return a, b, {(int(i), int(j)): len(bits) for i, j, bits in zip(ia, ib, plans)}


@pytest.mark.parametrize("threshold", sorted({0, 1, 3, NEAR_THRESHOLD, 10, MAX_CHUNKS - 1}))
def test_planted_pairs_are_found_up_to_the_threshold_and_not_beyond(threshold):
    a, b, planted = _planted(threshold)
    chunks = hash_chunks(threshold)
    covered = np.concatenate(chunks)
    assert len(np.unique(covered)) == len(covered), f"chunks at {threshold} overlap"
    assert len(chunks) > threshold, f"{len(chunks)} chunks cannot be exact at {threshold} bits (pigeonhole: r < m)"
    for big, small, what in ((a, b, "a larger"), (b, a, "b larger")):
        _assert_same_as_reference(big, small, threshold, f"planted, {what}")
    found = {(i, j): d for i, j, d in zip(*(x.tolist() for x in near_pairs(a, b, threshold)))}
    expected = {pair: d for pair, d in planted.items() if d <= threshold}
    assert found == expected, (f"at {threshold} bits: missed {sorted(set(expected) - set(found))[:5]}, "
                               f"extra {sorted(set(found) - set(expected))[:5]}")
    at_threshold = [p for p, d in planted.items() if d == threshold]
    beyond = [p for p, d in planted.items() if d == threshold + 1]
    assert at_threshold and all(p in found for p in at_threshold), f"pairs at exactly {threshold} bits must be found"
    assert beyond and not any(p in found for p in beyond), f"pairs at {threshold + 1} bits must not be found"


def test_swapped_splits_give_swapped_pairs():
    a, b, _ = _planted(NEAR_THRESHOLD, seed=1)
    ia, ib, d = near_pairs(a, b, NEAR_THRESHOLD)
    ja, jb, e = near_pairs(b, a, NEAR_THRESHOLD)
    assert _triples((ia, ib, d)) == _triples((jb, ja, e)), "a|b and b|a must be the same pairs"


def test_empty_and_one_image_splits():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 2**64, (50, 4), dtype=np.uint64, endpoint=False)
    empty = np.zeros((0, 4), np.uint64)
    for x, y, what in ((empty, a, "empty a"), (a, empty, "empty b"), (empty, empty, "both empty")):
        got = near_pairs(x, y, NEAR_THRESHOLD)
        assert [len(v) for v in got] == [0, 0, 0] and all(v.dtype == np.int64 for v in got), f"{what}: {got}"
    one = _flip(a[17], [3, 200])[None]
    assert _triples(near_pairs(one, a, NEAR_THRESHOLD)) == {(0, 17, 2)}, "a one-image split finds its near copy"
    assert _triples(near_pairs(a, one, NEAR_THRESHOLD)) == {(17, 0, 2)}, "as the larger split's partner too"
    assert _triples(near_pairs(one, one, 0)) == {(0, 0, 0)}, "one image against itself: distance 0"
    assert _triples(near_pairs(one, a[:1], NEAR_THRESHOLD)) == set(), "two distinct single images: nothing"


def test_audit_record_with_an_empty_and_a_one_image_split():
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (12, 1, 32, 32), dtype=np.uint8)
    images = {"train": train, "val": np.zeros((0, 1, 32, 32), np.uint8), "test": train[4:5].copy()}
    record, pairs = audit_splits(images)
    assert record["exact_duplicates"] == {"train|test": 1}, f"the one test image is train[4]: {record}"
    assert record["near_duplicates"] == {"train|test": 0} and record["images_with_exact_duplicate"] == {"train|test": 1}
    assert record["near_search"] == near_pairs_method(NEAR_THRESHOLD) and "faiss" in record["near_search"], record
    assert pairs["index_a"].tolist() == [4] and pairs["exact"].tolist() == [True], pairs


def test_thresholds_beyond_the_chunks_compare_all_pairs_and_negative_is_refused():
    a, b, _ = _planted(3, seed=4)
    assert near_pairs_method(MAX_CHUNKS) == "all pairs (numpy)", near_pairs_method(MAX_CHUNKS)
    assert near_pairs_method(MAX_CHUNKS - 1).startswith("multi-index hashing"), near_pairs_method(MAX_CHUNKS - 1)
    _assert_same_as_reference(a, b, MAX_CHUNKS + 4, "above the chunks")
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        near_pairs(a, b, -1)
    with pytest.raises(ValueError, match="256-bit"):
        near_pairs(a[:, :2], b, NEAR_THRESHOLD)


def test_faiss_threads_follow_the_cpu_allotment_and_are_restored(monkeypatch):
    import faiss
    import torch

    calls = []
    real_set = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: (calls.append(n), real_set(n)))
    before = faiss.omp_get_max_threads()
    a, b, _ = _planted(NEAR_THRESHOLD, seed=5)
    near_pairs(a, b, NEAR_THRESHOLD)
    allotment = min(len(os.sched_getaffinity(0)), torch.get_num_threads())
    assert calls == [allotment, before], f"set to the allotment {allotment}, then back to {before}: {calls}"
