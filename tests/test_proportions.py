"""Wilson score intervals and McNemar's paired test against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from radiogen.errors import RadiogenError
from radiogen.evaluation.proportions import ONE_SIGMA, mcnemar_test, wilson_interval


def test_wilson_interval_by_hand_at_one_sigma():
    # z = 1: 3 of 4 -> centre (0.75 + 1/8) / 1.25 = 0.7, half-width sqrt(3/64 + 1/64) / 1.25 = 0.2.
    assert ONE_SIGMA == pytest.approx(0.682689, abs=1e-6)
    low, high = wilson_interval(3, 4)
    assert (float(low), float(high)) == pytest.approx((0.5, 0.9), abs=1e-6)
    # 5 of 5: centre 1.1 / 1.2, half-width 0.1 / 1.2; 0 of 1: [0, 0.5]. Never a zero width at 0 or 1.
    low, high = wilson_interval([5, 0], [5, 1])
    np.testing.assert_allclose(low, [1 / 1.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(high, [1.0, 0.5], atol=1e-6)


@pytest.mark.parametrize("k, n", [(0, 200), (1, 200), (163, 200), (199, 200), (50, 50), (17, 40)])
@pytest.mark.parametrize("confidence", [ONE_SIGMA, 0.95])
def test_wilson_interval_matches_scipy(k, n, confidence):
    expected = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence=confidence)
    assert float(low) == pytest.approx(expected.low, abs=1e-12)
    assert float(high) == pytest.approx(expected.high, abs=1e-12)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(RadiogenError, match="successes"):
        wilson_interval(5, 4)
    with pytest.raises(RadiogenError, match="trials"):
        wilson_interval(0, 0)


def test_mcnemar_exact_p_is_the_binomial_test_of_discordant_pairs():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(20, 300))
        first = rng.random(n) < rng.uniform(0.3, 0.9)
        second = np.where(rng.random(n) < 0.8, first, rng.random(n) < 0.6)
        result = mcnemar_test(first, second)
        b, c = int(np.sum(first & ~second)), int(np.sum(~first & second))
        assert (result["first_only"], result["second_only"], result["n"]) == (b, c, n)
        if b + c == 0:
            assert result["p_exact"] == result["p_mid"] == 1.0
            continue
        assert result["p_exact"] == pytest.approx(scipy.stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
        # mid-p: the exact p less the probability of the observed split itself.
        low = min(b, c)
        expected_mid = min(1.0, 2 * scipy.stats.binom.cdf(low, b + c, 0.5) - scipy.stats.binom.pmf(low, b + c, 0.5))
        assert result["p_mid"] == pytest.approx(expected_mid, rel=1e-12)
        assert result["p_mid"] <= result["p_exact"]


def test_mcnemar_known_values_and_symmetry():
    # 10 discordant pairs, all one way: p = 2 / 2^10; mid-p = 1 / 2^10.
    first = np.array([True] * 10 + [True] * 30 + [False] * 5)
    second = np.array([False] * 10 + [True] * 30 + [False] * 5)
    result = mcnemar_test(first, second)
    assert result["p_exact"] == pytest.approx(2 / 1024) and result["p_mid"] == pytest.approx(1 / 1024)
    swapped = mcnemar_test(second, first)
    assert (swapped["first_only"], swapped["second_only"]) == (0, 10) and swapped["p_exact"] == result["p_exact"]
    # Equal discordant counts: no evidence either way.
    balanced = mcnemar_test([True, False, True], [False, True, True])
    assert balanced["p_exact"] == 1.0 and balanced["p_mid"] == pytest.approx(1.0)
    with pytest.raises(RadiogenError, match="paired"):
        mcnemar_test([True, False], [True])
