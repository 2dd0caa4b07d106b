"""Does a source finder recover what was placed?  PyBDSF on the map vs the truth.

PyBDSF runs on the whole map as the LoTSS pipeline runs it on a mosaic
(thresholds ``pybdsf_thresh_isl`` / ``pybdsf_thresh_pix``; LoTSS-DR2 used 4
and 5, Shimwell et al. 2022).  A recovered source matches the truth source
nearest to it when it lies within max(``match_radius_arcsec``, LAS/2) of the
truth position (the flux-weighted centre of the placed emission); PyBDSF may
split an extended source into several, so a truth source may have several
matches, whose fluxes are summed.  With the sky model's footprint image, a
recovered source whose position falls on a truth source's placed emission
(grown by half a beam FWHM) matches that source whatever its distance: the
lobes of an extended source are its own, not false detections.

Measures, per flux bin and overall:

- completeness: fraction of truth sources with at least one match, vs true
  total flux;
- reliability: fraction of recovered sources that match a truth source, vs
  recovered total flux;
- flux ratio S_recovered / S_true vs the true peak S/N;
- positional offsets (flux-weighted centre of the matches minus truth), arcsec;
- Euclidean-normalised differential counts S^2.5 dN/dS [Jy^1.5 sr^-1] of
  truth sources and of recovered sources after association
  (:func:`associated_fluxes`: the PyBDSF sources matched to one truth source
  count once, with their fluxes summed; unmatched detections count each):
  PyBDSF splits an extended source into several, and counting those pieces
  against truth sources would compare components with sources.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord
from astropy.io import fits
import astropy.units as u

from radiogen.errors import InputFileError
from radiogen.io import atomic_path, save_figure
from radiogen.lotss.mosaic import header_frequency_hz
from radiogen.skymap.settings import MapSettings

__all__ = ["find_sources", "footprint_rows", "match_catalogues", "binned_fraction", "euclidean_counts",
           "associated_fluxes", "convolved_major_fwhm", "size_sample", "summary_table", "SIZE_SNR_MIN",
           "compare_summaries", "plot_comparison", "COMPARED_MEASURES",
           "plot_validation", "plot_map", "validate_map", "RECOVERED_COLUMNS"]

log = logging.getLogger(__name__)

#: PyBDSF's source list: fluxes in mJy (per beam for peaks), positions in deg, sizes
#: (FWHM, the fitted ``Maj``/``Min`` including the beam, ``DC_`` deconvolved) in arcsec.
RECOVERED_COLUMNS = ("Source_id", "RA", "DEC", "Total_flux", "E_Total_flux", "Peak_flux", "Isl_rms",
                     "Maj", "Min", "DC_Maj", "DC_Min", "S_Code")

#: Sizes are compared for Gaussian truth sources matched by one PyBDSF source at a true
#: peak S/N at least this (fainter fits are dominated by the noise).
SIZE_SNR_MIN = 10.0


def find_sources(map_path: str | Path, output_csv: str | Path, *, thresh_isl: float, thresh_pix: float
                 ) -> pd.DataFrame:
    """Run PyBDSF on a map FITS and write its source list (mJy, mJy/beam, arcsec, deg).

    The frequency comes from the header (RESTFRQ/FREQ), which PyBDSF itself
    does not read from RESTFRQ.
    """
    from radiogen.evaluation.pybdsf_runtime import bdsf_errstate, import_bdsf

    map_path = Path(map_path)
    if not map_path.exists():
        raise InputFileError(f"{map_path}: map does not exist")
    header = fits.getheader(map_path)
    frequency = header_frequency_hz(header)
    if frequency is None:
        raise InputFileError(f"{map_path}: no frequency (RESTFRQ) in the header")
    bdsf = import_bdsf()
    workdir = Path(output_csv).parent / (Path(output_csv).stem + "_pybdsf")
    workdir.mkdir(parents=True, exist_ok=True)
    with bdsf_errstate():
        img = bdsf.process_image(str(map_path), thresh_isl=float(thresh_isl), thresh_pix=float(thresh_pix),
                                 frequency=frequency, quiet=True, ncores=1, outdir=str(workdir))
    rows = []
    for src in getattr(img, "sources", []) or []:
        ra, dec = src.posn_sky_centroid
        rows.append({
            "Source_id": int(src.source_id),
            "RA": float(ra) % 360.0,
            "DEC": float(dec),
            "Total_flux": float(src.total_flux) * 1e3,
            "E_Total_flux": float(src.total_fluxE) * 1e3,
            "Peak_flux": float(src.peak_flux_max) * 1e3,
            "Isl_rms": float(src.rms_isl) * 1e3,
            "Maj": float(src.size_sky[0]) * 3600.0,
            "Min": float(src.size_sky[1]) * 3600.0,
            "DC_Maj": float(src.deconv_size_sky[0]) * 3600.0,
            "DC_Min": float(src.deconv_size_sky[1]) * 3600.0,
            "S_Code": str(src.code),
        })
    table = pd.DataFrame(rows, columns=list(RECOVERED_COLUMNS))
    with atomic_path(output_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")
    log.info("PyBDSF found %d source(s) in %s (thresh_isl %g, thresh_pix %g)", len(table), map_path,
             thresh_isl, thresh_pix)
    return table


def footprint_rows(footprint: np.ndarray, header: fits.Header, ra, dec, *, grow_px: float) -> np.ndarray:
    """Truth row under each sky position on the footprint image (grown by ``grow_px``); -1 if none."""
    from astropy.wcs import WCS
    from scipy import ndimage

    footprint = np.asarray(footprint)
    radius = int(np.ceil(grow_px))
    gy, gx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    grown = np.where(footprint > 0, footprint,
                     ndimage.grey_dilation(footprint, footprint=gx**2 + gy**2 <= grow_px**2))
    x, y = WCS(header).celestial.world_to_pixel_values(np.asarray(ra, float), np.asarray(dec, float))
    ix, iy = np.floor(np.asarray(x) + 0.5).astype(int), np.floor(np.asarray(y) + 0.5).astype(int)
    inside = (ix >= 0) & (iy >= 0) & (ix < footprint.shape[1]) & (iy < footprint.shape[0])
    rows = np.full(ix.shape, -1, dtype=np.int64)
    rows[inside] = grown[iy[inside], ix[inside]].astype(np.int64) - 1
    return rows


def match_catalogues(truth: pd.DataFrame, recovered: pd.DataFrame, *, radius_arcsec: float,
                     footprint_row: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match recovered sources to a truth source: its footprint, else the nearest one in reach.

    ``footprint_row`` (per recovered source, from :func:`footprint_rows`)
    takes precedence where it is >= 0.

    Returns
    -------
    truth : DataFrame
        With ``n_matches``, ``Recovered_flux`` (sum of matched Total_flux,
        mJy), ``dRA``, ``dDEC`` (flux-weighted centre of the matches minus
        truth, arcsec), and ``Recovered_Maj``, ``Recovered_DC_Maj`` (arcsec:
        the fitted and deconvolved major FWHM of a single match; NaN for none
        or several, whose sizes are not one source's).
    recovered : DataFrame
        With ``truth_row`` (row of the truth table, -1 if none) and
        ``separation`` (arcsec to the nearest truth source).
    """
    truth = truth.reset_index(drop=True).copy()
    recovered = recovered.reset_index(drop=True).copy()
    recovered["truth_row"] = -1
    recovered["separation"] = np.nan
    truth["n_matches"] = 0
    truth["Recovered_flux"] = 0.0
    truth["dRA"] = np.nan
    truth["dDEC"] = np.nan
    truth["Recovered_Maj"] = np.nan
    truth["Recovered_DC_Maj"] = np.nan
    if len(truth) and len(recovered):
        tc = SkyCoord(truth["RA"].to_numpy() * u.deg, truth["DEC"].to_numpy() * u.deg)
        rc = SkyCoord(recovered["RA"].to_numpy() * u.deg, recovered["DEC"].to_numpy() * u.deg)
        nearest, sep, _ = rc.match_to_catalog_sky(tc)
        sep = sep.to_value(u.arcsec)
        radius = np.maximum(radius_arcsec, truth["LAS"].to_numpy() / 2.0)[nearest]
        ok = sep <= radius
        rows = np.where(ok, nearest, -1)
        if footprint_row is not None:
            rows = np.where(np.asarray(footprint_row) >= 0, footprint_row, rows)
            ok = rows >= 0
        recovered["separation"] = sep
        recovered.loc[ok, "truth_row"] = rows[ok]
        for row, group in recovered[ok].groupby("truth_row"):
            truth.loc[row, "n_matches"] = len(group)
            truth.loc[row, "Recovered_flux"] = group["Total_flux"].sum()
            weight = group["Total_flux"].clip(lower=0).to_numpy() + 1e-30
            cos_dec = np.cos(np.deg2rad(truth.loc[row, "DEC"]))
            d_ra = ((group["RA"].to_numpy() - truth.loc[row, "RA"] + 180.0) % 360.0 - 180.0) * cos_dec
            d_dec = group["DEC"].to_numpy() - truth.loc[row, "DEC"]
            truth.loc[row, "dRA"] = float(np.average(d_ra, weights=weight)) * 3600.0
            truth.loc[row, "dDEC"] = float(np.average(d_dec, weights=weight)) * 3600.0
            if len(group) == 1 and "DC_Maj" in group.columns:
                truth.loc[row, "Recovered_Maj"] = float(group["Maj"].iloc[0])
                truth.loc[row, "Recovered_DC_Maj"] = float(group["DC_Maj"].iloc[0])
    return truth, recovered


def binned_fraction(values: np.ndarray, success: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    """Fraction of successes per bin with its binomial error sqrt(p (1 - p) / n)."""
    values, success = np.asarray(values, float), np.asarray(success, bool)
    which = np.digitize(values, edges) - 1
    rows = []
    for b in range(len(edges) - 1):
        sel = which == b
        n = int(sel.sum())
        p = float(success[sel].mean()) if n else np.nan
        rows.append({"low": edges[b], "high": edges[b + 1], "n": n, "fraction": p,
                     "error": float(np.sqrt(p * (1 - p) / n)) if n else np.nan})
    return pd.DataFrame(rows)


def euclidean_counts(flux_mjy: np.ndarray, edges_mjy: np.ndarray, *, area_deg2: float) -> pd.DataFrame:
    """S^2.5 dN/dS in Jy^1.5 sr^-1 per flux bin (S at the bin's geometric centre), Poisson errors."""
    flux_jy = np.asarray(flux_mjy, float) * 1e-3
    edges = np.asarray(edges_mjy, float) * 1e-3
    counts, _ = np.histogram(flux_jy, edges)
    area_sr = area_deg2 * (np.pi / 180.0) ** 2
    centre = np.sqrt(edges[:-1] * edges[1:])
    norm = centre**2.5 / (np.diff(edges) * area_sr)
    return pd.DataFrame({"S_jy": centre, "n": counts, "counts": counts * norm,
                         "error": np.sqrt(counts) * norm})


def associated_fluxes(truth: pd.DataFrame, recovered: pd.DataFrame) -> np.ndarray:
    """Recovered total fluxes after association with the truth, mJy.

    One value per truth source with at least one match (``Recovered_flux``,
    the sum of its matched PyBDSF sources from :func:`match_catalogues`) and
    one per unmatched PyBDSF source (``truth_row`` -1, its own Total_flux).
    """
    matched = truth.loc[truth["n_matches"] > 0, "Recovered_flux"].to_numpy(dtype=float)
    unmatched = recovered.loc[recovered["truth_row"] < 0, "Total_flux"].to_numpy(dtype=float)
    return np.concatenate([matched, unmatched])


def _flux_edges(*fluxes: np.ndarray, n_bins: int) -> np.ndarray:
    values = np.concatenate([np.asarray(f, float) for f in fluxes])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return np.array([1.0, 10.0])
    low, high = values.min(), values.max()
    if high <= low * 1.01:
        low, high = low / 1.5, high * 1.5
    return np.logspace(np.log10(low), np.log10(high * 1.0001), n_bins + 1)


def convolved_major_fwhm(major, minor, pa_deg, beam: tuple[float, float, float]) -> np.ndarray:
    """Major FWHM of Gaussians (FWHM ``major``, ``minor``, position angle ``pa_deg``) convolved
    with an elliptical ``beam`` (BMAJ, BMIN in the same unit, BPA in deg; both angles measured
    the same way): the covariances add, and the larger eigenvalue is the major axis squared."""
    def covariance(a, b, angle_deg):
        angle = np.deg2rad(np.asarray(angle_deg, dtype=float))
        c, s = np.cos(angle), np.sin(angle)
        a2, b2 = np.asarray(a, dtype=float) ** 2, np.asarray(b, dtype=float) ** 2
        return a2 * c * c + b2 * s * s, a2 * s * s + b2 * c * c, (a2 - b2) * c * s

    xx, yy, xy = (u + v for u, v in zip(covariance(major, minor, pa_deg), covariance(*beam)))
    return np.sqrt((xx + yy) / 2 + np.sqrt(((xx - yy) / 2) ** 2 + xy**2))


def size_sample(truth: pd.DataFrame, *, rms_mjy: float, beam: tuple[float, float, float]) -> pd.DataFrame:
    """Truth rows whose recovered size can be compared with the truth, with ``Maj_expected``.

    Gaussian sources (exact intrinsic axes) matched by exactly one PyBDSF source,
    at a true peak S/N of at least :data:`SIZE_SNR_MIN`; ``Maj_expected`` (arcsec)
    is the intrinsic Gaussian convolved with the searched map's own ``beam``
    (BMAJ, BMIN arcsec, BPA deg: an interferometric map's restoring beam is not
    the survey's).
    """
    if not {"Recovered_Maj", "Maj", "Min", "PA", "kind"} <= set(truth.columns):
        return pd.DataFrame({name: np.zeros(0) for name in ("Maj", "Min", "PA", "Recovered_Maj",
                                                             "Recovered_DC_Maj", "Maj_expected")})
    keep = ((truth["kind"] == "gaussian") & (truth["n_matches"] == 1) & truth["Recovered_Maj"].notna()
            & (truth["Peak_flux"] / rms_mjy >= SIZE_SNR_MIN))
    sample = truth[keep]
    return sample.assign(Maj_expected=convolved_major_fwhm(sample["Maj"], sample["Min"], sample["PA"], beam))


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def _half_range(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    q16, q84 = np.percentile(values, [16, 84])
    return float((q84 - q16) / 2)


def summary_table(truth: pd.DataFrame, recovered: pd.DataFrame, *, n_input: int, rms_mjy: float,
                  beam: tuple[float, float, float]) -> pd.DataFrame:
    """One row per measure: name, value, what it means (``beam``: the map's, for sizes)."""
    found = truth["n_matches"] > 0
    snr = truth["Peak_flux"] / rms_mjy
    bright = snr >= 10
    ratio = (truth["Recovered_flux"] / truth["Total_flux"])[found]
    offsets = np.hypot(truth["dRA"], truth["dDEC"])[found]
    q16, q50, q84 = (np.percentile(ratio, [16, 50, 84]) if len(ratio) else (np.nan,) * 3)

    def frac(mask) -> float:
        return float(mask.mean()) if len(mask) else float("nan")

    rows = [
        ("input_sources", n_input, "catalogue rows on the map"),
        ("placed_sources", len(truth), "sources with emission above the stamp thresholds (truth catalogue)"),
        ("recovered_sources", len(recovered), "PyBDSF sources (components of extended sources) in the map"),
        ("associated_sources", len(associated_fluxes(truth, recovered)),
         "recovered after association: truth sources with matches + unmatched PyBDSF sources (counts)"),
        ("completeness", frac(found), "truth sources with a recovered match"),
        ("completeness_snr_ge_10", frac(found[bright]), "the same for true peak S/N >= 10"),
        ("reliability", frac(recovered["truth_row"] >= 0), "recovered sources matching a truth source"),
        ("flux_ratio_median", float(q50), "S_recovered / S_true (matched, summed over PyBDSF components)"),
        ("flux_ratio_scatter", float((q84 - q16) / 2), "half the 16-84 percentile range of the ratio"),
        ("offset_median_arcsec", float(np.median(offsets)) if len(offsets) else np.nan,
         "flux-weighted centre of the matches - truth position"),
        ("dRA_median_arcsec", float(np.nanmedian(truth["dRA"])) if found.any() else np.nan, "RA cos(Dec) offset"),
        ("dDEC_median_arcsec", float(np.nanmedian(truth["dDEC"])) if found.any() else np.nan, "Dec offset"),
    ]
    sized = size_sample(truth, rms_mjy=rms_mjy, beam=beam)
    size_ratio = (sized["Recovered_Maj"] / sized["Maj_expected"]).to_numpy(dtype=float)
    resolved = sized["Maj"] >= sized["Maj_expected"] / 2  # intrinsic size at least ~0.6 beam
    dc_ratio = (sized["Recovered_DC_Maj"] / sized["Maj"])[resolved].to_numpy(dtype=float)
    rows += [
        ("size_sources", len(sized), f"Gaussian truth sources with one PyBDSF match, true S/N >= {SIZE_SNR_MIN:g}"),
        ("size_ratio_median", _median(size_ratio), "fitted Maj / true Maj convolved with this map's beam (FWHM)"),
        ("size_ratio_scatter", _half_range(size_ratio), "half the 16-84 percentile range of that ratio"),
        ("deconvolved_size_sources", int(np.isfinite(dc_ratio).sum()),
         "of those, with intrinsic Maj >= half their convolved Maj (resolved)"),
        ("deconvolved_size_unresolved", int((dc_ratio == 0).sum()),
         "of those, PyBDSF could not deconvolve (DC_Maj = 0): enter the median as 0, an upper limit"),
        ("deconvolved_size_ratio_median", _median(dc_ratio),
         "deconvolved Maj / intrinsic Maj, for those with intrinsic Maj >= half their convolved Maj "
         "(PyBDSF's 0 for a fit no larger than the beam kept: leaving it out would select on the outcome)"),
    ]
    if "Requested_LAS" in truth.columns and truth["Requested_LAS"].notna().sum() >= 3:
        from radiogen.evaluation.size import size_agreement

        agreement = size_agreement(truth["LAS"].to_numpy(), truth["Requested_LAS"].to_numpy())
        rows += [
            ("size_spearman_rho", agreement["spearman_rho"], "placed LAS vs requested LAS (size conditioning)"),
            ("size_log_ratio_median", agreement["median_log_ratio"], "median log10(placed / requested LAS)"),
            ("size_log_ratio_scatter", agreement["scatter_log_ratio"], "its half 16-84 percentile range, dex"),
        ]
    return pd.DataFrame(rows, columns=["measure", "value", "meaning"])


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no sources", ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_validation(truth: pd.DataFrame, recovered: pd.DataFrame, output: str | Path, *, rms_mjy: float,
                    area_deg2: float, beam: tuple[float, float, float], title: str) -> None:
    """Six panels: completeness and reliability, flux ratio vs S/N, offsets, source counts,
    and the sizes of :func:`size_sample` (fitted vs convolved truth, deconvolved vs intrinsic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_bins = int(np.clip(len(truth) // 8, 3, 10))
    associated = associated_fluxes(truth, recovered)
    edges = _flux_edges(truth["Total_flux"], recovered["Total_flux"], associated, n_bins=n_bins)
    found = (truth["n_matches"] > 0).to_numpy()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    for frame, values, success, label in (
            (truth, truth["Total_flux"], found, "completeness (vs true flux)"),
            (recovered, recovered["Total_flux"], recovered["truth_row"] >= 0, "reliability (vs recovered flux)")):
        table = binned_fraction(values, success, edges)
        centre = np.sqrt(table["low"] * table["high"])
        ax.errorbar(centre, table["fraction"], yerr=table["error"], marker="o", capsize=3, label=label)
    ax.set(xscale="log", xlabel="total flux [mJy]", ylabel="fraction", ylim=(-0.05, 1.05))
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    snr = truth["Peak_flux"] / rms_mjy
    ratio = truth["Recovered_flux"] / truth["Total_flux"]
    ax.scatter(snr[found], ratio[found], s=10, alpha=0.7)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="true peak S/N", ylabel="S_recovered / S_true")
    if found.any():
        ax.set_xscale("log")
    else:
        _no_data(ax)
    ax = axes[1, 0]
    ax.scatter(truth["dRA"][found], truth["dDEC"][found], s=10, alpha=0.7)
    ax.add_patch(plt.Circle((0, 0), beam[0] / 2, fill=False, ls="--", color="grey", label="beam FWHM / 2"))
    lim = max(beam[0], float(np.nanmax(np.abs(truth[["dRA", "dDEC"]].to_numpy()[found]))) if found.any() else 1.0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="ΔRA cos δ [arcsec]",
           ylabel="ΔDec [arcsec]")
    ax.legend(fontsize=8)
    if not found.any():
        _no_data(ax)
    ax = axes[1, 1]
    plotted = False
    for flux, label in ((truth["Total_flux"], f"truth ({len(truth)} sources)"),
                        (associated, f"PyBDSF after association ({len(associated)}):\nmatched components "
                                     f"summed per truth source\n+ unmatched ({len(recovered)} components)")):
        counts = euclidean_counts(flux, edges, area_deg2=area_deg2)
        keep = (counts["n"] > 0).to_numpy()
        if keep.any():
            ax.errorbar(counts["S_jy"][keep], counts["counts"][keep], yerr=counts["error"][keep], marker="o",
                        capsize=3, label=label)
            plotted = True
    ax.set(xlabel="total flux S [Jy]", ylabel="S^2.5 dN/dS [Jy^1.5 sr^-1]",
           title="source counts (recovered: counted after association)")
    if plotted:
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=7)
    else:
        _no_data(ax)
    sized = size_sample(truth, rms_mjy=rms_mjy, beam=beam)
    resolved = sized["Maj"] >= sized["Maj_expected"] / 2
    for ax, (x, y, xlabel, ylabel, what) in zip(axes[:, 2], (
            (sized["Maj_expected"], sized["Recovered_Maj"], "true Maj convolved with the map's beam [arcsec]",
             "PyBDSF Maj [arcsec]", "size recovery (fitted)"),
            (sized["Maj"][resolved], sized["Recovered_DC_Maj"][resolved], "true intrinsic Maj [arcsec]",
             "PyBDSF deconvolved Maj [arcsec]", "size recovery (deconvolved)"))):
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{what}: {len(x)} Gaussians, S/N >= {SIZE_SNR_MIN:g}")
        if len(x):
            ax.scatter(x, y, s=10, alpha=0.7)
            top = float(np.nanmax(np.concatenate([x.to_numpy(float), y.to_numpy(float)]))) * 1.1
            ax.plot([0, top], [0, top], color="k", lw=0.8, label="1:1")
            ax.set(xlim=(0, top), ylim=(0, top))
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, output, dpi=110)
    plt.close(fig)


def _sky_plane(data: np.ndarray, *, source) -> np.ndarray:
    """The 2-D sky plane of an image whose other axes (frequency, Stokes) have length 1."""
    data = np.asarray(data, dtype=np.float64)
    if data.ndim < 2 or any(n != 1 for n in data.shape[:-2]):
        raise InputFileError(f"{source}: expected one sky plane, got an image of shape {data.shape}")
    return data.reshape(data.shape[-2:])


def plot_map(map_path: str | Path, truth: pd.DataFrame, recovered: pd.DataFrame, output: str | Path, *,
             title: str) -> None:
    """The map (asinh stretch) with truth (circles) and PyBDSF (crosses) positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval
    from astropy.wcs import WCS

    with fits.open(map_path) as hdul:
        # WSClean's images have FREQ and STOKES axes of length 1: the sky plane is the last two axes.
        data, header = _sky_plane(hdul[0].data, source=map_path), hdul[0].header
    wcs = WCS(header).celestial
    fig = plt.figure(figsize=(8, 8))
    ax = fig.add_subplot(projection=wcs)
    norm = ImageNormalize(data, interval=PercentileInterval(99.8), stretch=AsinhStretch(0.05))
    ax.imshow(data, origin="lower", cmap="inferno", norm=norm)
    if len(truth):
        x, y = wcs.world_to_pixel_values(truth["RA"], truth["DEC"])
        ax.scatter(x, y, s=120, facecolors="none", edgecolors="cyan", lw=0.8, label="truth")
    if len(recovered):
        x, y = wcs.world_to_pixel_values(recovered["RA"], recovered["DEC"])
        ax.scatter(x, y, s=30, marker="x", color="lime", lw=0.8, label="PyBDSF")
    ax.set(xlabel="RA", ylabel="Dec", title=title)
    if len(truth) or len(recovered):
        ax.legend(loc="upper right", fontsize=8)
    save_figure(fig, output, dpi=110)
    plt.close(fig)


def validate_map(map_path: str | Path, truth_csv: str | Path, recovered_csv: str | Path,
                 sources_csv: str | Path, *, settings: MapSettings, sky_model_path: str | Path,
                 table_path: str | Path,
                 figure_path: str | Path, map_figure_path: str | Path, name: str) -> pd.DataFrame:
    """Match, measure and plot; writes the summary table (TSV) and two figures."""
    for path in (map_path, truth_csv, recovered_csv, sources_csv, sky_model_path):
        if not Path(path).exists():
            raise InputFileError(f"{path}: does not exist")
    truth = pd.read_csv(truth_csv)
    recovered = pd.read_csv(recovered_csv)
    missing = [c for c in RECOVERED_COLUMNS if c not in recovered.columns]
    if missing:
        raise InputFileError(f"{recovered_csv}: no column(s) {', '.join(missing)}; it was written by an older "
                             "`radiogen skymap find` (rerun that step)")
    n_input = len(pd.read_csv(sources_csv))
    header = fits.getheader(map_path)
    size_deg = int(header["NAXIS1"]) * abs(float(header["CDELT2"]))
    rms_mjy = settings.noise_rms_ujy * 1e-3
    with fits.open(sky_model_path) as hdul:
        if "FOOTPRINT" not in hdul:
            raise InputFileError(f"{sky_model_path}: no FOOTPRINT extension (not a radiogen sky model)")
        footprint = hdul["FOOTPRINT"].data
    grow_px = float(header["BMAJ"]) / abs(float(header["CDELT2"])) / 2.0
    rows = footprint_rows(footprint, header, recovered["RA"], recovered["DEC"], grow_px=grow_px)
    truth, recovered = match_catalogues(truth, recovered, radius_arcsec=settings.match_radius_arcsec,
                                        footprint_row=rows)
    beam = (float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0, float(header.get("BPA", 0.0)))
    table = summary_table(truth, recovered, n_input=n_input, rms_mjy=rms_mjy, beam=beam)
    with atomic_path(table_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    title = f"simulated map {name}: {len(truth)} placed, {len(recovered)} recovered"
    plot_validation(truth, recovered, figure_path, rms_mjy=rms_mjy, area_deg2=size_deg**2,
                    beam=beam, title=title)
    plot_map(map_path, truth, recovered, map_figure_path, title=title)
    if len(truth) == 0:
        log.warning("%s: no source was placed on the map (every generated image was below the stamp "
                    "thresholds); the measures are undefined", name)
    log.info("validation of %s:\n%s", name, table.to_string(index=False))
    return table


#: Measures of :func:`summary_table` set side by side for two maps of one truth catalogue.
COMPARED_MEASURES = ("placed_sources", "recovered_sources", "associated_sources", "completeness",
                     "completeness_snr_ge_10", "reliability", "flux_ratio_median", "flux_ratio_scatter",
                     "offset_median_arcsec", "size_sources", "size_ratio_median", "size_ratio_scatter",
                     "deconvolved_size_sources", "deconvolved_size_unresolved", "deconvolved_size_ratio_median")


def compare_summaries(tables: dict[str, str | Path], *, table_path: str | Path, figure_path: str | Path
                      ) -> pd.DataFrame:
    """The validation tables of maps of one sky (label -> TSV of :func:`summary_table`) side by side.

    Writes a TSV (``measure``, one column per label, ``meaning``) of
    :data:`COMPARED_MEASURES` and the figure of :func:`plot_comparison`.
    """
    if len(tables) < 2:
        raise InputFileError(f"compare needs at least two validation tables, got {len(tables)}")
    columns = {}
    meaning = None
    for label, path in tables.items():
        if not Path(path).exists():
            raise InputFileError(f"{path}: validation table of {label!r} does not exist")
        table = pd.read_csv(path, sep="\t", index_col="measure")
        missing = [m for m in COMPARED_MEASURES if m not in table.index]
        if missing:
            raise InputFileError(f"{path}: lacks the measure(s) {', '.join(missing)}: not a map validation table, "
                                 "or one of an older radiogen (validate the map again)")
        columns[label] = pd.to_numeric(table.loc[list(COMPARED_MEASURES), "value"], errors="coerce")
        meaning = table.loc[list(COMPARED_MEASURES), "meaning"] if meaning is None else meaning
    placed = {label: values["placed_sources"] for label, values in columns.items()}
    if len(set(placed.values())) > 1:
        raise InputFileError(f"the maps compared do not share one truth catalogue: placed sources {placed}")
    comparison = pd.DataFrame(columns)
    comparison.index.name = "measure"
    comparison["meaning"] = meaning
    comparison = comparison.reset_index()
    with atomic_path(table_path) as tmp:
        comparison.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    plot_comparison(comparison, figure_path)
    log.info("maps compared:\n%s", comparison.drop(columns="meaning").to_string(index=False))
    return comparison


def plot_comparison(comparison: pd.DataFrame, output: str | Path) -> None:
    """Bars per map: completeness, reliability and the median S_rec/S_true (16-84 % half range)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = comparison.set_index("measure")
    labels = [c for c in table.columns if c != "meaning"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    panels = (("completeness", None, "completeness", (0, 1.05)),
              ("reliability", None, "reliability", (0, 1.05)),
              ("flux_ratio_median", "flux_ratio_scatter", "median S_recovered / S_true", None))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (measure, error, ylabel, ylim) in zip(axes, panels):
        values = table.loc[measure, labels].to_numpy(dtype=float)
        errors = table.loc[error, labels].to_numpy(dtype=float) if error else None
        x = np.arange(len(labels))
        shown = np.isfinite(values)
        ax.bar(x[shown], values[shown], color=[colours[k % len(colours)] for k in x[shown]],
               yerr=None if errors is None else np.nan_to_num(errors[shown]), capsize=4)
        for k in x[~shown]:
            ax.text(k, 0.5, "undefined\n(no sources)", ha="center", va="center", color="grey", fontsize=8,
                    transform=ax.get_xaxis_transform())
        if measure == "flux_ratio_median":
            ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(x, labels)
        ax.set(ylabel=ylabel, xlim=(-0.6, len(labels) - 0.4))
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_title(measure)
    placed = int(table.loc["placed_sources", labels[0]])
    recovered = ", ".join(f"{label} {int(table.loc['recovered_sources', label])}" for label in labels)
    fig.suptitle(f"one sky ({placed} placed sources), two maps; PyBDSF sources: {recovered}")
    fig.tight_layout()
    save_figure(fig, output, dpi=110)
    plt.close(fig)
