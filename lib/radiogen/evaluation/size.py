"""Size conditioning: is a generated source as large as asked?  (The size analogue of Δ+ vs flux.)

Size measured on every image: the maximum Feret diameter of its smoothed
source mask (:func:`radiogen.lotss.sizes.feret_sizes`), with the settings
that the real training set records (``size_feret_settings``, from
``lotss.preprocess.feret``): the very measure that a ``size_source: feret``
model is conditioned on, as in the authors' follow-up (A&A 700, A18, 2025).

Compared with the requested size (real images: the size in their context;
generated images: the size they were conditioned on):

- Spearman rho of measured vs requested, and the median and scatter (half the
  16-84 percentile range) of log10(measured / requested);
- the size response controlled for flux.  Requested sizes are drawn jointly
  with the peak flux, and the measured size of even an unresolved source grows
  with S/N (its 3-sigma contour widens: about 7" at 5 sigma to 19" at 1000
  sigma for the 6" beam), so a model that ignores the size context still gives
  rho > 0.  Two controls: the partial Spearman rho given log peak flux
  (:func:`partial_spearman`) and a null that shuffles the requested sizes
  within bins of equal counts in peak flux (:func:`flux_bin_shuffle_null`),
  whose z and one-sided p say whether rho exceeds what the flux alone gives.

Real images give the reference: with ``size_source: feret`` the measure
returns their requested sizes exactly (rho = 1 by construction, a check of
the pipeline); with ``las`` it shows how far the image measure is from the
catalogue's deconvolved LAS.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy import stats

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path, open_hdf5, require_datasets, save_figure
from radiogen.lotss.sizes import FeretSettings, feret_sizes
from radiogen.seeds import generator

__all__ = ["SIZE_DEFAULTS", "read_feret_settings", "measured_sizes", "partial_spearman",
           "flux_bin_shuffle_null", "size_agreement", "size_conditioning"]

log = logging.getLogger(__name__)

#: ``evaluation.size`` defaults (the schema is their only source).
SIZE_DEFAULTS = section_defaults("evaluation.size")


def read_feret_settings(path: str | Path) -> FeretSettings:
    """The size measure a training set was made with (its ``size_feret_settings``), else the schema's."""
    with open_hdf5(path) as h5:
        text = h5.attrs.get("size_feret_settings")
    if text is None:
        log.info("%s: no size_feret_settings attribute; measuring with the schema's lotss.preprocess.feret", path)
        return FeretSettings()
    try:
        values = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise InputFileError(f"{path}: attribute size_feret_settings is not JSON ({err})") from None
    try:
        return FeretSettings.from_mapping(values, source=f"{path}: size_feret_settings")
    except ConfigError as err:
        message = str(err) if str(err).startswith(str(path)) else f"{path}: size_feret_settings: {err}"
        raise InputFileError(message) from None


def measured_sizes(images: np.ndarray, *, pixel_scale_arcsec: float, settings: FeretSettings | None = None
                   ) -> np.ndarray:
    """Maximum Feret diameter of each image's smoothed source mask, arcsec (NaN where no source)."""
    return feret_sizes(images, pixel_scale_arcsec=pixel_scale_arcsec, settings=settings)


def _ranks(values: np.ndarray) -> np.ndarray:
    return stats.rankdata(values)


def partial_spearman(x, y, z) -> tuple[float, float]:
    """Spearman rho of x and y controlled for z, and its two-sided p-value.

    The ranks' correlations r enter the partial correlation formula
    r_xy.z = (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)); the p-value
    is that of t = r sqrt((n - 3) / (1 - r^2)) with n - 3 degrees of freedom.
    Monotonic transforms of z (log flux) give the same result.
    """
    x, y, z = (np.asarray(v, dtype=np.float64) for v in (x, y, z))
    n = x.size
    if n < 4:
        return np.nan, np.nan
    r = np.corrcoef(np.vstack([_ranks(x), _ranks(y), _ranks(z)]))
    r_xy, r_xz, r_yz = r[0, 1], r[0, 2], r[1, 2]
    denominator = np.sqrt((1.0 - r_xz**2) * (1.0 - r_yz**2))
    if not denominator > 0:  # x or y a monotonic function of z: nothing left to correlate
        return np.nan, np.nan
    rho = float(np.clip((r_xy - r_xz * r_yz) / denominator, -1.0, 1.0))
    if abs(rho) == 1.0:
        return rho, 0.0
    t = rho * np.sqrt((n - 3) / (1.0 - rho**2))
    return rho, float(2.0 * stats.t.sf(abs(t), n - 3))


def flux_bin_shuffle_null(measured, requested, flux, *, flux_bins: int, n_shuffles: int,
                          rng: np.random.Generator) -> dict:
    """Spearman rho of measured vs requested size against requested sizes shuffled within flux bins.

    The images are split into ``flux_bins`` bins of (nearly) equal counts in
    flux; inside each bin the requested sizes are permuted ``n_shuffles``
    times.  A shuffle keeps every size with an image of similar flux, so the
    null keeps the correlation that flux alone causes and loses any response
    to the size itself.

    Returns
    -------
    dict
        ``rho`` (observed), ``null_mean``, ``null_std``, ``z`` = (rho -
        null_mean) / null_std and the one-sided ``p`` = (1 + #{null >= rho}) /
        (1 + n_shuffles).
    """
    measured, requested, flux = (np.asarray(v, dtype=np.float64) for v in (measured, requested, flux))
    n = measured.size
    rank_measured = _ranks(measured)
    rank_requested = _ranks(requested)
    rho = float(np.corrcoef(rank_measured, rank_requested)[0, 1])
    bins = np.minimum((_ranks(flux) - 1.0) * flux_bins // n, flux_bins - 1).astype(int)
    shuffled = np.tile(rank_requested, (n_shuffles, 1))
    for b in np.unique(bins):
        members = np.nonzero(bins == b)[0]
        shuffled[:, members] = rng.permuted(shuffled[:, members], axis=1)
    centred = rank_measured - rank_measured.mean()
    shuffled -= shuffled.mean(axis=1, keepdims=True)
    null = (shuffled @ centred) / (np.linalg.norm(shuffled, axis=1) * np.linalg.norm(centred))
    null_std = float(null.std(ddof=1))
    return {
        "rho": rho,
        "null_mean": float(null.mean()),
        "null_std": null_std,
        "z": float((rho - null.mean()) / null_std) if null_std > 0 else np.nan,
        "p": float((1 + np.count_nonzero(null >= rho)) / (1 + n_shuffles)),
    }


def size_agreement(measured: np.ndarray, requested: np.ndarray, peak_flux: np.ndarray | None = None, *,
                   flux_bins: int = SIZE_DEFAULTS["flux_bins"], n_shuffles: int = SIZE_DEFAULTS["n_shuffles"],
                   rng: np.random.Generator | None = None) -> dict:
    """Size response over the finite pairs: raw and flux-controlled Spearman rho, log-ratio statistics.

    Without ``peak_flux`` only the raw statistics are given (the flux-controlled
    ones NaN).  ``rng`` seeds the shuffle null (required with ``peak_flux``).
    """
    measured, requested = np.asarray(measured, float), np.asarray(requested, float)
    ok = np.isfinite(measured) & np.isfinite(requested) & (measured > 0) & (requested > 0)
    if peak_flux is not None:
        peak_flux = np.asarray(peak_flux, float)
        ok &= np.isfinite(peak_flux) & (peak_flux > 0)
    n = int(ok.sum())
    out = {"n": n, "n_without_source": int((~np.isfinite(measured)).sum()), "spearman_rho": np.nan,
           "spearman_p": np.nan, "median_log_ratio": np.nan, "scatter_log_ratio": np.nan,
           "partial_spearman_rho": np.nan, "partial_spearman_p": np.nan, "spearman_rho_requested_flux": np.nan,
           "spearman_rho_measured_flux": np.nan, "null_rho_mean": np.nan, "null_rho_std": np.nan,
           "null_z": np.nan, "null_p": np.nan}
    if n < 3:
        return out
    rho, p = stats.spearmanr(measured[ok], requested[ok])
    ratio = np.log10(measured[ok] / requested[ok])
    q16, q50, q84 = np.percentile(ratio, [16, 50, 84])
    out.update(spearman_rho=float(rho), spearman_p=float(p), median_log_ratio=float(q50),
               scatter_log_ratio=float((q84 - q16) / 2))
    if peak_flux is not None and n >= 4:
        if rng is None:
            raise ValueError("size_agreement: the shuffle null needs a seeded rng")
        flux = np.log10(peak_flux[ok])
        partial, partial_p = partial_spearman(measured[ok], requested[ok], flux)
        null = flux_bin_shuffle_null(measured[ok], requested[ok], flux, flux_bins=min(flux_bins, n),
                                     n_shuffles=n_shuffles, rng=rng)
        out.update(partial_spearman_rho=partial, partial_spearman_p=partial_p,
                   spearman_rho_requested_flux=float(stats.spearmanr(requested[ok], flux).statistic),
                   spearman_rho_measured_flux=float(stats.spearmanr(measured[ok], flux).statistic),
                   null_rho_mean=null["null_mean"], null_rho_std=null["null_std"], null_z=null["z"],
                   null_p=null["p"])
    return out


def _read(path: str | Path, *, max_images: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    with open_hdf5(path) as h5:
        require_datasets(h5, ["images", "size", "peak_flux"])
        n = h5["images"].shape[0] if max_images is None else min(max_images, h5["images"].shape[0])
        images = h5["images"][:n].astype(np.float64)
        size = h5["size"][:n].astype(np.float64)
        peak_flux = h5["peak_flux"][:n].astype(np.float64)
        scale = float(h5.attrs.get("pixel_scale_arcsec", 1.5))
    if images.ndim == 4:
        images = images[:, 0]
    return images, size, peak_flux, scale


def _json_value(value):
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None  # NaN (too few sources to measure) as JSON null
    return value


def size_conditioning(sets: dict[str, str | Path], output_json: str | Path, figure: str | Path, *,
                      seed: int, settings: dict | None = None, max_images: int | None = None) -> dict:
    """Measure sizes of each named image set against its /size; write JSON and a figure.

    Parameters
    ----------
    sets : dict
        Label (``real``, ``generated``) -> HDF5 file with /images in [0, 1],
        /size in arcsec (the size in a training set's context, a generated
        set's requested size) and /peak_flux in Jy/beam.  The ``real`` set (a
        training set) gives the size measure's settings and ``size_source``.
    output_json, figure : path
        Per-set statistics (:func:`size_agreement`) under each label, and
        ``size_measure`` / ``null`` (how they were obtained); the scatter plot.
    seed : int, keyword-only
        Global seed; set k's shuffles use stream ``evaluation.size_null``, key k.
    settings : dict, optional, keyword-only
        ``evaluation.size`` (flux_bins, n_shuffles, max_images).
    max_images : int, optional, keyword-only
        Overrides ``settings["max_images"]``.

    Returns
    -------
    dict
        Label -> statistics.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = {**SIZE_DEFAULTS, **(settings or {})}
    unknown = sorted(set(settings) - set(SIZE_DEFAULTS))
    if unknown:
        raise ConfigError(f"evaluation.size: unknown key(s) {', '.join(unknown)}")
    if max_images is not None:
        settings["max_images"] = max_images
    for path in sets.values():
        if not Path(path).exists():
            raise InputFileError(f"{path}: does not exist")
    reference = sets.get("real", next(iter(sets.values())))
    measure = read_feret_settings(reference)
    with open_hdf5(reference) as h5:
        size_source = str(h5.attrs.get("size_source", "las"))  # files from before size_source: catalogue LAS
    summary, points = {}, {}
    for k, (label, path) in enumerate(sets.items()):
        images, requested, peak_flux, scale = _read(path, max_images=settings["max_images"])
        measured = measured_sizes(images, pixel_scale_arcsec=scale, settings=measure)
        summary[label] = size_agreement(measured, requested, peak_flux, flux_bins=int(settings["flux_bins"]),
                                        n_shuffles=int(settings["n_shuffles"]),
                                        rng=generator(seed, "evaluation.size_null", k))
        points[label] = (requested, measured, peak_flux)
        log.info("%s: %s", label, summary[label])
    document = {**summary, "size_measure": {"size_source": size_source, **measure.as_dict()},
                "null": {"flux_bins": int(settings["flux_bins"]), "n_shuffles": int(settings["n_shuffles"]),
                         "seed": int(seed), "stream": "evaluation.size_null"}}
    with atomic_path(output_json) as tmp:
        Path(tmp).write_text(json.dumps(_json_value(document), indent=2, sort_keys=True))
    _plot(points, summary, figure, size_source=size_source, plt=plt)
    return summary


def _plot(points, summary, figure, *, size_source: str, plt) -> None:
    fig, axes = plt.subplots(1, len(points), figsize=(5.4 * len(points), 4.8), squeeze=False)
    requested_name = "Feret size" if size_source == "feret" else "catalogue LAS"
    for ax, (label, (requested, measured, peak_flux)) in zip(axes[0], points.items()):
        with np.errstate(divide="ignore", invalid="ignore"):
            colour = np.log10(peak_flux * 1e3)
        dots = ax.scatter(requested, measured, c=colour, s=8, alpha=0.7, cmap="viridis")
        fig.colorbar(dots, ax=ax, label="log10 requested peak flux [mJy/beam]")
        lo = np.nanmin(np.concatenate([requested, measured, [1.0]]))
        hi = np.nanmax(np.concatenate([requested, measured, [10.0]]))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="measured = requested")
        s = summary[label]
        ax.set(xscale="log", yscale="log", xlabel=f"requested size ({requested_name}) [arcsec]",
               ylabel="measured Feret size [arcsec]",
               title=f"{label}: rho {s['spearman_rho']:.2f}, given flux {s['partial_spearman_rho']:.2f}\n"
                     f"flux-bin shuffle null z {s['null_z']:.1f}, scatter {s['scatter_log_ratio']:.2f} dex")
        ax.legend(fontsize=8, loc="upper left")
        if s["n"] == 0:
            ax.text(0.5, 0.5, f"no measurable source in {s['n_without_source']} images", ha="center",
                    transform=ax.transAxes, color="grey")
    fig.tight_layout()
    save_figure(fig, figure, dpi=110)
    plt.close(fig)
