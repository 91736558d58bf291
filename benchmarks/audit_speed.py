"""The split audit's near-duplicate search: multi-index hashing (faiss) vs comparing all pairs.

    python -m benchmarks.audit_speed [--sizes 10000 100000] [--full-reference] [--json out.json]

For each N: train N, val 10 % and test 15 % of N dHashes (256 bits), with near duplicates planted
across the three pairs of splits at every distance 0..threshold+2 (those beyond the threshold must
not be found). Two kinds of hashes: uniform random bits, the easy case for multi-index hashing,
and x-ray-like ones, each of whose 16 rows (16 bits) is the row of a real X-ray's dHash
(PneumoniaMNIST and chestxray14_1000 from --data-dir): the bits keep the bias of real images, which
makes hash chunks collide far more often. Drawn row by row they lose what ties rows together, so
the shuffled chunks collide less than on the real hashes themselves: the last lines give the share
of pairs compared on the real hashes, the figure that matters for real data. The all-pairs reference is run on the same splits;
a pair of splits above --slice-pairs comparisons is measured on its first rows only and its time
scaled up by rows (the output says "est."), unless --full-reference. The search's pairs must equal
the reference's on the rows both ran, and every planted pair within the threshold must be found.
Then ``audit_splits`` end to end (dHash, pixel digests, search) on 28 px random images of N.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from benchmarks.common import device_description, write_json
from tl.data.audit import PAIRS, audit_splits
from tl.data.fingerprints import NEAR_THRESHOLD, dhash, near_pairs, near_pairs_all_pairs, near_pairs_method

TARGET_S = 60.0  # the whole audit of 100,000 train images (three pairs of splits) on 2 cores
SHARES = {"train": 1.0, "val": 0.10, "test": 0.15}
PLANTED = 300  # near duplicates planted per size, split over the three pairs of splits


def random_hashes(n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniform random 256-bit hashes, uint64 (n, 4)."""
    return rng.integers(0, 2**64, (n, 4), dtype=np.uint64, endpoint=False)


def xray_like_hashes(n: int, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
    """n hashes whose row r is row r of a random real dHash (rows: uint16 (K, 16), rows of K dHashes)."""
    picked = rows[rng.integers(0, len(rows), (n, 16)), np.arange(16)]  # (n, 16) uint16, one row per real hash
    return picked.astype(">u2").view(">u8").astype(np.uint64).reshape(n, 4)


def real_hash_rows(data_dir: Path) -> np.ndarray:
    """The 16 rows of the dHash of every image of PneumoniaMNIST and chestxray14_1000: uint16 (K, 16)."""
    hashes = []
    for file in ("pneumoniamnist.npz", "chestxray14_1000.npz"):
        with np.load(data_dir / file) as npz:
            hashes += [dhash(npz[f"{s}_images"][:, None]) for s in ("train", "val", "test")]
    words = np.concatenate(hashes)
    return words.astype(">u8").view(">u2").astype(np.uint16).reshape(len(words), 16)


def plant(splits: dict[str, np.ndarray], rng: np.random.Generator, n: int) -> dict[str, dict[tuple[int, int], int]]:
    """Overwrite rows of the second split of each pair with copies of first-split rows with d bits
    flipped, d cycling over 0..threshold+2; return per pair {(index a, index b): d}. No row takes
    part twice, so no pair is near through a third image (a copy of a copy)."""
    planted: dict[str, dict[tuple[int, int], int]] = {}
    free = {s: rng.permutation(len(h)).tolist() for s, h in splits.items()}
    for k, (a, b) in enumerate(PAIRS):
        planted[f"{a}|{b}"] = {}
        for p in range(min(n // len(PAIRS), min(len(h) for h in splits.values()) // 4)):  # rows for all pairs
            i, j = free[a].pop(), free[b].pop()
            d = (p + k) % (NEAR_THRESHOLD + 3)
            h = splits[a][i].copy()
            for bit in rng.choice(256, d, replace=False):
                h[bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
            splits[b][j] = h
            planted[f"{a}|{b}"][(i, j)] = d
    return planted


def row_chunks_search(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The layout first proposed, 16 chunks of 16 bits (one dHash row each), smaller split indexed:
    (seconds, share of all pairs it compares)."""
    small, big = (a, b) if len(a) < len(b) else (b, a)
    codes = [np.vstack([h.astype(">u8").view(np.uint8).reshape(len(h), 32), np.zeros((1, 32), np.uint8)])
             for h in (small, big)]  # one spare row: faiss reads 6 bytes past the last code
    faiss.cvar.indexBinaryHash_stats.reset()
    t0 = time.perf_counter()
    index = faiss.IndexBinaryMultiHash(256, 16, 16)
    index.add(codes[0][:-1])
    index.range_search(codes[1][:-1], NEAR_THRESHOLD + 1)
    return time.perf_counter() - t0, faiss.cvar.indexBinaryHash_stats.ndis / (len(a) * len(b))


def measure(splits: dict[str, np.ndarray], planted: dict, slice_pairs: float) -> list[dict]:
    """Per pair of splits: search and reference seconds, share of pairs compared, pairs found, the checks."""
    rows = []
    for a, b in PAIRS:
        key, ha, hb = f"{a}|{b}", splits[a], splits[b]
        faiss.cvar.indexBinaryHash_stats.reset()
        t0 = time.perf_counter()
        ia, ib, dist = near_pairs(ha, hb, NEAR_THRESHOLD)
        search_s = time.perf_counter() - t0
        compared = faiss.cvar.indexBinaryHash_stats.ndis / (len(ha) * len(hb))
        rows_s, rows_compared = row_chunks_search(ha, hb)
        k = min(len(ha), max(1, int(slice_pairs // len(hb))))
        t0 = time.perf_counter()
        ref = near_pairs_all_pairs(ha[:k], hb, NEAR_THRESHOLD)
        ref_s = (time.perf_counter() - t0) * len(ha) / k
        mine = set(zip(ia.tolist(), ib.tolist(), dist.tolist()))
        in_slice = {t for t in mine if t[0] < k}
        expected = {(i, j, d) for (i, j), d in planted[key].items() if d <= NEAR_THRESHOLD}
        rows.append({"pair": key, "n_a": len(ha), "n_b": len(hb), "search_s": search_s, "compared": compared,
                     "row_chunks_s": rows_s, "row_chunks_compared": rows_compared, "reference_s": ref_s,
                     "reference_estimated": k < len(ha), "reference_rows": k, "pairs_found": len(mine),
                     "same_as_reference": in_slice == set(zip(*(x.tolist() for x in ref))),
                     "planted_within_threshold": len(expected), "planted_found": len(expected & mine),
                     "planted_beyond_found": sum((i, j) in planted[key] and planted[key][(i, j)] > NEAR_THRESHOLD
                                                 for i, j, _ in mine)})
    return rows


def real_shares(rows: np.ndarray) -> tuple[int, float, float]:
    """(number of real dHashes, share of their pairs compared by ``near_pairs``, by 16 x 16-bit rows):
    all real hashes against themselves, each hash's pair with itself left out."""
    real = rows.astype(">u2").view(">u8").astype(np.uint64).reshape(len(rows), 4)
    n = len(real)
    faiss.cvar.indexBinaryHash_stats.reset()
    near_pairs(real, real, NEAR_THRESHOLD)
    share = (faiss.cvar.indexBinaryHash_stats.ndis - n) / (n * (n - 1))
    row_share = (row_chunks_search(real, real)[1] * n * n - n) / (n * (n - 1))
    return n, share, row_share


def end_to_end(n: int, rng: np.random.Generator) -> tuple[float, dict]:
    """``audit_splits`` on 28 px random images: train n, val and test by SHARES, a few copies planted."""
    images = {s: rng.integers(0, 256, (int(n * share), 1, 28, 28), dtype=np.uint8) for s, share in SHARES.items()}
    images["val"][:50] = images["train"][:50]  # exact copies
    images["test"][:50] = np.clip(images["train"][50:100].astype(int) + 2, 0, 255)  # near copies (brighter)
    t0 = time.perf_counter()
    record, _ = audit_splits(images)
    return time.perf_counter() - t0, record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.audit_speed", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="train images (val 10 %%, test 15 %%)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TL_DATA_DIR", "../shared/data")))
    p.add_argument("--slice-pairs", type=float, default=2e8, help="comparisons above which the reference runs on a slice")
    p.add_argument("--full-reference", action="store_true", help="run the all-pairs reference in full (minutes at 10^5)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    slice_pairs = float("inf") if args.full_reference else args.slice_pairs
    kinds = {"random": None}
    if (args.data_dir / "pneumoniamnist.npz").is_file() and (args.data_dir / "chestxray14_1000.npz").is_file():
        kinds["x-ray-like"] = real_hash_rows(args.data_dir)
    else:
        print(f"x-ray-like hashes skipped: no pneumoniamnist.npz and chestxray14_1000.npz in {args.data_dir}")
    result = {"benchmark": "audit_speed", "method": near_pairs_method(NEAR_THRESHOLD), "threshold": NEAR_THRESHOLD,
              "target_s": TARGET_S, "runs": [], "device": device_description(torch.device("cpu"), torch.get_num_threads()),
              "date": dt.date.today().isoformat(), "load_avg": os.getloadavg()[0]}
    print(f"near pairs within {NEAR_THRESHOLD} bits by {result['method']}, vs all pairs (numpy bitwise_count)")
    print(f"{'hashes':11}{'train':>8} {'pair':11}{'search s':>9}{'compared':>9}{'16x16 s':>8}{'compared':>9}"
          f"{'all pairs s':>25}{'speedup':>8}{'found':>6}{'planted':>8}{'beyond':>7}  same as all pairs")
    near_pairs(random_hashes(200, np.random.default_rng(0)), random_hashes(200, np.random.default_rng(1)),
               NEAR_THRESHOLD)  # warm-up: faiss's import and OpenMP start are not the search's time
    ok = True
    for kind, hash_rows in kinds.items():
        for n in args.sizes:
            rng = np.random.default_rng(n)
            make = (lambda m: random_hashes(m, rng)) if hash_rows is None else (lambda m: xray_like_hashes(m, rng, hash_rows))
            splits = {s: make(int(n * share)) for s, share in SHARES.items()}
            planted = plant(splits, rng, PLANTED)
            rows = measure(splits, planted, slice_pairs)
            for r in rows:
                ok &= r["same_as_reference"] and r["planted_found"] == r["planted_within_threshold"] \
                    and not r["planted_beyond_found"]
                ref = f"{r['reference_s']:.2f}" + (f" est. ({r['reference_rows']:,} rows)" if r["reference_estimated"] else "")
                print(f"{kind:11}{n:>8,} {r['pair']:11}{r['search_s']:>9.2f}{r['compared']:>9.3%}{r['row_chunks_s']:>8.2f}"
                      f"{r['row_chunks_compared']:>9.1%}{ref:>25}{r['reference_s'] / r['search_s']:>7.0f}x"
                      f"{r['pairs_found']:>6}{r['planted_found']:>4}/{r['planted_within_threshold']:<3}"
                      f"{r['planted_beyond_found']:>7}  {'yes' if r['same_as_reference'] else 'NO'}"
                      + (" (rows it ran)" if r["reference_estimated"] else ""))
            search, ref = sum(r["search_s"] for r in rows), sum(r["reference_s"] for r in rows)
            rows_s = sum(r["row_chunks_s"] for r in rows)
            print(f"{kind:11}{n:>8,} {'all three':11}{search:>9.2f}{'':>9}{rows_s:>8.2f}{'':>9}{ref:>25.2f}{ref / search:>7.0f}x"
                  + ("  (all pairs partly estimated)" if any(r["reference_estimated"] for r in rows) else ""))
            result["runs"].append({"hashes": kind, "n_train": n, "search_s": round(search, 3),
                                   "row_chunks_s": round(rows_s, 3), "reference_s": round(ref, 3), "rows": rows})
    if "x-ray-like" in kinds:
        n_real, share, row_share = real_shares(kinds["x-ray-like"])
        pairs_100k = sum(SHARES[a] * SHARES[b] for a, b in PAIRS) * 100_000 ** 2
        print(f"real dHashes ({n_real:,} PneumoniaMNIST and chestxray14_1000 images, each against the others): "
              f"{share:.3%} of pairs compared ({row_share:.1%} with 16 x 16-bit rows); at that share the "
              f"100,000 audit compares {share * pairs_100k / 1e6:.1f} M of {pairs_100k / 1e9:.2f} G pairs")
        result["real_hashes"] = {"n": n_real, "compared": share, "row_chunks_compared": row_share}
    for n in args.sizes:
        seconds, record = end_to_end(n, np.random.default_rng(n + 1))
        total = int(sum(n * share for share in SHARES.values()))
        print(f"audit_splits end to end, {total:,} random 28 px images (train {n:,}): {seconds:.1f} s "
              f"(target <= {TARGET_S:.0f} s at 100,000); exact {record['exact_duplicates']}, near {record['near_duplicates']}")
        ok &= record["exact_duplicates"]["train|val"] == 50 and record["near_duplicates"]["train|test"] == 50
        result["runs"].append({"end_to_end": True, "n_train": n, "seconds": round(seconds, 2),
                               "exact": record["exact_duplicates"], "near": record["near_duplicates"]})
    print(f"on {result['device']}, load average {result['load_avg']:.1f} at the start, {result['date']}; all checks {'passed' if ok else 'FAILED'}")
    write_json(result, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
