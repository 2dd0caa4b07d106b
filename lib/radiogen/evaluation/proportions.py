"""Uncertainties of proportions: Wilson score intervals and McNemar's paired test.

Accuracies and per-class recalls of the morphology classifier are proportions
k / n of a few hundred images, some of them near 0 or 1.  There the usual
``p +- sqrt(p (1 - p) / n)`` fails (it has zero width at p = 0 or 1 and can
leave [0, 1]); the Wilson score interval (Wilson 1927) inverts the normal
score test instead and stays inside [0, 1] with close to nominal coverage.

Two guidance values sampled from the same latents (same seed, image indices
and conditioning: :mod:`radiogen.sampler.generate` draws the noise of image i
from the seed and i only) give paired outcomes, correct or not, per image.
McNemar's test uses only the discordant pairs: b images right at the first
value and wrong at the second, c the reverse; under the null hypothesis of
equal accuracy b is Binomial(b + c, 1/2).  It is far more sensitive than
comparing two independent proportions, because the shared latents cancel.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from radiogen.errors import RadiogenError

__all__ = ["ONE_SIGMA", "wilson_interval", "mcnemar_test"]

#: Two-sided coverage of a 1-sigma normal interval, 0.6827 (as the Poisson histogram bars).
ONE_SIGMA = float(scipy.stats.norm.cdf(1.0) - scipy.stats.norm.cdf(-1.0))


def wilson_interval(successes, trials, *, confidence: float = ONE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion.

    ``(p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n)`` with
    ``p = k / n`` and z the two-sided normal quantile of ``confidence``
    (Wilson 1927, JASA 22, 209).

    Parameters
    ----------
    successes, trials : array_like of int
        k and n (n >= 1, 0 <= k <= n).
    confidence : float, keyword-only
        Two-sided coverage, 1 sigma (0.6827) by default.

    Returns
    -------
    lower, upper : ndarray
        Bounds on the proportion, in [0, 1].
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise RadiogenError(f"Wilson interval needs 0 <= successes <= trials and trials >= 1, got {k} of {n}")
    if not 0.0 < confidence < 1.0:
        raise RadiogenError(f"confidence must lie in (0, 1), got {confidence}")
    z = scipy.stats.norm.ppf(0.5 + confidence / 2.0)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def mcnemar_test(correct_first, correct_second) -> dict:
    """McNemar's exact test of equal accuracy on paired outcomes.

    Parameters
    ----------
    correct_first, correct_second : array_like of bool
        Per image, whether the judge agreed with the requested class under the
        first and under the second setting (same images, same order).

    Returns
    -------
    dict
        ``n`` pairs; ``first_only`` (b: right at the first, wrong at the
        second) and ``second_only`` (c); ``p_exact``, the two-sided exact
        binomial p-value ``min(1, 2 P(X <= min(b, c)))`` with
        ``X ~ Binomial(b + c, 1/2)``; ``p_mid``, the mid-p value
        ``p_exact - P(X = min(b, c))`` (less conservative, closer to nominal
        size; Fagerland et al. 2013, BMC Med. Res. Methodol. 13, 91).  Both are
        1 when no pair is discordant.
    """
    first = np.asarray(correct_first, dtype=bool)
    second = np.asarray(correct_second, dtype=bool)
    if first.shape != second.shape or first.ndim != 1:
        raise RadiogenError(f"McNemar's test needs two paired 1-D outcome arrays, got {first.shape} and {second.shape}")
    b = int(np.sum(first & ~second))
    c = int(np.sum(~first & second))
    discordant = b + c
    if discordant == 0:
        p_exact = p_mid = 1.0
    else:
        low = min(b, c)
        tail = float(scipy.stats.binom.cdf(low, discordant, 0.5))
        at_low = float(scipy.stats.binom.pmf(low, discordant, 0.5))
        p_exact = min(1.0, 2.0 * tail)
        # mid-p: half the probability of the observed count on each side (1 when b = c, by symmetry).
        p_mid = min(1.0, 2.0 * tail - at_low)
    return {"n": int(first.size), "first_only": b, "second_only": c, "p_exact": p_exact, "p_mid": p_mid}
