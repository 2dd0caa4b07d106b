"""Distances between real and generated distributions (numbers beyond the paper's plots).

Two one-dimensional distances compare any scalar distribution (pixel values,
image mean, image std, PyBDSF model flux, A50%, Delta+):

* Wasserstein-1, ``W1(P, Q) = integral |F_P(x) - F_Q(x)| dx`` (area between the
  two empirical CDFs; in the unit of the quantity), via
  :func:`scipy.stats.wasserstein_distance`;
* the two-sample Kolmogorov-Smirnov statistic ``D = sup_x |F_P(x) - F_Q(x)|``
  (dimensionless, in [0, 1]) with its p-value, via :func:`scipy.stats.ks_2samp`.

A "noise floor" is the same distance between two disjoint, seeded halves of
the real data: a generated set cannot be told apart from the real one by a
distance at or below it.  (Each half has half the images, so the floor is
slightly pessimistic for W1 and KS, whose finite-sample bias shrinks as
``1/sqrt(n)``.)

The feature-space distance is the Frechet distance between Gaussian fits of
two sets of embeddings (Heusel et al. 2017, the "FID" when the features come
from Inception):
``FD = |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))``.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg
import scipy.stats

from radiogen.errors import RadiogenError

__all__ = [
    "one_d_distances",
    "split_halves",
    "frechet_distance",
    "gaussian_fit",
]

log = logging.getLogger(__name__)


def _finite(values, *, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise RadiogenError(f"distribution {name!r} has no finite values to compare")
    return values


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
        ``ks_pvalue``, ``n_a``, ``n_b`` (numbers of finite values used).
    """
    a = _finite(a, name=f"{name} (first sample)")
    b = _finite(b, name=f"{name} (second sample)")
    ks = scipy.stats.ks_2samp(a, b)
    return {
        "w1": float(scipy.stats.wasserstein_distance(a, b)),
        "ks": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "n_a": int(a.size),
        "n_b": int(b.size),
    }


def split_halves(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random halves of ``range(n)`` (sorted index arrays).

    With odd ``n`` the first half has one element fewer; one element is
    never dropped.
    """
    if n < 2:
        raise RadiogenError(f"need at least 2 items to split into halves, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half:])


def gaussian_fit(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and unbiased covariance matrix of ``features`` (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise RadiogenError(
            f"need a (N>=2, D) feature array for a Gaussian fit, got shape {features.shape}"
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu_a, cov_a, mu_b, cov_b, *, eps: float = 1e-6, imag_tol: float = 1e-3
) -> float:
    """Frechet distance between the Gaussians N(mu_a, cov_a) and N(mu_b, cov_b).

    ``FD = |mu_a - mu_b|^2 + Tr(C_a) + Tr(C_b) - 2 Tr((C_a C_b)^(1/2))``
    (Dowson & Landau 1982).  The matrix square root comes from
    :func:`scipy.linalg.sqrtm`.  With fewer samples than dimensions the
    covariances are singular and ``sqrtm`` can return non-finite values;
    then ``eps`` is added to both diagonals and the root is retried.  Round-off
    leaves small imaginary parts in the root; they are dropped when the
    largest is below ``imag_tol`` relative to the largest real entry, and are
    an error otherwise.

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
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(root)):
        log.warning("singular covariance product: adding %g to the diagonals", eps)
        offset = eps * np.eye(cov_a.shape[0])
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        scale = max(float(np.max(np.abs(root.real))), 1e-300)
        worst = float(np.max(np.abs(root.imag)))
        if worst > imag_tol * scale:
            raise RadiogenError(
                f"matrix square root has an imaginary part {worst:.3g} "
                f"(relative {worst / scale:.3g} > {imag_tol}): covariances not valid"
            )
        root = root.real
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root)
    return float(max(value, 0.0))
