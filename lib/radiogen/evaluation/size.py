"""Size conditioning: is a generated source as large as asked?  (The size analogue of Δ+ vs flux.)

Size measured on every image: the largest angular extent (maximum Feret
diameter, :func:`radiogen.skymap.assemble.largest_extent_px`) of the central
source's islands (:func:`radiogen.skymap.stamps.source_mask`: pixels above
3 rms of the cutout's background, islands peaking above 5 rms that reach
within 25 px of the centre).  The authors' map code (tmartinezML/LOFAR-Diffusion)
measures generated sizes the same way, as the maximum Feret diameter of a
3-sigma mask.  The same definition gives the truth LAS of simulated maps.

Compared with the requested size (real images: the catalogue LAS they were
trained with; generated images: the size they were conditioned on): Spearman
rho of measured vs requested, and the median and scatter (half the 16-84
percentile range) of log10(measured / requested).  Real images give the
reference: the catalogue LAS and the cutout measure differ even for real
sources (a catalogue LAS is deconvolved, lobes below 3 rms are missed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy import stats

from radiogen.errors import InputFileError
from radiogen.io import atomic_path, open_hdf5, require_datasets, save_figure

__all__ = ["measured_sizes", "size_agreement", "size_conditioning"]

log = logging.getLogger(__name__)


def measured_sizes(images: np.ndarray, *, pixel_scale_arcsec: float, island_threshold_sigma: float = 3.0,
                   peak_threshold_sigma: float = 5.0, island_radius_px: float = 25.0) -> np.ndarray:
    """Largest extent of each image's central source, arcsec (NaN where no island passes)."""
    from radiogen.skymap.assemble import largest_extent_px
    from radiogen.skymap.stamps import source_mask

    out = np.full(len(images), np.nan)
    for k, image in enumerate(images):
        mask, _level, n_islands = source_mask(image, island_threshold_sigma=island_threshold_sigma,
                                              peak_threshold_sigma=peak_threshold_sigma,
                                              island_radius_px=island_radius_px)
        if n_islands:
            out[k] = largest_extent_px(mask) * pixel_scale_arcsec
    return out


def size_agreement(measured: np.ndarray, requested: np.ndarray) -> dict:
    """Spearman rho and log10(measured / requested) statistics over the finite pairs."""
    measured, requested = np.asarray(measured, float), np.asarray(requested, float)
    ok = np.isfinite(measured) & np.isfinite(requested) & (measured > 0) & (requested > 0)
    n = int(ok.sum())
    if n < 3:
        return {"n": n, "n_without_source": int((~np.isfinite(measured)).sum()), "spearman_rho": np.nan,
                "spearman_p": np.nan, "median_log_ratio": np.nan, "scatter_log_ratio": np.nan}
    rho, p = stats.spearmanr(measured[ok], requested[ok])
    ratio = np.log10(measured[ok] / requested[ok])
    q16, q50, q84 = np.percentile(ratio, [16, 50, 84])
    return {"n": n, "n_without_source": int((~np.isfinite(measured)).sum()), "spearman_rho": float(rho),
            "spearman_p": float(p), "median_log_ratio": float(q50), "scatter_log_ratio": float((q84 - q16) / 2)}


def _read(path: str | Path, *, max_images: int | None) -> tuple[np.ndarray, np.ndarray, float]:
    with open_hdf5(path) as h5:
        require_datasets(h5, ["images", "size"])
        n = h5["images"].shape[0] if max_images is None else min(max_images, h5["images"].shape[0])
        images = h5["images"][:n].astype(np.float64)
        size = h5["size"][:n].astype(np.float64)
        scale = float(h5.attrs.get("pixel_scale_arcsec", 1.5))
    if images.ndim == 4:
        images = images[:, 0]
    return images, size, scale


def size_conditioning(sets: dict[str, str | Path], output_json: str | Path, figure: str | Path, *,
                      max_images: int | None = None) -> dict:
    """Measure sizes of each named image set against its /size; write JSON and a figure.

    ``sets`` maps a label (``real``, ``generated``) to an HDF5 file with
    /images in [0, 1] and /size in arcsec (the training set's catalogue LAS, a
    generated set's requested size).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, points = {}, {}
    for label, path in sets.items():
        if not Path(path).exists():
            raise InputFileError(f"{path}: does not exist")
        images, requested, scale = _read(path, max_images=max_images)
        measured = measured_sizes(images, pixel_scale_arcsec=scale)
        summary[label] = size_agreement(measured, requested)
        points[label] = (requested, measured)
        log.info("%s: %s", label, summary[label])
    with atomic_path(output_json) as tmp:
        # NaN (too few sources to measure) as JSON null
        clean = {label: {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in values.items()}
                 for label, values in summary.items()}
        Path(tmp).write_text(json.dumps(clean, indent=2, sort_keys=True))
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4.6), squeeze=False)
    for ax, (label, (requested, measured)) in zip(axes[0], points.items()):
        ax.scatter(requested, measured, s=8, alpha=0.6)
        lo = np.nanmin(np.concatenate([requested, measured, [1.0]]))
        hi = np.nanmax(np.concatenate([requested, measured, [10.0]]))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="measured = requested")
        s = summary[label]
        ax.set(xscale="log", yscale="log", xlabel="requested size (LAS) [arcsec]",
               ylabel="measured largest extent [arcsec]",
               title=f"{label}: Spearman rho {s['spearman_rho']:.2f}, scatter {s['scatter_log_ratio']:.2f} dex")
        ax.legend(fontsize=8)
        if s["n"] == 0:
            ax.text(0.5, 0.5, f"no measurable source in {s['n_without_source']} images", ha="center",
                    transform=ax.transAxes, color="grey")
    fig.tight_layout()
    save_figure(fig, figure, dpi=110)
    plt.close(fig)
    return summary
