"""Similarity of generated images to the training set (paper Appendix A).

Steps, as in Vicanek Martinez et al. (2024, App. A):

1. **Alignment.**  Every image is rotated so that the principal axis of its
   bright pixels is horizontal.  Bright pixels are those above
   ``tau_PCA = median_x + k * sigma_x``, where the median and sigma_x come
   from :func:`astropy.stats.sigma_clipped_stats` as for the paper's
   S/N_sigma (Sect. 3.1), and k starts at ``n_sigma`` (default 5, the
   S/N_sigma starting threshold) and drops by 0.5 while fewer than 3 pixels
   exceed it.  The equation of tau_PCA did not survive in the paper's text,
   so this is our reading, and ``n_sigma`` is a setting.  The principal axis
   is the leading eigenvector of the 2x2 covariance of the bright pixels'
   (x, y) coordinates (PCA, Pearson 1901).  By default each pixel is
   weighted by its value above tau_PCA: on smooth, low-noise backgrounds
   scattered faint pixels pass the threshold and, unweighted, drag the axis
   towards the image diagonal; ``weights="none"`` gives the unweighted PCA.
   The rotation is about the image centre, bilinear, and fills the corners
   with the image's median (background) so that no artificial zero-valued
   wedges enter the SSIM.
2. **SSIM** (Wang et al. 2004) between every generated image and every
   training image,
   ``SSIM(x, y) = (2 mu_x mu_y + c1)(2 sigma_xy + c2) /
   ((mu_x^2 + mu_y^2 + c1)(sigma_x^2 + sigma_y^2 + c2))``
   with c1 = 1e-4 and c2 = 9e-4 (i.e. (0.01 L)^2 and (0.03 L)^2 for the data
   range L = 1).  The paper defines mu, sigma^2 and sigma_xy as the mean,
   variance and covariance of the *whole* images, so the default window is
   ``"global"``: one SSIM per pair from image-wide moments, which turns the
   all-pairs problem into one matrix product per batch.  The locally
   windowed SSIM of Wang et al. (mean of the SSIM map over an 11x11 Gaussian
   window with sigma = 1.5 px, or a 7x7 uniform window; "valid" region only)
   is available as ``window="gaussian"``/``"uniform"`` for small sets.
3. Because the principal axis has no direction, aligned images can still
   differ by a mirror flip; with ``flips=True`` a pair's similarity is the
   largest SSIM over the four mirror images (identity, left-right, up-down,
   both) of the generated image.
4. **Memorisation number:** the fraction of generated images whose nearest
   training SSIM exceeds the 99th percentile of the nearest SSIM between two
   distinct training images.  For images drawn from the training
   distribution but not copied from it this is about 1% by construction.
"""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import scipy.ndimage
import torch
from astropy.stats import sigma_clipped_stats

from radiogen.errors import RadiogenError
from radiogen.progress import Progress

__all__ = [
    "SSIM_C1",
    "SSIM_C2",
    "pca_threshold",
    "principal_angle",
    "align_images",
    "ssim_global",
    "ssim_windowed",
    "nearest_training",
    "reference_nearest",
    "memorisation_number",
    "plot_nearest",
]

log = logging.getLogger(__name__)

#: Stabilising constants of the paper: (0.01 L)^2 and (0.03 L)^2 for L = 1.
SSIM_C1 = 1e-4
SSIM_C2 = 9e-4


def pca_threshold(images, *, n_sigma: float = 5.0, sigma: float = 3.0, min_pixels: int = 3) -> np.ndarray:
    """tau_PCA = median + k * std per image, from sigma-clipped statistics.

    As for the paper's S/N_sigma source region, k starts at ``n_sigma`` and is
    lowered in steps of 0.5 (not below 0) until at least ``min_pixels``
    pixels exceed the threshold.

    Parameters
    ----------
    images : array_like, shape (N, H, W)
    n_sigma : float, keyword-only
        Starting multiple of the clipped standard deviation above the clipped median.
    sigma : float, keyword-only
        Clipping threshold of :func:`astropy.stats.sigma_clipped_stats`.
    min_pixels : int, keyword-only
        Pixels needed above the threshold for a principal axis.

    Returns
    -------
    numpy.ndarray, shape (N,)
    """
    images = np.asarray(images, dtype=np.float64)
    _, median, std = sigma_clipped_stats(images, sigma=sigma, axis=(1, 2))
    k = np.full(len(images), float(n_sigma))
    tau = median + k * std
    while True:
        few = (np.count_nonzero(images > tau[:, None, None], axis=(1, 2)) < min_pixels) & (k > 0)
        if not np.any(few):
            return np.asarray(tau, dtype=np.float64)
        k[few] = np.maximum(k[few] - 0.5, 0.0)
        tau = median + k * std


def principal_angle(image, threshold: float, *, weights: str = "intensity") -> float:
    """Angle (radians, in (-pi/2, pi/2]) of the principal axis of pixels above ``threshold``.

    Measured from the +x (column) axis towards +y (row index increasing).
    ``weights="none"`` is a PCA of the bare (x, y) coordinates of those pixels
    (the paper's wording); ``"intensity"`` weights each pixel by its value
    above the threshold, which keeps faint background pixels that scrape over
    the threshold from pulling the axis (our default; see module notes).
    Images with fewer than two such pixels have angle 0.
    """
    image = np.asarray(image, dtype=np.float64)
    rows, cols = np.nonzero(image > threshold)
    if rows.size < 2:
        return 0.0
    if weights == "intensity":
        w = image[rows, cols] - threshold
    elif weights == "none":
        w = np.ones(rows.size)
    else:
        raise RadiogenError(f"unknown PCA weights {weights!r} (intensity or none)")
    coords = np.stack([cols, rows]).astype(np.float64)
    centred = coords - (coords * w).sum(axis=1, keepdims=True) / w.sum()
    cov = (centred * w) @ centred.T / w.sum()
    eigval, eigvec = np.linalg.eigh(cov)
    vx, vy = eigvec[:, np.argmax(eigval)]
    angle = math.atan2(vy, vx)
    if angle <= -math.pi / 2:
        angle += math.pi
    elif angle > math.pi / 2:
        angle -= math.pi
    return angle


def align_images(images, *, n_sigma: float = 5.0, weights: str = "intensity") -> tuple[np.ndarray, np.ndarray]:
    """Rotate each image so that its principal axis (above tau_PCA) is horizontal.

    Returns
    -------
    aligned : numpy.ndarray, shape (N, H, W), float32
    angles : numpy.ndarray, shape (N,)
        The principal-axis angle of each input image in radians.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise RadiogenError(f"expected images of shape (N, H, W), got {images.shape}")
    thresholds = pca_threshold(images, n_sigma=n_sigma)
    aligned = np.empty_like(images)
    angles = np.empty(len(images))
    for i, (image, tau) in enumerate(zip(images, thresholds)):
        angles[i] = principal_angle(image, tau, weights=weights)
        # In array (row-down) coordinates ndimage.rotate turns the content
        # clockwise on screen by +angle, i.e. it maps an axis at angle a (measured
        # towards +row) to a - angle, so rotating by the axis angle levels it.
        aligned[i] = scipy.ndimage.rotate(
            image,
            math.degrees(angles[i]),
            reshape=False,
            order=1,
            mode="constant",
            cval=float(np.median(image)),
        )
    return aligned, angles


def _moments(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean = flat.mean(dim=1)
    centred = flat - mean[:, None]
    var = (centred * centred).sum(dim=1) / (flat.shape[1] - 1)
    return mean, var, centred


def ssim_global(x, y, *, c1: float = SSIM_C1, c2: float = SSIM_C2) -> np.ndarray:
    """SSIM from image-wide moments for every pair of ``x`` (N, H, W) and ``y`` (M, H, W).

    Returns an (N, M) float64 array; SSIM(x, x) = 1.
    """
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64).flatten(1)
    yt = torch.as_tensor(np.ascontiguousarray(y), dtype=torch.float64).flatten(1)
    return _ssim_global_t(xt, yt, c1=c1, c2=c2).numpy()


def _ssim_global_t(xt, yt, *, c1, c2, x_moments=None, y_moments=None):
    mx, vx, cx = x_moments or _moments(xt)
    my, vy, cy = y_moments or _moments(yt)
    cov = cx @ cy.T / (xt.shape[1] - 1)
    lum = (2 * mx[:, None] * my[None, :] + c1) / (mx[:, None] ** 2 + my[None, :] ** 2 + c1)
    con = (2 * cov + c2) / (vx[:, None] + vy[None, :] + c2)
    return lum * con


def _window(kind: str, *, size: int | None, sigma: float) -> torch.Tensor:
    if kind == "gaussian":
        size = size or 11
        r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(r**2) / (2 * sigma**2))
        g = g / g.sum()
    elif kind == "uniform":
        size = size or 7
        g = torch.full((size,), 1.0 / size, dtype=torch.float64)
    else:
        raise RadiogenError(f"unknown SSIM window {kind!r} (global, gaussian or uniform)")
    return g


def _filter(images: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of (B, H, W) images with the 1-D kernel g."""
    b = images.reshape(-1, 1, *images.shape[-2:])
    b = torch.nn.functional.conv2d(b, g.view(1, 1, 1, -1))
    b = torch.nn.functional.conv2d(b, g.view(1, 1, -1, 1))
    return b.reshape(*images.shape[:-2], *b.shape[-2:])


def ssim_windowed(
    x,
    y,
    *,
    window: str = "gaussian",
    size: int | None = None,
    sigma: float = 1.5,
    c1: float = SSIM_C1,
    c2: float = SSIM_C2,
    batch_pairs: int = 4096,
) -> np.ndarray:
    """Mean SSIM map over a sliding window for every pair of ``x`` (N, H, W) and ``y`` (M, H, W).

    Wang et al. (2004): local moments under a Gaussian (11x11, sigma=1.5 px)
    or uniform (7x7) window, SSIM map over the 'valid' region, averaged.
    Cost grows with N*M*H*W; meant for small sets.  Returns (N, M) float64.
    """
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
    yt = torch.as_tensor(np.ascontiguousarray(y), dtype=torch.float64)
    g = _window(window, size=size, sigma=sigma)
    mx, my = _filter(xt, g), _filter(yt, g)
    vx = _filter(xt * xt, g) - mx**2
    vy = _filter(yt * yt, g) - my**2
    out = torch.empty(len(xt), len(yt), dtype=torch.float64)
    rows_per_batch = max(1, batch_pairs // max(len(yt), 1))
    for start in range(0, len(xt), rows_per_batch):
        sl = slice(start, start + rows_per_batch)
        cxy = _filter(xt[sl, None] * yt[None], g) - mx[sl, None] * my[None]
        num = (2 * mx[sl, None] * my[None] + c1) * (2 * cxy + c2)
        den = (mx[sl, None] ** 2 + my[None] ** 2 + c1) * (vx[sl, None] + vy[None] + c2)
        out[sl] = (num / den).mean(dim=(-2, -1))
    return out.numpy()


def _flips(images: np.ndarray, enabled: bool) -> list[np.ndarray]:
    if not enabled:
        return [images]
    return [np.ascontiguousarray(v) for v in (images, images[:, :, ::-1], images[:, ::-1, :], images[:, ::-1, ::-1])]


def _image_hashes(images: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images])


def nearest_training(
    generated,
    training,
    *,
    k: int = 5,
    window: str = "global",
    flips: bool = True,
    batch_size: int = 2048,
    self_index=None,
    c1: float = SSIM_C1,
    c2: float = SSIM_C2,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` training images with the highest SSIM to each generated image.

    Both sets must already be aligned (:func:`align_images`).  The training
    set is processed in batches of ``batch_size`` images, keeping a running
    top-k, so memory stays at O(len(generated) * batch_size).

    Parameters
    ----------
    generated : array_like, shape (N, H, W)
    training : array_like, shape (M, H, W)
    k : int, keyword-only
        Number of neighbours kept.
    window : {"global", "gaussian", "uniform"}, keyword-only
        SSIM from image-wide moments (the paper) or a sliding window.
    flips : bool, keyword-only
        Take the largest SSIM over the four mirror images of each generated image.
    self_index : array_like of int, shape (N,), optional, keyword-only
        When the "generated" images are themselves training images: row i is
        training image ``self_index[i]``; that pair and pairs with
        byte-identical training images (duplicates) are skipped.

    Returns
    -------
    ssim : numpy.ndarray, shape (N, k), float64, descending
    index : numpy.ndarray, shape (N, k), int64, rows of ``training``
    """
    generated = np.ascontiguousarray(generated, dtype=np.float64)
    # The training set can be large: keep its dtype and convert batch by batch.
    training = np.asarray(training)
    if generated.shape[1:] != training.shape[1:]:
        raise RadiogenError(
            f"image shapes differ: generated {generated.shape[1:]}, training {training.shape[1:]}"
        )
    k = min(k, len(training) - (1 if self_index is not None else 0))
    if k < 1:
        raise RadiogenError("not enough training images for a nearest-neighbour search")
    if self_index is not None:
        self_index = np.asarray(self_index, dtype=np.int64)
        hashes = _image_hashes(training)
        own_hash = hashes[self_index]
    variants = _flips(generated, flips)
    var_t = [torch.as_tensor(v).flatten(1) for v in variants]
    var_m = [_moments(v) for v in var_t] if window == "global" else None
    best_s = torch.full((len(generated), k), -np.inf, dtype=torch.float64)
    best_i = torch.zeros((len(generated), k), dtype=torch.int64)
    bar = Progress(len(training), f"SSIM of {len(generated)} images against training images", logger=log)
    for start in range(0, len(training), batch_size):
        chunk = np.ascontiguousarray(training[start : start + batch_size], dtype=np.float64)
        if window == "global":
            ct = torch.as_tensor(chunk).flatten(1)
            cm = _moments(ct)
            scores = torch.stack(
                [
                    _ssim_global_t(v, ct, c1=c1, c2=c2, x_moments=m, y_moments=cm)
                    for v, m in zip(var_t, var_m)
                ]
            ).amax(dim=0)
        else:
            scores = torch.as_tensor(
                np.max([ssim_windowed(v, chunk, window=window, c1=c1, c2=c2) for v in variants], axis=0)
            )
        index = torch.arange(start, start + len(chunk))
        if self_index is not None:
            same = (self_index[:, None] == index.numpy()[None, :]) | (
                own_hash[:, None] == hashes[None, start : start + len(chunk)]
            )
            scores = scores.masked_fill(torch.as_tensor(same), -np.inf)
        all_s = torch.cat([best_s, scores], dim=1)
        all_i = torch.cat([best_i, index.expand(len(generated), -1)], dim=1)
        top = torch.topk(all_s, k, dim=1)
        best_s, best_i = top.values, torch.gather(all_i, 1, top.indices)
        bar.update(len(chunk))
    bar.close()
    return best_s.numpy(), best_i.numpy()


def reference_nearest(training, *, n_reference: int | None, seed: int, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Nearest SSIM between a training image and a *different* training image.

    ``n_reference`` training images (seeded subsample; all when None) are
    each compared with the whole training set, excluding themselves and
    byte-identical duplicates.  Returns (nearest SSIM (n,), indices used (n,)).
    """
    training = np.asarray(training)
    n = len(training)
    if n < 2:
        raise RadiogenError("need at least 2 training images for the reference distribution")
    if n_reference is None or n_reference >= n:
        chosen = np.arange(n)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(n, size=n_reference, replace=False))
    scores, _ = nearest_training(training[chosen], training, k=1, self_index=chosen, **kwargs)
    nearest = scores[:, 0]
    if not np.all(np.isfinite(nearest)):
        raise RadiogenError("all training images are identical; no reference similarity exists")
    return nearest, chosen


def memorisation_number(nearest_generated, nearest_reference, *, percentile: float = 99.0) -> dict:
    """Fraction of generated images more similar to the training set than real images are.

    ``threshold = percentile(nearest_reference, percentile)``;
    ``fraction = mean(nearest_generated > threshold)``.
    """
    nearest_generated = np.asarray(nearest_generated, dtype=np.float64)
    nearest_reference = np.asarray(nearest_reference, dtype=np.float64)
    if nearest_generated.size == 0 or nearest_reference.size == 0:
        raise RadiogenError("memorisation number needs non-empty generated and reference SSIMs")
    threshold = float(np.percentile(nearest_reference, percentile))
    above = int(np.count_nonzero(nearest_generated > threshold))
    return {
        "percentile": float(percentile),
        "threshold_ssim": threshold,
        "n_generated": int(nearest_generated.size),
        "n_reference": int(nearest_reference.size),
        "n_above": above,
        "fraction": above / nearest_generated.size,
        "expected_fraction_if_not_memorised": 1.0 - percentile / 100.0,
        "generated_nearest_ssim_median": float(np.median(nearest_generated)),
        "reference_nearest_ssim_median": float(np.median(nearest_reference)),
    }


def plot_nearest(
    generated, training, nearest_index, nearest_ssim, rows, path, *, title: str, generated_ids=None, training_ids=None
) -> None:
    """Figure: each chosen generated image (left) beside its nearest training images.

    ``rows`` are indices into ``generated``; images are shown as compared
    (aligned), on a common [0, 1] colour scale.  ``generated_ids`` and
    ``training_ids`` (optional) map array rows to the row numbers printed
    in the titles (e.g. rows of the HDF5 files).
    """
    generated_ids = np.arange(len(generated)) if generated_ids is None else np.asarray(generated_ids)
    training_ids = np.arange(len(training)) if training_ids is None else np.asarray(training_ids)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = nearest_index.shape[1]
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.6 * (k + 1), 1.7 * len(rows) + 0.6), squeeze=False)
    for r, g in enumerate(rows):
        axes[r, 0].imshow(generated[g], cmap="inferno", vmin=0, vmax=1, origin="lower")
        axes[r, 0].set_title(f"generated #{generated_ids[g]}", fontsize=7)
        for j in range(k):
            axes[r, j + 1].imshow(training[nearest_index[g, j]], cmap="inferno", vmin=0, vmax=1, origin="lower")
            axes[r, j + 1].set_title(f"train #{training_ids[nearest_index[g, j]]}\nSSIM {nearest_ssim[g, j]:.3f}", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from radiogen.io import save_figure

    save_figure(fig, path, dpi=110)
    plt.close(fig)
