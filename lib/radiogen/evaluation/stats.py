"""Image statistics of real and generated sets (paper Sect. 5.1, Figs. 12-14).

Three distributions describe an image set: all pixel values, the per-image
mean and the per-image standard deviation, for images scaled to [0, 1].
Histograms share their bins across the sets being compared; each bin carries
a 1-sigma Poisson confidence interval on its count (astropy
``poisson_conf_interval(interval="frequentist-confidence")``, i.e. the
Garwood interval), scaled exactly like the count when densities are plotted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.stats import poisson_conf_interval

from radiogen.errors import InputFileError
from radiogen.evaluation.imagesets import open_image_set
from radiogen.io import atomic_path, save_figure, write_json_atomic

__all__ = [
    "PIXEL_BINS",
    "per_image_statistics",
    "pixel_histogram",
    "poisson_interval",
    "histogram_with_errors",
    "shared_bins",
    "compute_set_statistics",
    "plot_histograms",
]

log = logging.getLogger(__name__)

#: Fine pixel-value bins on [0, 1] kept per set; plots merge them to coarser bins.
PIXEL_BINS = 1000


def per_image_statistics(images: np.ndarray) -> pd.DataFrame:
    """Mean, standard deviation, minimum and maximum of each image (n, H, W)."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return pd.DataFrame({
        "mean": flat.mean(axis=1),
        "std": flat.std(axis=1),
        "min": flat.min(axis=1),
        "max": flat.max(axis=1),
    })


def pixel_histogram(images: np.ndarray, *, bins: int = PIXEL_BINS) -> np.ndarray:
    """Counts of pixel values on ``bins`` equal bins over [0, 1] (int64)."""
    counts, _ = np.histogram(np.asarray(images).ravel(), bins=bins, range=(0.0, 1.0))
    return counts.astype(np.int64)


def poisson_interval(counts) -> tuple[np.ndarray, np.ndarray]:
    """1-sigma (68.27%) frequentist-confidence interval of Poisson counts.

    Returns
    -------
    lower, upper : ndarray
        Bounds on the expected count for each observed count ``n``
        (Garwood 1936; for ``n = 0`` the lower bound is 0).
    """
    counts = np.asarray(counts, dtype=np.float64)
    lower, upper = poisson_conf_interval(counts, interval="frequentist-confidence", sigma=1)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


def histogram_with_errors(values=None, bins=None, *, counts=None, density: bool = True) -> dict:
    """Histogram with Poisson 1-sigma bounds on shared bins.

    Parameters
    ----------
    values : array-like, optional
        Samples to histogram (NaN dropped).  Give either ``values`` or ``counts``.
    bins : array-like
        Bin edges (shared between the sets compared).
    counts : array-like, optional
        Pre-computed counts on ``bins``.
    density : bool
        Divide counts and bounds by ``total * bin width`` so that the
        histogram integrates to 1.

    Returns
    -------
    dict
        ``edges``, ``counts`` (raw), ``height``, ``lower``, ``upper`` (scaled
        like ``height``), ``total``.
    """
    edges = np.asarray(bins, dtype=np.float64)
    if counts is None:
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        counts, _ = np.histogram(values, bins=edges)
    counts = np.asarray(counts, dtype=np.float64)
    lower, upper = poisson_interval(counts)
    total = counts.sum()
    scale = np.ones_like(counts)
    if density and total > 0:
        scale = 1.0 / (total * np.diff(edges))
    return {
        "edges": edges,
        "counts": counts,
        "height": counts * scale,
        "lower": lower * scale,
        "upper": upper * scale,
        "total": float(total),
    }


def shared_bins(*samples, bins: int = 50, log: bool = False) -> np.ndarray:
    """Equal-width (or log-spaced) bin edges covering all finite values of all samples."""
    values = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in samples])
    values = values[np.isfinite(values)]
    if log:
        values = values[values > 0]
    if values.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + (abs(lo) * 1e-3 or 1e-3)
    if log:
        return np.geomspace(lo, hi, bins + 1)
    return np.linspace(lo, hi, bins + 1)


def compute_set_statistics(path: str | os.PathLike, *, output_csv: str | os.PathLike,
                           output_pixels: str | os.PathLike, block: int = 1024) -> pd.DataFrame:
    """Per-image statistics table and the fine pixel histogram of one image set.

    Writes ``output_csv`` (columns ``index, mean, std, min, max, peak_flux_jy``,
    values of the [0, 1] images) and ``output_pixels`` (JSON: ``edges`` of
    :data:`PIXEL_BINS` bins on [0, 1], ``counts``, ``n_images``, ``image_set``).
    """
    tables = []
    counts = np.zeros(PIXEL_BINS, dtype=np.int64)
    with open_image_set(path) as image_set:
        if image_set.n_images == 0:
            raise InputFileError(f"{image_set.path}: image set is empty")
        for start in range(0, image_set.n_images, block):
            stop = min(start + block, image_set.n_images)
            images = image_set.images(start, stop)
            table = per_image_statistics(images)
            table.insert(0, "index", np.arange(start, stop))
            table["peak_flux_jy"] = image_set.peak_flux(start, stop)
            tables.append(table)
            counts += pixel_histogram(images)
        n_images = image_set.n_images
    table = pd.concat(tables, ignore_index=True)
    with atomic_path(output_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_json_atomic({
        "edges": np.linspace(0.0, 1.0, PIXEL_BINS + 1),
        "counts": counts,
        "n_images": n_images,
        "image_set": str(path),
    }, output_pixels)
    log.info("%s: statistics of %d images", path, n_images)
    return table


def _rebin(counts: np.ndarray, factor: int) -> np.ndarray:
    counts = np.asarray(counts)
    usable = (counts.size // factor) * factor
    merged = counts[:usable].reshape(-1, factor).sum(axis=1)
    if usable < counts.size:
        merged[-1] += counts[usable:].sum()
    return merged


def plot_histograms(ax, histograms: dict[str, dict], *, palette=None, log_y: bool = False,
                    xlabel: str = "", ylabel: str = "density") -> None:
    """Step histograms with Poisson 1-sigma error bars for several sets on one axis.

    ``histograms`` maps a label to the output of :func:`histogram_with_errors`.
    Error bars are drawn at bin centres of non-empty bins (an empty bin's upper
    bound, 1.84 counts, would dominate small sets on a log axis).
    """
    import seaborn as sns

    colours = palette or sns.color_palette("colorblind", len(histograms))
    for colour, (label, hist) in zip(colours, histograms.items()):
        edges = hist["edges"]
        height = np.append(hist["height"], hist["height"][-1])
        ax.step(edges, height, where="post", color=colour,
                label=f"{label} (n={int(hist['total'])})", linewidth=1.2)
        filled = hist["counts"] > 0
        centres = np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 and ax.get_xscale() == "log" \
            else 0.5 * (edges[:-1] + edges[1:])
        yerr = np.vstack([hist["height"] - hist["lower"], hist["upper"] - hist["height"]])
        ax.errorbar(centres[filled], hist["height"][filled], yerr=yerr[:, filled], fmt="none",
                    ecolor=colour, elinewidth=0.9, alpha=0.8)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize="small")


def image_statistics_figure(sets: dict[str, tuple[str, str]], output: str | os.PathLike, *,
                            bins: int = 50, pixel_bins: int = 50, title: str = "") -> dict:
    """Figure of pixel, mean and std histograms for several image sets (paper Figs. 12-14).

    Parameters
    ----------
    sets : dict
        Label -> (per-image statistics CSV, pixel histogram JSON), from
        :func:`compute_set_statistics`; the first entry is the reference (real) set.
    output : path-like
        Figure file (format from the suffix).
    bins : int
        Number of shared bins for the mean and std histograms.
    pixel_bins : int
        Number of bins on [0, 1] for pixel values (must divide :data:`PIXEL_BINS`).

    Returns
    -------
    dict
        The plotted histograms per quantity and set (edges, counts, Poisson bounds).
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    if PIXEL_BINS % pixel_bins:
        raise ValueError(f"pixel_bins={pixel_bins} must divide {PIXEL_BINS}")
    tables = {label: pd.read_csv(csv) for label, (csv, _) in sets.items()}
    pixels = {label: json.loads(Path(js).read_text()) for label, (_, js) in sets.items()}
    result: dict = {"pixels": {}, "mean": {}, "std": {}}
    edges = np.linspace(0.0, 1.0, pixel_bins + 1)
    for label, data in pixels.items():
        result["pixels"][label] = histogram_with_errors(
            bins=edges, counts=_rebin(np.asarray(data["counts"]), PIXEL_BINS // pixel_bins))
    for quantity in ("mean", "std"):
        qbins = shared_bins(*[t[quantity] for t in tables.values()], bins=bins)
        for label, table in tables.items():
            result[quantity][label] = histogram_with_errors(table[quantity], qbins)
    sns.set_theme(style="ticks", context="paper")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    plot_histograms(axes[0], result["pixels"], log_y=True, xlabel="pixel value (scaled to [0, 1])")
    plot_histograms(axes[1], result["mean"], log_y=True, xlabel="image mean")
    plot_histograms(axes[2], result["std"], log_y=True, xlabel="image standard deviation")
    if title:
        fig.suptitle(title)
    save_figure(fig, output, dpi=150)
    plt.close(fig)
    return result
