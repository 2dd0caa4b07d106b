"""Signal-to-noise proxy S/N_sigma of the paper (Vicanek Martinez et al. 2024, Sect. 3.1).

For one image x (min-max scaled to [0, 1]):

1. median m and standard deviation sigma of x from iterative sigma clipping with
   the semantics of :func:`astropy.stats.sigma_clipped_stats` (centre = median,
   spread = population std, keep ``m - k sigma <= x <= m + k sigma``, iterate on the
   surviving pixels until nothing changes or ``maxiters``; the final statistics are
   taken over all pixels inside the last bounds);
2. source pixels x_src = x > m + tau sigma (paper Eq. 9), with tau starting at
   ``tau_start`` and lowered by ``tau_step`` until at least one pixel qualifies;
   background x_bg = all other pixels;
3. S/N_sigma = mean(x_src) / mean(x_bg) (paper Eq. 10).

:func:`snr_sigma_batch` does this for a whole batch at once.  Because clipping
always keeps a value *interval*, each image is sorted once; every clipping
iteration is then a median lookup, a prefix-sum mean/variance and a vectorised
binary search for the new interval ends, i.e. O(log P) work per image and
iteration instead of O(P).  :func:`snr_sigma_reference` is the literal per-image
version on top of astropy, used by the tests to show both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SnrResult",
    "fill_nan_with_min",
    "minmax_scale",
    "sigma_clipped_median_std",
    "snr_sigma_batch",
    "snr_sigma_reference",
]


@dataclass(frozen=True)
class SnrResult:
    """Per-image output of :func:`snr_sigma_batch` (arrays of shape (B,)).

    Attributes
    ----------
    snr_sigma : numpy.ndarray
        S/N_sigma = mean(source)/mean(background); NaN where undefined
        (constant image, no background pixel, or background mean <= 0).
    tau : numpy.ndarray
        Threshold factor finally used for the source mask.
    median, std : numpy.ndarray
        Sigma-clipped median and std of the min-max scaled image (units of the
        scaled image, i.e. fractions of max - min).
    n_source : numpy.ndarray
        Number of source pixels.
    """

    snr_sigma: np.ndarray
    tau: np.ndarray
    median: np.ndarray
    std: np.ndarray
    n_source: np.ndarray


def fill_nan_with_min(images: np.ndarray, *, dtype=np.float64) -> np.ndarray:
    """Copy of ``images`` (B, H, W) as ``dtype`` with NaN/inf set to each image's finite minimum.

    This is the paper's treatment of blanked pixels; images without any finite
    pixel stay all-NaN.
    """
    out = np.array(images, dtype=dtype, copy=True)
    bad = ~np.isfinite(out)
    if bad.any():
        flat = out.reshape(len(out), -1)
        badf = bad.reshape(len(out), -1)
        low = np.where(badf, np.inf, flat).min(axis=1)
        low[~np.isfinite(low)] = np.nan
        np.copyto(flat, np.broadcast_to(low[:, None], flat.shape), where=badf)
    return out


def minmax_scale(images: np.ndarray) -> np.ndarray:
    """Scale each image of a (B, ...) float array to [0, 1]: (x - min) / (max - min).

    Constant images give NaN (division by zero is what makes them "broken").
    """
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((flat - low) / span).reshape(np.shape(images))


def _lower_bound(sorted_rows, values, *, strict: bool, rows=None) -> np.ndarray:
    """Per row, the number of entries ``< values`` (strict) or ``<= values``.

    Vectorised binary search over the rows ``rows`` (default all) of an
    ascending (B, P) array; indexing rows instead of copying them keeps each
    call O(len(rows) log P).
    """
    n_cols = sorted_rows.shape[1]
    if rows is None:
        rows = np.arange(len(sorted_rows))
    n_rows = len(rows)
    lo = np.zeros(n_rows, dtype=np.int64)
    hi = np.full(n_rows, n_cols, dtype=np.int64)
    for _ in range(int(np.ceil(np.log2(n_cols + 1))) + 1):
        active = lo < hi
        if not active.any():
            break
        mid = np.minimum((lo + hi) // 2, n_cols - 1)
        v = sorted_rows[rows, mid]
        go_right = (v < values) if strict else (v <= values)
        go_right &= active
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
    return lo


def _interval_stats(s, cs1, cs2, shift, a, b, rows=None):
    """Median, mean and population std of sorted entries [a, b) of rows ``rows``."""
    if rows is None:
        rows = np.arange(len(s))
    n = b - a
    safe_n = np.maximum(n, 1)
    i_lo = np.clip(a + (n - 1) // 2, 0, s.shape[1] - 1)
    i_hi = np.clip(a + n // 2, 0, s.shape[1] - 1)
    median = 0.5 * (s[rows, i_lo] + s[rows, i_hi])
    sum1 = cs1[rows, b] - cs1[rows, a]
    sum2 = cs2[rows, b] - cs2[rows, a]
    mean_shifted = sum1 / safe_n
    var = np.maximum(sum2 / safe_n - mean_shifted**2, 0.0)
    empty = n <= 0
    median = np.where(empty, np.nan, median)
    return median, mean_shifted + shift[rows], np.where(empty, np.nan, np.sqrt(var))


def _sorted_with_prefix_sums(flat: np.ndarray):
    return _prefix_sums(np.sort(flat, axis=1))


def _prefix_sums(s: np.ndarray):
    n_cols = s.shape[1]
    # Shifting by the row median keeps the prefix sums of squares small, so
    # sum2/n - mean^2 does not lose digits to cancellation.
    shift = 0.5 * (s[:, (n_cols - 1) // 2] + s[:, n_cols // 2])
    d = s - shift[:, None]
    cs1 = np.zeros((len(s), n_cols + 1))
    cs2 = np.zeros((len(s), n_cols + 1))
    np.cumsum(d, axis=1, out=cs1[:, 1:])
    np.cumsum(d * d, axis=1, out=cs2[:, 1:])
    return s, cs1, cs2, shift


def _clip(s, cs1, cs2, shift, *, sigma: float, maxiters: int):
    """Iterative clipping on sorted rows; returns final (a, b) and bounds."""
    n_rows, n_cols = s.shape
    a = np.zeros(n_rows, dtype=np.int64)
    b = np.full(n_rows, n_cols, dtype=np.int64)
    lo_bound = np.full(n_rows, -np.inf)
    hi_bound = np.full(n_rows, np.inf)
    changing = np.ones(n_rows, dtype=bool)
    for _ in range(maxiters):
        if not changing.any():
            break
        idx = np.nonzero(changing)[0]
        median, _, std = _interval_stats(s, cs1, cs2, shift, a[idx], b[idx], rows=idx)
        lo_b = median - sigma * std
        hi_b = median + sigma * std
        lo_bound[idx] = lo_b
        hi_bound[idx] = hi_b
        new_a = np.maximum(a[idx], _lower_bound(s, lo_b, strict=True, rows=idx))
        new_b = np.minimum(b[idx], _lower_bound(s, hi_b, strict=False, rows=idx))
        changed = (new_a != a[idx]) | (new_b != b[idx])
        a[idx] = new_a
        b[idx] = new_b
        changing[idx] = changed
    # As in astropy, the statistics use every pixel inside the last bounds,
    # not only the survivors of the successive iterations.
    a = _lower_bound(s, lo_bound, strict=True)
    b = _lower_bound(s, hi_bound, strict=False)
    return a, b


def sigma_clipped_median_std(
    images: np.ndarray, *, sigma: float = 3.0, maxiters: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped median and std of each image, vectorised over the batch.

    Parameters
    ----------
    images : numpy.ndarray
        (B, ...) finite values.
    sigma : float, keyword-only
        Clipping half-width in units of the std (astropy ``sigma``).
    maxiters : int, keyword-only
        Maximum clipping iterations (astropy ``maxiters``).

    Returns
    -------
    median, std : numpy.ndarray
        (B,) as :func:`astropy.stats.sigma_clipped_stats` would give per image.
    """
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    s, cs1, cs2, shift = _sorted_with_prefix_sums(flat)
    a, b = _clip(s, cs1, cs2, shift, sigma=sigma, maxiters=maxiters)
    median, _, std = _interval_stats(s, cs1, cs2, shift, a, b)
    return median, std


def snr_sigma_batch(
    images: np.ndarray,
    *,
    tau_start: float = 5.0,
    tau_step: float = 0.5,
    clip_sigma: float = 3.0,
    clip_maxiters: int = 5,
    max_tau_steps: int = 1000,
    block_size: int = 512,
) -> SnrResult:
    """S/N_sigma for a batch of images, vectorised (see module docstring).

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W) raw images (any units); NaNs are set to the image minimum
        first and each image is then min-max scaled to [0, 1].
    tau_start, tau_step : float, keyword-only
        Initial source threshold factor tau and its decrement (paper: 5, 0.5).
    clip_sigma, clip_maxiters : keyword-only
        Sigma-clipping settings (astropy defaults 3 and 5).
    max_tau_steps : int, keyword-only
        Safety cap on tau decrements; images that never get a source pixel
        (only possible for constant images) get NaN.
    block_size : int, keyword-only
        Images processed together; ~0.2 MB of float64 work space per image, so
        the default keeps the working set near 100 MB whatever B is.

    Returns
    -------
    SnrResult
    """
    if tau_step <= 0:
        raise ValueError(f"tau_step must be > 0, got {tau_step}")
    images = np.asarray(images)
    options = dict(
        tau_start=tau_start,
        tau_step=tau_step,
        clip_sigma=clip_sigma,
        clip_maxiters=clip_maxiters,
        max_tau_steps=max_tau_steps,
    )
    parts = [
        _snr_block(images[i : i + block_size], **options)
        for i in range(0, len(images), max(int(block_size), 1))
    ]
    if not parts:
        empty = np.zeros(0)
        return SnrResult(empty, empty, empty, empty, np.zeros(0, dtype=np.int64))
    return SnrResult(*(np.concatenate([getattr(p, f) for p in parts]) for f in SnrResult.__dataclass_fields__))


def _snr_block(images, *, tau_start, tau_step, clip_sigma, clip_maxiters, max_tau_steps):
    n_images = len(images)
    work_dtype = np.float32 if images.dtype == np.float32 else np.float64
    raw = fill_nan_with_min(images, dtype=work_dtype).reshape(n_images, -1)
    # Min-max scaling is increasing, so sorting the raw pixels (float32 sorts
    # twice as fast) and scaling the sorted rows in float64 gives bit-for-bit
    # the sorted scaled image.
    s = np.sort(raw, axis=1).astype(np.float64)
    low = s[:, :1].copy()
    span = s[:, -1:] - low
    usable = (np.isfinite(low) & np.isfinite(span) & (span > 0))[:, 0]
    s = np.divide(s - low, span, out=np.zeros_like(s), where=usable[:, None])
    s, cs1, cs2, shift = _prefix_sums(s)
    a, b = _clip(s, cs1, cs2, shift, sigma=clip_sigma, maxiters=clip_maxiters)
    median, _, std = _interval_stats(s, cs1, cs2, shift, a, b)

    n_cols = s.shape[1]
    top = s[:, -1]
    tau = np.full(n_images, float(tau_start))
    pending = usable & ~(top > median + tau * std)
    for _ in range(max_tau_steps):
        if not pending.any():
            break
        tau[pending] -= tau_step
        pending &= ~(top > median + tau * std)
    found = usable & ~pending

    threshold = median + tau * std
    n_bg = _lower_bound(s, threshold, strict=False)
    n_src = n_cols - n_bg
    rows = np.arange(n_images)
    sum_bg = cs1[rows, n_bg] + n_bg * shift
    sum_all = cs1[:, -1] + n_cols * shift
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_bg = sum_bg / n_bg
        mean_src = (sum_all - sum_bg) / n_src
        snr = mean_src / mean_bg
    snr = np.where(found & (n_bg > 0) & (n_src > 0) & (mean_bg > 0), snr, np.nan)
    median = np.where(usable, median, np.nan)
    std = np.where(usable, std, np.nan)
    tau = np.where(found, tau, np.nan)
    return SnrResult(
        snr_sigma=snr, tau=tau, median=median, std=std, n_source=np.where(found, n_src, 0)
    )


def snr_sigma_reference(
    image: np.ndarray,
    *,
    tau_start: float = 5.0,
    tau_step: float = 0.5,
    clip_sigma: float = 3.0,
    clip_maxiters: int = 5,
) -> tuple[float, float, float, float]:
    """Per-image S/N_sigma with astropy's ``sigma_clipped_stats`` (slow reference).

    Returns
    -------
    snr_sigma, tau, median, std : float
    """
    from astropy.stats import sigma_clipped_stats

    x = minmax_scale(fill_nan_with_min(np.asarray(image)[None]))[0]
    if not np.isfinite(x).all():
        return float("nan"), float("nan"), float("nan"), float("nan")
    _, median, std = sigma_clipped_stats(x, sigma=clip_sigma, maxiters=clip_maxiters)
    tau = float(tau_start)
    while not (x > median + tau * std).any():
        tau -= tau_step
    source = x > median + tau * std
    if source.all() or x[~source].mean() <= 0:
        return float("nan"), tau, float(median), float(std)
    return float(x[source].mean() / x[~source].mean()), tau, float(median), float(std)
