"""A realistic sky for a simulated map: a 144 MHz source population and its Gaussians.

Counts
------
Total (integrated) flux densities are drawn from the Euclidean-normalised
differential source counts at 154 MHz of Franzen et al. (2016, MNRAS 459,
3314; the fifth-order polynomial in log10 S fitted to the MWA counts and
published deeper 150 MHz counts)::

    log10(S^2.5 dN/dS / Jy^1.5 sr^-1) = sum_i a_i (log10 S/Jy)^i,
    a = (3.52, 0.307, -0.388, -0.0404, 0.0351, 0.006)

(:data:`FRANZEN_COEFFICIENTS`).  Provenance: the coefficients were taken from
a public implementation of that fit in radio-simulation code (which names it
"Franzen 2019" and applies it above 1 mJy), not re-read from the paper here
(no access); check them against the paper before quoting.  Below 1 mJy the
polynomial is extrapolated: it stays flat at S^2.5 dN/dS = 33-38 down to
0.1 mJy, the level of the LoTSS-Deep counts (Mandal et al. 2021) there.
Fluxes are moved from 154 to 144 MHz with a spectral index of -0.7
(S proportional to nu^alpha, :data:`SPECTRAL_INDEX`).

Integrated above 5 sigma of LoTSS-DR2 (5 x 83 uJy = 0.415 mJy) to 1 Jy the
counts give 1.03e3 sources per deg^2 (:func:`integral_counts_deg2`).  DR2
catalogues ~780 per deg^2: its catalogue needs a *peak* above 5 sigma of the
local rms (median 83 uJy, often higher), so resolved and noisier-field sources
above 0.415 mJy total are missing from it; the two numbers are of one order,
not equal, and radiogen reproduces the counts' integral, not the 780.

Sizes
-----
Intrinsic sizes of the faint population follow Windhorst, Mathis & Neuschaefer
(1990, ASP Conf. Ser. 10, 389), as used for 1.4 GHz completeness corrections
(e.g. Bondi et al. 2003, Prandoni et al. 2001): median largest angular size
theta_med = 2 arcsec (S_1.4GHz / 1 mJy)^0.30 and the integral distribution
h(> theta) = exp[-ln 2 (theta / theta_med)^0.62], with S_1.4GHz from the
144 MHz flux at alpha = -0.7.  theta is taken as the Gaussian's FWHM major
axis; the minor axis is theta times an axis ratio uniform on [0.5, 1] and the
position angle (north through east) is uniform: both are radiogen's
assumptions, not a published fit.  Sizes are capped at
:data:`MAX_SIZE_ARCSEC`.

Resolved or not
---------------
A source's peak flux after convolution with the circular restoring beam b is
S_peak = S_total b^2 / (theta_maj,c theta_min,c), theta_c^2 = theta^2 + b^2
(Gaussian convolved with Gaussian).  It is resolved by the LoTSS-DR2 criterion
(:func:`radiogen.lotss.catalogue.resolved_mask`, Shimwell et al. 2022) applied
to these noise-free values, with sigma(S_total) = rms sqrt(theta_maj,c
theta_min,c / b^2) (the noise of the beams the source covers).

Gaussians
---------
:func:`intrinsic_stamp` draws a Gaussian in Jy/pixel (sampled at pixel centres,
or averaged over sub-pixels when smaller than a pixel, and normalised so that
its pixels sum to the total flux exactly);
:func:`convolved_stamp` draws the same source convolved with the beam in
Jy/beam, analytically (the covariances add), so that its sum over the beam
area in pixels is the total flux.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import integrate

from radiogen.errors import CatalogueError, InputFileError

__all__ = ["FRANZEN_COEFFICIENTS", "COUNTS_FREQUENCY_HZ", "SPECTRAL_INDEX", "MAX_SIZE_ARCSEC",
           "euclidean_counts", "differential_counts", "integral_counts_deg2", "draw_total_fluxes",
           "median_size_arcsec", "draw_sizes", "convolved_fwhm", "convolved_peak", "total_flux_error",
           "resolved", "intrinsic_stamp", "convolved_stamp", "stamp_half_size_px", "read_population_catalogue",
           "FLUX_UNITS", "SIZE_UNITS"]

#: a_0..a_5 of log10(S^2.5 dN/dS [Jy^1.5 sr^-1]) in x = log10(S / Jy) at 154 MHz (Franzen et al. 2016).
FRANZEN_COEFFICIENTS = (3.52, 0.307, -0.388, -0.0404, 0.0351, 0.006)
#: Frequency of the fitted counts, Hz.
COUNTS_FREQUENCY_HZ = 154e6
#: Spectral index alpha (S ~ nu^alpha) that moves the counts and the Windhorst sizes to the map's frequency.
SPECTRAL_INDEX = -0.7
#: Largest drawn intrinsic FWHM, arcsec (the tail of the Windhorst distribution is unbounded).
MAX_SIZE_ARCSEC = 300.0
#: Smallest FWHM drawn on the pixel grid, pixels (about twice the 7 x 7 sub-sampling step).
MIN_FWHM_PX = 0.25
#: Degrees^2 per steradian.
DEG2_PER_SR = (180.0 / math.pi) ** 2
#: Flux and size units of a user catalogue, factor to mJy and to arcsec.
FLUX_UNITS = {"Jy": 1e3, "mJy": 1.0, "uJy": 1e-3}
SIZE_UNITS = {"arcsec": 1.0, "arcmin": 60.0, "deg": 3600.0}


def _frequency_factor(frequency_hz: float) -> float:
    """S(frequency) / S(154 MHz) for the counts' spectral index."""
    return (float(frequency_hz) / COUNTS_FREQUENCY_HZ) ** SPECTRAL_INDEX


def euclidean_counts(s_jy, *, frequency_hz: float = 144e6) -> np.ndarray:
    """S^2.5 dN/dS at ``frequency_hz``, Jy^1.5 sr^-1, for total fluxes ``s_jy`` at that frequency."""
    return np.asarray(s_jy, dtype=float) ** 2.5 * differential_counts(s_jy, frequency_hz=frequency_hz)


def differential_counts(s_jy, *, frequency_hz: float = 144e6) -> np.ndarray:
    """dN/dS at ``frequency_hz``, sources Jy^-1 sr^-1 (the 154 MHz fit moved in flux at alpha = -0.7)."""
    factor = _frequency_factor(frequency_hz)
    s154 = np.asarray(s_jy, dtype=float) / factor
    x = np.log10(s154)
    log_euclidean = sum(a * x**i for i, a in enumerate(FRANZEN_COEFFICIENTS))
    # N(>S) is conserved under S -> factor S, so dN/dS scales by 1 / factor
    return 10.0**log_euclidean * s154**-2.5 / factor


def integral_counts_deg2(s_min_jy: float, s_max_jy: float, *, frequency_hz: float = 144e6) -> float:
    """Sources per deg^2 with total flux in [s_min_jy, s_max_jy] at ``frequency_hz``."""
    def per_log_s(log_s):
        s = 10.0**log_s
        return float(differential_counts(s, frequency_hz=frequency_hz)) * s * math.log(10.0)

    value, _ = integrate.quad(per_log_s, math.log10(s_min_jy), math.log10(s_max_jy), limit=200)
    return value / DEG2_PER_SR


def draw_total_fluxes(rng: np.random.Generator, n: int, s_min_jy: float, s_max_jy: float, *,
                      frequency_hz: float = 144e6) -> np.ndarray:
    """``n`` total fluxes (Jy) from the counts on [s_min_jy, s_max_jy], by inverse transform sampling."""
    log_s = np.linspace(math.log10(s_min_jy), math.log10(s_max_jy), 4001)
    s = 10.0**log_s
    density = differential_counts(s, frequency_hz=frequency_hz) * s  # dN / dln S
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(log_s))])
    cumulative /= cumulative[-1]
    return 10.0 ** np.interp(rng.uniform(0.0, 1.0, int(n)), cumulative, log_s)


def median_size_arcsec(s_jy, *, frequency_hz: float = 144e6) -> np.ndarray:
    """Windhorst et al. (1990) median size, 2" (S_1.4GHz / mJy)^0.3, for total fluxes at ``frequency_hz``."""
    s_1400_mjy = np.asarray(s_jy, dtype=float) * 1e3 * (1.4e9 / float(frequency_hz)) ** SPECTRAL_INDEX
    return 2.0 * s_1400_mjy**0.30


def draw_sizes(rng: np.random.Generator, s_jy, *, frequency_hz: float = 144e6
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intrinsic FWHM major, minor (arcsec) and position angle (deg) for total fluxes ``s_jy``.

    Major: h(>theta) = exp[-ln2 (theta/theta_med)^0.62] inverted (Windhorst et al. 1990); minor:
    major x U(0.5, 1); PA: U(0, 180) deg, north through east.
    """
    s_jy = np.asarray(s_jy, dtype=float)
    u = rng.uniform(0.0, 1.0, s_jy.size)
    u = np.clip(u, 1e-300, 1.0)
    major = median_size_arcsec(s_jy, frequency_hz=frequency_hz) * (-np.log(u) / math.log(2.0)) ** (1.0 / 0.62)
    major = np.minimum(major, MAX_SIZE_ARCSEC)
    minor = major * rng.uniform(0.5, 1.0, s_jy.size)
    pa = rng.uniform(0.0, 180.0, s_jy.size)
    return major, minor, pa


def convolved_fwhm(fwhm_arcsec, beam_arcsec: float) -> np.ndarray:
    """FWHM of a Gaussian axis convolved with a circular Gaussian beam: sqrt(theta^2 + b^2)."""
    return np.hypot(np.asarray(fwhm_arcsec, dtype=float), float(beam_arcsec))


def convolved_peak(total, major_arcsec, minor_arcsec, beam_arcsec: float) -> np.ndarray:
    """Peak per beam of a Gaussian of integrated flux ``total`` after convolution with the beam.

    S_peak = S_total b^2 / (theta_maj,c theta_min,c) in the units of ``total`` per beam.
    """
    return (np.asarray(total, dtype=float) * float(beam_arcsec) ** 2
            / (convolved_fwhm(major_arcsec, beam_arcsec) * convolved_fwhm(minor_arcsec, beam_arcsec)))


def total_flux_error(rms, major_arcsec, minor_arcsec, beam_arcsec: float) -> np.ndarray:
    """Noise of a Gaussian's integrated flux: rms sqrt(theta_maj,c theta_min,c / b^2) (units of ``rms``)."""
    return float(rms) * np.sqrt(convolved_fwhm(major_arcsec, beam_arcsec)
                                * convolved_fwhm(minor_arcsec, beam_arcsec)) / float(beam_arcsec)


def resolved(total_mjy, peak_mjy, total_error_mjy) -> np.ndarray:
    """The LoTSS-DR2 resolved criterion on (noise-free) fluxes; see radiogen.lotss.catalogue.resolved_mask."""
    from radiogen.lotss.catalogue import resolved_mask

    table = pd.DataFrame({"Total_flux": np.asarray(total_mjy, dtype=float),
                          "E_Total_flux": np.asarray(total_error_mjy, dtype=float),
                          "Peak_flux": np.asarray(peak_mjy, dtype=float)})
    return resolved_mask(table, source="drawn population")


def stamp_half_size_px(major_arcsec: float, beam_arcsec: float, pixel_scale_arcsec: float) -> int:
    """Half side of a Gaussian's stamp: 4 convolved FWHM (the profile there is 1e-19 of the peak)."""
    return int(math.ceil(4.0 * float(convolved_fwhm(major_arcsec, beam_arcsec)) / pixel_scale_arcsec)) + 1


def _gaussian_profile(half: int, *, dx: float, dy: float, major_px: float, minor_px: float, pa_deg: float,
                      oversample: int = 1) -> np.ndarray:
    """exp(-r^T C^-1 r / 2) on a (2 half + 1)^2 stamp, averaged over oversample^2 points per pixel.

    Centre at (half + dx, half + dy) (column, row); PA from +y (north) towards -x (east, RA grows
    leftwards on a sky map).
    """
    # a point (or a source far below a pixel) is drawn at MIN_FWHM_PX: its flux lands in the pixel(s) it lies on
    sigma_major = max(major_px, MIN_FWHM_PX) / math.sqrt(8.0 * math.log(2.0))
    sigma_minor = max(minor_px, MIN_FWHM_PX) / math.sqrt(8.0 * math.log(2.0))
    theta = math.radians(pa_deg)
    axis = np.array([-math.sin(theta), math.cos(theta)])  # major axis direction in (x, y)
    ortho = np.array([axis[1], -axis[0]])
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    grid = np.arange(-half, half + 1, dtype=float)
    x = (grid[None, :, None, None] + offsets[None, None, None, :]) - dx
    y = (grid[:, None, None, None] + offsets[None, None, :, None]) - dy
    along = x * axis[0] + y * axis[1]
    across = x * ortho[0] + y * ortho[1]
    profile = np.exp(-0.5 * ((along / sigma_major) ** 2 + (across / sigma_minor) ** 2))
    return profile.mean(axis=(2, 3))


def intrinsic_stamp(total: float, *, major_arcsec: float, minor_arcsec: float, pa_deg: float, dx: float,
                    dy: float, half: int, pixel_scale_arcsec: float) -> np.ndarray:
    """The intrinsic Gaussian in flux per pixel (units of ``total``), its pixels summing to ``total``.

    Sampled at pixel centres (a pixel of the model is a point to a visibility predictor, so pixel
    averages would blur it by the pixel); a source whose minor FWHM is below a pixel is averaged over
    7 x 7 points per pixel instead, which keeps it from falling between samples.
    """
    minor_px = minor_arcsec / pixel_scale_arcsec
    profile = _gaussian_profile(half, dx=dx, dy=dy, major_px=major_arcsec / pixel_scale_arcsec, minor_px=minor_px,
                                pa_deg=pa_deg, oversample=7 if minor_px < 1.0 else 1)
    return profile * (float(total) / profile.sum())


def convolved_stamp(total: float, *, major_arcsec: float, minor_arcsec: float, pa_deg: float, dx: float,
                    dy: float, half: int, pixel_scale_arcsec: float, beam_arcsec: float) -> np.ndarray:
    """The Gaussian convolved with the circular beam, flux per beam (units of ``total`` per beam).

    Analytic: peak :func:`convolved_peak`, axes :func:`convolved_fwhm`; no normalisation, so its sum
    over the beam area in pixels equals ``total`` to the sampling accuracy (1e-6 for FWHM >= 4 px).
    """
    major_c = float(convolved_fwhm(major_arcsec, beam_arcsec))
    minor_c = float(convolved_fwhm(minor_arcsec, beam_arcsec))
    profile = _gaussian_profile(half, dx=dx, dy=dy, major_px=major_c / pixel_scale_arcsec,
                                minor_px=minor_c / pixel_scale_arcsec, pa_deg=pa_deg)
    return profile * float(convolved_peak(total, major_arcsec, minor_arcsec, beam_arcsec))


def _column_values(table, column: str | None, key: str, path: Path, *, required: bool) -> tuple | None:
    """(values, unit string or None) of a catalogue column; a missing required column names the key."""
    if column is None:
        if required:
            raise CatalogueError(f"{path}: skymap.catalogue_columns.{key} must name a column")
        return None
    if column not in table.colnames:
        if required:
            raise CatalogueError(f"{path}: no column {column!r} (skymap.catalogue_columns.{key}); "
                                 f"the table has {', '.join(table.colnames[:20])}")
        raise CatalogueError(f"{path}: no column {column!r} (skymap.catalogue_columns.{key}); set it to null "
                             "if the catalogue has none")
    values = np.asarray(pd.to_numeric(pd.Series(np.asarray(table[column])), errors="coerce"), dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        raise CatalogueError(f"{path}: column {column!r} has {int(bad.sum())} non-numeric or NaN value(s) "
                             f"(first rows {np.flatnonzero(bad)[:5].tolist()})")
    unit = getattr(table[column], "unit", None)
    return values, (None if unit is None else str(unit))


def _in_units(values: np.ndarray, unit: str | None, *, configured: str, factors: Mapping[str, float],
              target: str, column: str, path: Path, integrated: bool) -> np.ndarray:
    """Values converted to ``target`` from the column's own unit (FITS) or the configured one."""
    import astropy.units as u

    if unit is None:
        return values * factors[configured]
    try:
        parsed = u.Unit(unit)
    except ValueError as err:
        raise CatalogueError(f"{path}: column {column!r} has an unreadable unit {unit!r}") from err
    if integrated and "beam" in str(parsed).lower():
        raise CatalogueError(f"{path}: column {column!r} is in {unit} (a peak quantity, per beam); the population "
                             "needs an integrated (total) flux density")
    try:
        return values * parsed.to(u.Unit(target))
    except u.UnitConversionError as err:
        raise CatalogueError(f"{path}: column {column!r} in {unit} cannot be converted to {target}") from err


def read_population_catalogue(path: str | Path, *, columns: Mapping[str, str | None], flux_unit: str,
                              size_unit: str, sizes: str, beam_arcsec: float) -> pd.DataFrame:
    """A user's source population (CSV or FITS) as RA, DEC [deg], Total_flux [mJy], Maj, Min [arcsec], PA [deg].

    ``columns`` maps ``ra``, ``dec``, ``total_flux`` (integrated flux density; a per-beam unit is
    refused), ``major`` (FWHM), and optionally ``minor``, ``pa`` and ``name`` (null = absent: minor =
    major, PA = 0) to the table's column names.  A FITS column's own unit is used where it has one;
    otherwise ``flux_unit`` (Jy, mJy, uJy) and ``size_unit`` (arcsec, arcmin, deg).  ``sizes``:
    ``intrinsic`` (e.g. T-RECS) or ``convolved`` (fitted on an image with the circular beam
    ``beam_arcsec``, as LoTSS's Maj/Min are): then deconvolved, sqrt(theta^2 - b^2) per axis (0 where
    theta <= b: unresolved).
    """
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: catalogue does not exist (skymap.catalogue)")
    try:
        if path.suffix.lower() in (".fits", ".fit") or path.name.lower().endswith(".fits.gz"):
            table = Table.read(path)
        else:
            table = Table.from_pandas(pd.read_csv(path))
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: cannot read the catalogue ({err})") from err
    if flux_unit not in FLUX_UNITS:
        raise CatalogueError(f"skymap.catalogue_flux_unit must be one of {sorted(FLUX_UNITS)}, got {flux_unit!r}")
    if size_unit not in SIZE_UNITS:
        raise CatalogueError(f"skymap.catalogue_size_unit must be one of {sorted(SIZE_UNITS)}, got {size_unit!r}")
    values = {key: _column_values(table, columns.get(key), key, path, required=key in ("ra", "dec", "total_flux",
                                                                                          "major"))
              for key in ("ra", "dec", "total_flux", "major", "minor", "pa")}
    out = pd.DataFrame()
    for key, name in (("ra", "RA"), ("dec", "DEC")):
        data, unit = values[key]
        out[name] = _in_units(data, unit, configured="deg", factors={"deg": 1.0}, target="deg",
                              column=columns[key], path=path, integrated=False)
    data, unit = values["total_flux"]
    out["Total_flux"] = _in_units(data, unit, configured=flux_unit, factors=FLUX_UNITS, target="mJy",
                                  column=columns["total_flux"], path=path, integrated=True)
    if (out["Total_flux"] <= 0).any():
        raise CatalogueError(f"{path}: {columns['total_flux']} must be > 0 "
                             f"(rows {np.flatnonzero(out['Total_flux'] <= 0)[:5].tolist()})")
    for key, name in (("major", "Maj"), ("minor", "Min")):
        if values[key] is None:
            continue
        data, unit = values[key]
        out[name] = _in_units(data, unit, configured=size_unit, factors=SIZE_UNITS, target="arcsec",
                              column=columns[key], path=path, integrated=False)
        if (out[name] < 0).any():
            raise CatalogueError(f"{path}: {columns[key]} must be >= 0 (a FWHM)")
    if "Min" not in out:
        out["Min"] = out["Maj"]
    if (out["Min"] > out["Maj"] * (1 + 1e-9)).any():
        raise CatalogueError(f"{path}: minor axis {columns['minor']} exceeds major axis {columns['major']} "
                             f"(rows {np.flatnonzero(out['Min'] > out['Maj'])[:5].tolist()})")
    if values["pa"] is None:
        out["PA"] = 0.0
    else:
        data, unit = values["pa"]
        out["PA"] = _in_units(data, unit, configured="deg", factors={"deg": 1.0}, target="deg",
                              column=columns["pa"], path=path, integrated=False)
    if sizes == "convolved":
        for name in ("Maj", "Min"):
            out[name] = np.sqrt(np.clip(out[name] ** 2 - float(beam_arcsec) ** 2, 0.0, None))
    elif sizes != "intrinsic":
        raise CatalogueError(f"skymap.catalogue_sizes must be intrinsic or convolved, got {sizes!r}")
    if columns.get("name"):
        if columns["name"] not in table.colnames:
            raise CatalogueError(f"{path}: no column {columns['name']!r} (skymap.catalogue_columns.name)")
        out["Source_Name"] = [str(v).strip() for v in table[columns["name"]]]
    return out
