"""Paired tests on per-image correctness of two models on the same test images.

Pure numpy and the standard library (no scipy): a paired bootstrap CI for the difference in
accuracy, McNemar's exact test (a two-sided binomial test on the discordant pairs), and a
bootstrap interval for one model's own test statistic (accuracy, AUC).
"""

from __future__ import annotations

from fractions import Fraction
from math import comb
from typing import Callable, NamedTuple

import numpy as np

N_RESAMPLES = 2000
CI_LEVEL = 0.95
SEED = 0
_CHUNK = 250  # resamples drawn at once: bounds memory at _CHUNK x N indices


class BootstrapCI(NamedTuple):
    """Difference in accuracy (A - B) and its percentile bootstrap interval."""

    diff: float
    low: float
    high: float
    level: float
    n_resamples: int


class McNemarResult(NamedTuple):
    """Discordant counts and McNemar's exact two-sided p-value."""

    a_only: int  # images A got right and B got wrong
    b_only: int  # images B got right and A got wrong
    p_value: float


def _check_pair(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(correct_a, dtype=bool).reshape(-1)
    b = np.asarray(correct_b, dtype=bool).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("need two equal, non-empty correctness vectors, "
                         f"got {a.shape} and {b.shape}")
    return a, b


def paired_bootstrap_ci(
    correct_a: np.ndarray, correct_b: np.ndarray, *, n_resamples: int = N_RESAMPLES,
    level: float = CI_LEVEL, seed: int = SEED,
) -> BootstrapCI:
    """Return accuracy(A) - accuracy(B) with a paired percentile bootstrap CI.

    The same resampled test images are scored for both models, so the interval reflects the
    pairing. Seeded: the same inputs give the same interval.

    Args:
        correct_a, correct_b: boolean (N,) per-image correctness, same image order.
        n_resamples: bootstrap resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of ``numpy.random.default_rng``.

    Raises:
        ValueError: shapes differ or are empty, or ``level`` is outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a, b = _check_pair(correct_a, correct_b)
    delta = a.astype(np.int8) - b.astype(np.int8)  # per image: +1, 0 or -1
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        stop = min(start + _CHUNK, n_resamples)
        idx = rng.integers(0, delta.size, size=(stop - start, delta.size))
        diffs[start:stop] = delta[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return BootstrapCI(float(delta.mean()), float(low), float(high), level, n_resamples)


def binomial_two_sided_p(k: int, n: int) -> float:
    """Return the exact two-sided p-value of ``k`` successes in ``n`` fair coin flips.

    Computed with exact integers: 2 x P(X <= min(k, n - k)), capped at 1; 1 when n is 0.
    """
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = Fraction(sum(comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """Return McNemar's exact test of "A and B are equally accurate" on paired predictions.

    Only the discordant images count: under the null each is equally likely to favour A or B.

    Raises:
        ValueError: shapes differ or are empty.
    """
    a, b = _check_pair(correct_a, correct_b)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    return McNemarResult(a_only, b_only, binomial_two_sided_p(a_only, a_only + b_only))


class Interval(NamedTuple):
    """A statistic of the test split and its percentile bootstrap interval."""

    value: float
    low: float
    high: float
    level: float
    n_resamples: int


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float], n: int, *, n_resamples: int = N_RESAMPLES,
    level: float = CI_LEVEL, seed: int = SEED,
) -> Interval:
    """Return ``statistic(all images)`` with a percentile bootstrap interval over the images.

    ``statistic`` takes an index array into the ``n`` test images (resampled with replacement)
    and returns one number, e.g. the accuracy or the AUC of those rows. Resamples where it is
    NaN (an AUC on a draw missing a class) are dropped. Seeded: same inputs, same interval.

    Raises:
        ValueError: ``n`` < 1 or ``level`` outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError(f"need at least one test image, got {n}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_resamples)])
    values = values[~np.isnan(values)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail]) if values.size else (np.nan, np.nan)
    return Interval(float(statistic(np.arange(n))), float(low), float(high), level, n_resamples)
