"""Distances between real and generated distributions, with size-matched noise floors.

Two one-dimensional distances compare any scalar distribution (pixel values,
image mean, image std, PyBDSF model flux, A50%, Delta+):

* Wasserstein-1, ``W1(P, Q) = integral |F_P(x) - F_Q(x)| dx`` (area between the
  two empirical CDFs; in the unit of the quantity), via
  :func:`scipy.stats.wasserstein_distance`;
* the two-sample Kolmogorov-Smirnov statistic ``D = sup_x |F_P(x) - F_Q(x)|``
  (dimensionless, in [0, 1]), :func:`ks_statistic` (the statistic of
  :func:`scipy.stats.ks_2samp`, asked for its cheap asymptotic p-value only,
  since the exact one dominated the run time of the repeated partitions).

No KS p-value is reported, for any distribution.  Pixels of one image are
strongly correlated, so a p-value that counts pixels as independent draws
would be wildly overconfident; for per-image quantities it would be valid
but answers a question (can these sets be told apart at all?) that every
generated set of a few thousand images fails anyway.  The numbers to read are
the distances against their noise floor.

Noise floor, size-matched.  Under the null hypothesis (generated and real
images drawn from one distribution) W1 and KS between samples of n_a and n_b
values are not zero but scale as ``sqrt(1/n_a + 1/n_b)``, so a floor is only a
yardstick when it is measured at the sizes of the comparison it judges.
:func:`size_matched` therefore draws R seeded partitions of the N real items:
with ``m = min(M, N // 2)`` for M generated items, a reference part A of
``N - m`` real items and a held-out part B of ``m`` real items, plus a seeded
subsample of m items of every compared set (all of them when M = m).  Then
real-vs-generated is ``d(A, G_m)`` and the floor is ``d(A, B)``: both compare
A with m items, so under the null hypothesis they have one distribution.  The
medians over the R partitions are reported, and the floor's spread over them
estimates the spread of a single null draw.

Feature-space distances between classifier embeddings:

* the Frechet distance between Gaussian fits (Heusel et al. 2017, the "FID"
  when the features come from Inception),
  ``FD = |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, computed by
  :func:`reference_frechet_distance` in the top k principal components of
  the reference set A (k fixed beforehand, fewer than the compared set's
  images).  In all D dimensions with fewer images than dimensions (40 or 200
  images, D = 512) the plug-in value is dominated by each set's own
  covariance trace, ``Tr(C_a) + Tr(C_b)``, since the two rank-deficient
  covariances barely overlap; partitions of one real pool keep
  ``Tr(C_A) + Tr(C_B)`` nearly fixed (A and B always make up the pool), so the
  floor's spread missed how much that term varies between independent sets
  and the z was not calibrated (held-out real FIRST images: z = 4.3).  In k
  dimensions, with more images than dimensions, the trace terms cancel to
  first order against the root term and what remains are differences of
  means and covariances, whose spread the partitions do measure.  Both
  compared parts (B and the generated images) are out of the sample that
  chose the components, so the projection treats them alike.  The plug-in
  estimate is still biased upwards by an amount that depends on the set
  sizes (Binkowski et al. 2018, Sect. 4); the size-matched floor makes that
  bias the same on both sides, but the value itself has no meaning across
  set sizes;
* the Kernel Inception Distance (Binkowski et al. 2018, Sect. 4): the
  unbiased estimate of the squared maximum mean discrepancy ``MMD^2`` with
  the cubic polynomial kernel ``k(x, y) = (x . y / d + 1)^3``.  Its
  expectation is exactly 0 for equal distributions at any set size (a value
  can be negative), so it is the feature distance to read; its floor is about
  0 and the floor's spread is the yardstick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.stats

from radiogen.errors import RadiogenError

__all__ = [
    "ks_statistic",
    "one_d_distances",
    "MatchedSplit",
    "size_matched_splits",
    "size_matched",
    "take_rows",
    "frechet_distance",
    "gaussian_fit",
    "reference_frechet_distance",
    "polynomial_kernel",
    "mmd2_unbiased",
    "kernel_inception_distance",
]

log = logging.getLogger(__name__)


def _finite(values, *, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise RadiogenError(f"distribution {name!r} has no finite values to compare")
    return values


def ks_statistic(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic ``D = sup_x |F_a(x) - F_b(x)|`` of finite samples.

    :func:`scipy.stats.ks_2samp` with its asymptotic p-value, which is cheap;
    its exact p-value would dominate the run time of the repeated partitions.
    """
    return float(scipy.stats.ks_2samp(np.ravel(a), np.ravel(b), method="asymp").statistic)


def one_d_distances(a, b, *, name: str = "values") -> dict:
    """Wasserstein-1 and Kolmogorov-Smirnov distance between two samples.

    Parameters
    ----------
    a, b : array_like
        Samples of one scalar quantity (any shape; flattened, non-finite
        values dropped).
    name : str, keyword-only
        Name of the quantity, for error messages.

    Returns
    -------
    dict
        ``w1`` (unit of the quantity), ``ks`` (statistic D in [0, 1]),
        ``n_a``, ``n_b`` (numbers of finite values used).  No p-value: see
        the module docstring.
    """
    a = _finite(a, name=f"{name} (first sample)")
    b = _finite(b, name=f"{name} (second sample)")
    return {
        "w1": float(scipy.stats.wasserstein_distance(a, b)),
        "ks": ks_statistic(a, b),
        "n_a": int(a.size),
        "n_b": int(b.size),
    }


@dataclass(frozen=True)
class MatchedSplit:
    """One seeded partition of a size-matched comparison (sorted row indices).

    Attributes
    ----------
    reference : ndarray
        Rows of the real set in the reference part A (``N - m`` rows).
    held_out : ndarray
        Rows of the real set in the held-out part B (``m`` rows).
    others : tuple of ndarray
        Rows of each compared set (``m`` rows each).
    """

    reference: np.ndarray
    held_out: np.ndarray
    others: tuple[np.ndarray, ...]


def size_matched_splits(n_real: int, n_others: Sequence[int], *, repeats: int, seed: int) -> list[MatchedSplit]:
    """Seeded partitions of the real set matched to the smallest compared set.

    Parameters
    ----------
    n_real : int
        Number N of real items.
    n_others : sequence of int
        Sizes of the compared sets (generated, classical, ...).
    repeats : int, keyword-only
        Number R of partitions.
    seed : int, keyword-only
        Partition r uses ``numpy.random.default_rng([seed, r])``.

    Returns
    -------
    list of MatchedSplit
        With ``m = min(min(n_others), N // 2)``: A has ``N - m >= m`` real
        rows, B the other m, and every compared set m rows (a seeded
        subsample where it is larger, all rows otherwise).
    """
    if repeats < 1:
        raise RadiogenError(f"need at least one partition, got repeats={repeats}")
    if not n_others:
        raise RadiogenError("size-matched comparison needs at least one compared set")
    m = min(min(int(n) for n in n_others), int(n_real) // 2)
    if m < 1:
        raise RadiogenError(
            f"cannot size-match {n_real} real items against sets of {list(n_others)} items: "
            "need at least 2 real items and 1 compared item"
        )
    splits = []
    for r in range(repeats):
        rng = np.random.default_rng([int(seed), r])
        order = rng.permutation(int(n_real))
        others = tuple(
            np.sort(rng.choice(int(n), size=m, replace=False)) if n > m else np.arange(int(n)) for n in n_others
        )
        splits.append(MatchedSplit(reference=np.sort(order[m:]), held_out=np.sort(order[:m]), others=others))
    return splits


def take_rows(data, rows):
    """Rows of an array, or of every array in a dict of row-aligned arrays."""
    if isinstance(data, dict):
        return {key: value[rows] for key, value in data.items()}
    return np.asarray(data)[rows]


def _n_rows(data) -> int:
    if isinstance(data, dict):
        sizes = {len(value) for value in data.values()}
        if len(sizes) != 1:
            raise RadiogenError(f"row-aligned arrays differ in length: {sorted(sizes)}")
        return sizes.pop()
    return len(data)


def size_matched(
    metric: Callable[[object, object], dict],
    real,
    others: Sequence,
    *,
    repeats: int,
    seed: int,
) -> dict:
    """Size-matched comparisons of a real set with other sets, and the floor.

    Parameters
    ----------
    metric : callable
        ``metric(a, b) -> dict of floats`` (several distances at once).
    real, others : array or dict of row-aligned arrays
        The real set and the compared sets (rows are items).
    repeats, seed : int, keyword-only
        See :func:`size_matched_splits`.

    Returns
    -------
    dict
        ``floor``: {name: (R,) values of ``metric(A, B)``}; ``others``: one
        {name: (R,) values of ``metric(A, other subsample)``} per compared
        set; ``n_reference`` (N - m), ``n_compared`` (m), ``repeats`` (R).
    """
    splits = size_matched_splits(_n_rows(real), [_n_rows(o) for o in others], repeats=repeats, seed=seed)
    floor: list[dict] = []
    compared: list[list[dict]] = [[] for _ in others]
    for split in splits:
        reference = take_rows(real, split.reference)
        floor.append(metric(reference, take_rows(real, split.held_out)))
        for k, (other, rows) in enumerate(zip(others, split.others)):
            compared[k].append(metric(reference, take_rows(other, rows)))

    def stack(values: list[dict]) -> dict:
        return {name: np.array([v[name] for v in values], dtype=np.float64) for name in values[0]}

    return {
        "floor": stack(floor),
        "others": [stack(c) for c in compared],
        "n_reference": int(splits[0].reference.size),
        "n_compared": int(splits[0].held_out.size),
        "repeats": len(splits),
    }


def gaussian_fit(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and unbiased covariance matrix of ``features`` (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise RadiogenError(
            f"need a (N>=2, D) feature array for a Gaussian fit, got shape {features.shape}"
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu_a, cov_a, mu_b, cov_b, *, negative_tol: float = 1e-6) -> float:
    """Frechet distance between the Gaussians N(mu_a, cov_a) and N(mu_b, cov_b).

    ``FD = |mu_a - mu_b|^2 + Tr(C_a) + Tr(C_b) - 2 Tr((C_a C_b)^(1/2))``
    (Dowson & Landau 1982).  The trace of the root is computed without a
    general matrix square root: with ``R = C_a^(1/2)`` (symmetric),
    ``C_a C_b`` is similar to the symmetric positive semi-definite
    ``R C_b R``, so ``Tr((C_a C_b)^(1/2))`` is the sum of the square roots of
    its eigenvalues.  That stays exact and real for the singular covariances
    of fewer samples than dimensions, where ``scipy.linalg.sqrtm`` of the
    product returns round-off imaginary parts of several per cent.

    Parameters
    ----------
    negative_tol : float, keyword-only
        Eigenvalues of a covariance below ``-negative_tol`` times its largest
        mean the input is not a covariance matrix: an error.  Smaller negative
        values are round-off and count as 0.

    Returns
    -------
    float
        The distance, in squared units of the features; clipped at 0 where
        round-off makes it slightly negative.
    """
    mu_a = np.atleast_1d(np.asarray(mu_a, dtype=np.float64))
    mu_b = np.atleast_1d(np.asarray(mu_b, dtype=np.float64))
    cov_a = np.atleast_2d(np.asarray(cov_a, dtype=np.float64))
    cov_b = np.atleast_2d(np.asarray(cov_b, dtype=np.float64))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size,) * 2:
        raise RadiogenError(
            f"inconsistent Gaussian shapes: means {mu_a.shape} and {mu_b.shape}, "
            f"covariances {cov_a.shape} and {cov_b.shape}"
        )
    for name, cov in (("first", cov_a), ("second", cov_b)):
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * max(float(np.abs(cov).max()), 1e-300)):
            raise RadiogenError(f"the {name} covariance matrix is not symmetric")
    values, vectors = np.linalg.eigh(cov_a)
    scale = max(float(np.abs(values).max()), 1e-300)
    if values.min() < -negative_tol * scale:
        raise RadiogenError(f"the first covariance matrix has a negative eigenvalue {values.min():.3g}")
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T  # C_a^(1/2)
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)  # eigenvalues of C_a C_b
    inner_scale = max(float(np.abs(inner).max()), 1e-300)
    if inner.min() < -negative_tol * inner_scale:
        raise RadiogenError(f"the second covariance matrix is not positive semi-definite "
                            f"(eigenvalue {inner.min():.3g} of C_a^1/2 C_b C_a^1/2)")
    trace_root = float(np.sum(np.sqrt(np.clip(inner, 0.0, None))))
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    return float(max(value, 0.0))


def reference_frechet_distance(reference, compared, *, components: int) -> float:
    """Frechet distance of two embedding sets in the top principal components of the first.

    The axes are the ``k`` leading principal components of ``reference``
    (centred at its mean), ``k = min(components, D, n_reference - 1,
    n_compared - 1)``, so that both Gaussian fits have full rank in them;
    both sets are projected on them and compared with
    :func:`frechet_distance`.  In a size-matched comparison the reference is
    the real part A and both compared sets (the held-out part B, the
    generated images) are out of the sample that chose the axes.

    Parameters
    ----------
    reference, compared : array_like
        Embeddings (n_reference, D) and (n_compared, D), both n >= 2.
    components : int, keyword-only
        Largest number k of principal components (>= 1).

    Returns
    -------
    float
        The distance in squared embedding units, within the k-dimensional
        subspace (directions outside it are not seen; the KID sees them).
    """
    reference = np.asarray(reference, dtype=np.float64)
    compared = np.asarray(compared, dtype=np.float64)
    if reference.ndim != 2 or compared.ndim != 2 or reference.shape[1] != compared.shape[1]:
        raise RadiogenError(f"need two (n, D) embedding arrays of one dimension, got {reference.shape} and {compared.shape}")
    if components < 1:
        raise RadiogenError(f"the Frechet distance needs at least one principal component, got {components}")
    if len(reference) < 2 or len(compared) < 2:
        raise RadiogenError(f"need at least 2 embeddings per set, got {len(reference)} and {len(compared)}")
    k = min(int(components), reference.shape[1], len(reference) - 1, len(compared) - 1)
    centre = reference.mean(axis=0)
    # Principal axes of the reference: the leading right singular vectors of its centred rows.
    _, _, axes = np.linalg.svd(reference - centre, full_matrices=False)
    basis = axes[:k].T
    return frechet_distance(*gaussian_fit((reference - centre) @ basis), *gaussian_fit((compared - centre) @ basis))


def polynomial_kernel(x, y) -> np.ndarray:
    """Cubic polynomial kernel matrix ``k(x, y) = (x . y / d + 1)^3`` of KID.

    ``x`` (n, d) and ``y`` (m, d); returns (n, m) in float64.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    # k(x, y) = (x.y / d + 1)^3, Binkowski et al. (2018), Sect. 4 (KID kernel).
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y, *, kernel: Callable = polynomial_kernel) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy between two samples.

    ``MMD_u^2 = sum_{i!=j} k(x_i, x_j) / (n (n-1)) + sum_{i!=j} k(y_i, y_j) / (m (m-1))
    - 2 sum_{i,j} k(x_i, y_j) / (n m)`` (Gretton et al. 2012, JMLR 13, Lemma 6).
    Leaving out the diagonal terms makes it unbiased; it can be negative.

    Parameters
    ----------
    x, y : array_like
        Samples (n, d) and (m, d), n, m >= 2.
    kernel : callable, keyword-only
        Kernel matrix function; the KID's cubic polynomial by default.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise RadiogenError(f"need two (n>=2, d) samples of one dimension, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    # MMD_u^2: within-sample means without the diagonal i = j (Gretton et al. 2012, Lemma 6).
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(
    a, b, *, subset_size: int = 1000, subsets: int = 20, rng: np.random.Generator
) -> float:
    """Kernel Inception Distance: unbiased ``MMD^2`` with the cubic polynomial kernel.

    Sets no larger than ``subset_size`` are compared whole (one exact
    unbiased estimate).  Larger ones, as in Binkowski et al. (2018), are
    compared in ``subsets`` pairs of random subsets of ``subset_size`` rows
    each (drawn without replacement within a subset); the mean of unbiased
    estimates stays unbiased, and the cost drops from O(N^2 d) to
    O(subsets subset_size^2 d).

    Parameters
    ----------
    a, b : array_like
        Embeddings (n, d) and (m, d).
    subset_size, subsets : int, keyword-only
        Rows per subset and number of subset pairs.
    rng : numpy.random.Generator, keyword-only
        Source of the subsets.

    Returns
    -------
    float
        KID in squared kernel-feature units; expectation 0 for equal
        distributions.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if subset_size < 2 or subsets < 1:
        raise RadiogenError(f"KID needs subset_size >= 2 and subsets >= 1, got {subset_size} and {subsets}")
    if len(a) <= subset_size and len(b) <= subset_size:
        return mmd2_unbiased(a, b)
    values = []
    for _ in range(subsets):
        sub_a = a[rng.choice(len(a), size=min(subset_size, len(a)), replace=False)]
        sub_b = b[rng.choice(len(b), size=min(subset_size, len(b)), replace=False)]
        values.append(mmd2_unbiased(sub_a, sub_b))
    return float(np.mean(values))
