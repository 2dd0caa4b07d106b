"""Report figures of the LoTSS selection (paper Figs. 1 and 2) and of the Box-Cox step (Fig. 4)."""

from __future__ import annotations

import os

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from radiogen.io import save_figure  # noqa: E402
from radiogen.lotss.snr import fill_nan_with_min, minmax_scale  # noqa: E402
from radiogen.seeds import generator  # noqa: E402

__all__ = ["plot_snr_histogram", "plot_removed_examples", "plot_peak_flux"]


def _read_scaled(path, indices):
    """Min-max scaled cutouts at ``indices`` of ``path``'s /images, NaN kept for display.

    Scaling uses the NaN-filled image as the cuts do; blanked pixels stay NaN so
    the figures can show them in grey.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return np.zeros((0, 1, 1))
    order = np.argsort(indices)
    with h5py.File(path, "r") as h5:
        block = h5["images"][indices[order]]
    scaled = minmax_scale(fill_nan_with_min(block))
    scaled[~np.isfinite(block)] = np.nan
    out = np.empty_like(scaled)
    out[order] = scaled
    return out


def _save(fig, path):
    save_figure(fig, path, dpi=110)
    plt.close(fig)


_CMAP = matplotlib.colormaps["inferno"].with_extremes(bad="0.6")


def _show(ax, image):
    ax.imshow(image, origin="lower", cmap=_CMAP, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_snr_histogram(
    cutouts: str | os.PathLike,
    per_image: pd.DataFrame,
    path: str | os.PathLike,
    *,
    settings,
    seed: int = 0,
) -> None:
    """Paper Fig. 1: S/N_sigma histogram with random example cutouts per bin.

    The top panel covers [0, ``settings.figure_snr_max``] with the cut
    ``settings.snr_min`` marked; the inset shows the whole distribution; under
    each of the ``figure_columns`` bins, ``figure_rows`` random cutouts of that
    bin (min-max scaled, NaN pixels grey).
    """
    snr = per_image["snr_sigma"].to_numpy(float)
    finite = np.isfinite(snr)
    n_cols, n_rows = settings.figure_columns, settings.figure_rows
    edges = np.linspace(0.0, settings.figure_snr_max, n_cols + 1)
    fig = plt.figure(figsize=(1.1 * n_cols + 1.2, 3.6 + 1.1 * n_rows))
    # A spacer row keeps the histogram's axis label clear of the example grid.
    grid = fig.add_gridspec(
        2 + n_rows, n_cols, height_ratios=[3.0, 0.45] + [1.0] * n_rows, hspace=0.08, wspace=0.04
    )
    ax = fig.add_subplot(grid[0, :])
    fine = np.linspace(0.0, settings.figure_snr_max, 4 * n_cols + 1)
    ax.hist(np.clip(snr[finite], 0, None), bins=fine, color="tab:blue", alpha=0.8)
    ax.axvline(settings.snr_min, color="k", ls="--", lw=1, label=f"cut S/N$_\\sigma$ = {settings.snr_min:g}")
    for edge in edges[1:-1]:
        ax.axvline(edge, color="0.85", lw=0.6, zorder=0)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xticks(edges)
    ax.set_xlabel("S/N$_\\sigma$ (columns below: random cutouts of each bin)")
    ax.set_ylabel("cutouts")
    n_above = int((snr[finite] >= settings.snr_min).sum())
    ax.set_title(
        f"{finite.sum()} cutouts with defined S/N$_\\sigma$, {n_above} at or above the cut"
    )
    ax.legend(loc="upper left")
    if finite.any() and np.nanmax(snr) > 0:
        inset = ax.inset_axes([0.66, 0.42, 0.32, 0.5])
        positive = snr[finite & (snr > 0)]
        top = max(positive.max(), settings.figure_snr_max)
        bins = np.geomspace(max(positive.min(), 1e-2), top * 1.01, 40)
        inset.hist(positive, bins=bins, color="tab:blue")
        inset.set_xscale("log")
        inset.set_yscale("log")
        inset.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        inset.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        inset.axvline(settings.snr_min, color="k", ls="--", lw=1)
        inset.tick_params(labelsize=7)
        inset.set_title("whole distribution", fontsize=8)

    rng = generator(seed, "lotss.selection_examples")
    chosen = []
    for col in range(n_cols):
        in_bin = np.nonzero(finite & (snr >= edges[col]) & (snr < edges[col + 1]))[0]
        pick = rng.choice(in_bin, size=min(n_rows, len(in_bin)), replace=False) if len(in_bin) else []
        chosen.append(np.asarray(pick, dtype=np.int64))
    flat = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    images = _read_scaled(cutouts, flat)
    k = 0
    for col, pick in enumerate(chosen):
        for row in range(n_rows):
            sub = fig.add_subplot(grid[2 + row, col])
            if row < len(pick):
                _show(sub, images[k])
                k += 1
            else:
                sub.axis("off")
    fig.subplots_adjust(left=0.08, right=0.96, top=0.95, bottom=0.02)
    _save(fig, path)


def plot_removed_examples(
    cutouts: str | os.PathLike,
    per_image: pd.DataFrame,
    path: str | os.PathLike,
    *,
    settings,
    seed: int = 0,
) -> None:
    """Paper Figs. 2/3: random cutouts removed at each step, and kept ones."""
    from radiogen.lotss.selection import STEPS

    reasons = per_image["removed_at"].fillna("").astype(str).to_numpy()
    groups = [(key, desc) for key, desc in STEPS] + [("", "Selected")]
    n_cols = max(settings.figure_columns, 1)
    rng = generator(seed, "lotss.selection_steps")
    fig, axes = plt.subplots(
        len(groups), n_cols, figsize=(1.1 * n_cols + 2.2, 1.2 * len(groups)), squeeze=False
    )
    picks = []
    for key, _ in groups:
        members = np.nonzero(reasons == key)[0]
        picks.append(rng.choice(members, size=min(n_cols, len(members)), replace=False))
    images = _read_scaled(cutouts, np.concatenate(picks).astype(np.int64))
    k = 0
    for row, ((key, desc), pick) in enumerate(zip(groups, picks)):
        count = int((reasons == key).sum())
        for col in range(n_cols):
            ax = axes[row, col]
            if col < len(pick):
                _show(ax, images[k])
                k += 1
            else:
                ax.axis("off")
        label = f"{desc}\n(n={count})"
        axes[row, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
        axes[row, 0].axis("on")
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        for spine in axes[row, 0].spines.values():
            spine.set_visible(len(pick) > 0)
    fig.subplots_adjust(left=0.24, right=0.99, top=0.98, bottom=0.02, wspace=0.04, hspace=0.08)
    _save(fig, path)


def plot_peak_flux(
    peak_flux: np.ndarray,
    context: np.ndarray,
    path: str | os.PathLike,
    *,
    lam: float,
    mean: float,
    std: float,
) -> None:
    """Paper Fig. 4: peak flux before (log axis) and after the standardised Box-Cox transform."""
    peak_flux = np.asarray(peak_flux, float)
    context = np.asarray(context, float).ravel()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.0, 6.5))
    positive = peak_flux[peak_flux > 0]
    n_bins = int(np.clip(2 * np.sqrt(len(peak_flux)), 10, 60))
    if len(positive):
        bins = np.geomspace(positive.min(), positive.max() * 1.0001 + 1e-30, n_bins + 1)
        top.hist(positive, bins=bins, color="tab:blue")
        top.set_xscale("log")
        top.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    top.set_xlabel("peak flux [Jy/beam]")
    top.set_ylabel("images")
    top.set_title(f"{len(peak_flux)} selected images")
    bottom.hist(context, bins=n_bins, density=True, color="tab:orange", alpha=0.8, label="training context")
    grid = np.linspace(min(-4.0, context.min(initial=0)), max(4.0, context.max(initial=0)), 200)
    bottom.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k-", lw=1, label="N(0, 1)")
    bottom.set_xlabel(f"standardised Box-Cox peak flux (lambda={lam:.3f}, mean={mean:.3g}, std={std:.3g})")
    bottom.set_ylabel("density")
    bottom.legend()
    fig.tight_layout()
    _save(fig, path)
