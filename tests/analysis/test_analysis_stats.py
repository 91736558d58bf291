"""Paired bootstrap CI and McNemar's exact test on predictions with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tl.core.stats import bootstrap_interval, binomial_two_sided_p, mcnemar_exact, paired_bootstrap_ci


def test_identical_predictions_give_zero_difference_and_p_one():
    correct = np.random.default_rng(0).random(300) < 0.8
    ci = paired_bootstrap_ci(correct, correct)
    assert (ci.diff, ci.low, ci.high) == (0.0, 0.0, 0.0), f"identical models: {ci}"
    test = mcnemar_exact(correct, correct)
    assert (test.a_only, test.b_only, test.p_value) == (0, 0, 1.0), f"no discordant pairs: {test}"


def test_one_sided_disagreement_is_highly_significant():
    a = np.ones(200, dtype=bool)
    b = a.copy()
    b[:30] = False  # A right and B wrong on 30 images, never the other way round
    test = mcnemar_exact(a, b)
    assert (test.a_only, test.b_only) == (30, 0), test
    assert test.p_value == pytest.approx(2 * 0.5**30), "exact two-sided binomial p"
    assert test.p_value < 1e-8, "30:0 must be tiny"
    ci = paired_bootstrap_ci(a, b)
    assert ci.diff == pytest.approx(0.15), "30 of 200 images"
    assert ci.low > 0, f"the CI must exclude 0: {ci}"


def test_balanced_disagreement_is_not_significant():
    a = np.zeros(100, dtype=bool)
    b = np.zeros(100, dtype=bool)
    a[:10], b[10:20] = True, True
    test = mcnemar_exact(a, b)
    assert test.p_value == pytest.approx(1.0), "10:10 is exactly the null"
    ci = paired_bootstrap_ci(a, b)
    assert ci.low < 0 < ci.high, f"the CI must contain 0: {ci}"


def test_ci_contains_true_difference_and_narrows_with_n():
    rng = np.random.default_rng(42)
    n = 4000
    # Paired models: B is right wherever A is, plus on 25 % of A's errors: true diff -0.05.
    a = rng.random(n) < 0.80
    flip = rng.random(n) < 0.25
    b = a | (~a & flip)
    true_diff = 0.80 - (0.80 + 0.20 * 0.25)
    ci = paired_bootstrap_ci(a, b, n_resamples=2000, seed=1)
    assert ci.low <= true_diff <= ci.high, f"{true_diff} not in [{ci.low}, {ci.high}]"
    small = paired_bootstrap_ci(a[:400], b[:400], seed=1)
    assert (small.high - small.low) > (ci.high - ci.low), "fewer images must give a wider CI"


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(3)
    a, b = rng.random(250) < 0.7, rng.random(250) < 0.75
    assert paired_bootstrap_ci(a, b, seed=5) == paired_bootstrap_ci(a, b, seed=5), "not reproducible"


def test_binomial_p_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy not installed: cross-check skipped")
    for k, n in [(0, 0), (3, 10), (10, 10), (12, 40), (100, 180), (5, 624)]:
        expected = scipy_stats.binomtest(k, n, 0.5).pvalue if n else 1.0
        assert binomial_two_sided_p(k, n) == pytest.approx(expected, rel=1e-9), f"k={k}, n={n}"


def test_mismatched_vectors_are_rejected():
    with pytest.raises(ValueError, match="equal"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_ci(np.ones(3, bool), np.ones(3, bool), level=95)


def test_bootstrap_interval_of_one_accuracy_matches_the_normal_approximation():
    rng = np.random.default_rng(7)
    correct = rng.random(2000) < 0.9
    big = bootstrap_interval(lambda idx: correct[idx].mean(), correct.size, n_resamples=1000, seed=1)
    assert big.value == pytest.approx(correct.mean()) and big.low < big.value < big.high
    p = correct.mean()
    half_width = 1.96 * np.sqrt(p * (1 - p) / correct.size)
    assert (big.high - big.low) / 2 == pytest.approx(half_width, rel=0.2), big
    small = bootstrap_interval(lambda idx: correct[:200][idx].mean(), 200, n_resamples=1000, seed=1)
    assert small.high - small.low > 2 * (big.high - big.low), "10x fewer images: about 3x wider"
    again = bootstrap_interval(lambda idx: correct[idx].mean(), correct.size, n_resamples=1000, seed=1)
    assert again == big, "not reproducible"


def test_bootstrap_interval_drops_nan_resamples_and_rejects_no_images():
    # NaN on resamples without image 0 (like an AUC on a draw that misses a class)
    ci = bootstrap_interval(lambda idx: 1.0 if 0 in idx else float("nan"), 3, n_resamples=200, seed=0)
    assert (ci.value, ci.low, ci.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least one test image"):
        bootstrap_interval(lambda idx: 0.0, 0)
