"""Write a small synthetic graded set (5 ordinal grades visible in the pixels) as a MedMNIST npz.

    python -m benchmarks.graded_synthetic OUT.npz [--n-train 600]

A code check for the ordinal path, not a result: no graded medical set is in ../shared/data. Each
28 px RGB image is noise with a bright bar whose length is the grade (3 + 5 g pixels), so a model
that works must learn it, and QWK/MAE have something real to measure. Run it through
``search_spaces/retina.py`` (which sets TASK = "ordinal") with ``--dataset OUT.npz``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def graded_arrays(n: dict[str, int], seed: int = 0, size: int = 28) -> dict[str, np.ndarray]:
    """``{split}_images`` (N, size, size, 3) uint8 and ``{split}_labels`` (N, 1) grades 0-4."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, count in n.items():
        grades = rng.choice(5, count, p=[0.4, 0.2, 0.2, 0.1, 0.1])  # grade 0 dominates, as in RetinaMNIST
        images = rng.integers(20, 90, (count, size, size, 3)).astype(np.uint8)
        for i, g in enumerate(grades):
            images[i, 2:2 + 3 + 5 * g, 12:16] = (220, 180, 60)
        out[f"{split}_images"], out[f"{split}_labels"] = images, grades.astype(np.uint8)[:, None]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--n-train", type=int, default=600)
    args = p.parse_args(argv)
    n = {"train": args.n_train, "val": max(args.n_train // 6, 50), "test": max(args.n_train // 3, 100)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **graded_arrays(n))
    print(f"wrote {args.out}: {n} images, 5 grades (synthetic: a code check, not a result)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
