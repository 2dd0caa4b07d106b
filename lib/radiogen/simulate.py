"""A classical simulated LoTSS-like survey: the default data and the baseline.

The survey is what radio-astronomy simulations did before generative models:
sources are sums of elliptical Gaussian components (a core, jets, lobes and
hotspots) laid out by hand-written rules per morphology, convolved with the
restoring beam and added to Gaussian noise whose autocorrelation is the
restoring beam (:func:`radiogen.noise.beam_correlated_noise`).  The paper
(Vičánek Martínez et al. 2024, Sect. 1) argues such models miss the variety of
real sources; radiogen keeps this survey as the classical baseline and as
download-free demo data.

Each mosaic is written like a LoTSS-DR2 ``mosaic-blanked.fits`` (Shimwell et
al. 2022): SIN projection, 1.5"/px, BMAJ = BMIN = 6" (in degrees), BPA,
``BUNIT = 'JY/BEAM'``, ``RESTFRQ`` 143.65 MHz, NaN outside the covered disc,
here stored as float32.  The catalogue CSV has the DR2 cross-match columns
``Source_Name, RA, DEC, optRA, optDec, LAS, LAS_from, Peak_flux, Total_flux,
E_Total_flux, S_Code,
Mosaic_ID`` (degrees, arcsec, mJy and mJy/beam as in LoTSS) plus the true
``Morphology``.

Fluxes follow a power-law count, dN/dS ∝ S^-alpha between ``flux_min_mjy``
and ``flux_max_mjy`` (inverse-CDF sampling).  A Gaussian component of total
flux S and intrinsic FWHMs (a, b), convolved with a circular beam of
sigma_b, peaks at S * sigma_b**2 / (sigma_a' * sigma_b') Jy/beam, where
sigma' = sqrt(sigma**2 + sigma_b**2) (Gaussians convolve by adding variances).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from radiogen.config import section_defaults
from radiogen.errors import ConfigError
from radiogen.fits_header import image_header
from radiogen.io import atomic_path
from radiogen.noise import FWHM_PER_SIGMA, beam_correlated_noise
from radiogen.seeds import generator
from radiogen.surveys import LOTSS

__all__ = [
    "SurveySettings",
    "simulate_survey",
    "simulate_mosaic",
    "mosaic_ids",
    "dr2_header",
    "sample_power_law",
    "source_name",
]

log = logging.getLogger(__name__)

#: LoTSS-DR2 mosaic grid and beam (radiogen.surveys); RESTFRQ as DR2 mosaic headers give it.
PIXEL_SCALE_ARCSEC = LOTSS.pixel_scale_arcsec
BEAM_ARCSEC = LOTSS.beam_arcsec
RESTFRQ_HZ = 143.65e6
MORPHOLOGIES = ("compact", "FRI", "FRII", "bent")
#: ``lotss.simulate`` defaults (the schema is their only source).
_DEFAULTS = section_defaults("lotss.simulate")


@dataclass(frozen=True)
class SurveySettings:
    """Settings of the simulated survey (config ``lotss.simulate``; defaults from its schema).

    Attributes
    ----------
    n_mosaics : int
        Number of mosaics, named ``SIM000``, ``SIM001``, ...
    mosaic_size : int
        Side of each square mosaic in pixels (1.5"/px).
    sources_per_mosaic : int
        Sources drawn per mosaic, uniform over the unblanked disc.
    morphology_fractions : dict
        Relative frequencies of ``compact``, ``FRI``, ``FRII``, ``bent``.
    flux_min_mjy, flux_max_mjy : float
        Limits of the total-flux power law, mJy.
    flux_slope : float
        alpha in dN/dS ∝ S^-alpha.
    rms_ujy : float
        Noise rms after beam convolution, µJy/beam.
    blank_radius : float
        Radius of the unblanked disc as a fraction of half the mosaic side;
        pixels outside are NaN like DR2's blanked mosaic edges.
    optical_id_fraction : float
        Fraction of sources with an optical host (``optRA/optDec``); the rest
        have NaN there, as unidentified DR2 sources do.
    dec_deg, ra_start_deg : float
        Field centre of the first mosaic; the others follow in RA without overlap.
    """

    n_mosaics: int = _DEFAULTS["n_mosaics"]
    mosaic_size: int = _DEFAULTS["mosaic_size"]
    sources_per_mosaic: int = _DEFAULTS["sources_per_mosaic"]
    morphology_fractions: dict = field(default_factory=lambda: dict(_DEFAULTS["morphology_fractions"]))
    flux_min_mjy: float = _DEFAULTS["flux_min_mjy"]
    flux_max_mjy: float = _DEFAULTS["flux_max_mjy"]
    flux_slope: float = _DEFAULTS["flux_slope"]
    rms_ujy: float = _DEFAULTS["rms_ujy"]
    blank_radius: float = _DEFAULTS["blank_radius"]
    optical_id_fraction: float = _DEFAULTS["optical_id_fraction"]
    dec_deg: float = _DEFAULTS["dec_deg"]
    ra_start_deg: float = _DEFAULTS["ra_start_deg"]

    @classmethod
    def from_mapping(cls, mapping: dict | None) -> "SurveySettings":
        """Build from a config mapping, rejecting unknown keys by name."""
        mapping = dict(mapping or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ConfigError(f"lotss.simulate: unknown key(s) {', '.join(unknown)}")
        settings = cls(**mapping)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        if self.n_mosaics < 1:
            raise ConfigError("lotss.simulate.n_mosaics must be >= 1")
        if self.mosaic_size < 100:
            raise ConfigError("lotss.simulate.mosaic_size must be >= 100 px")
        if self.sources_per_mosaic < 0:
            raise ConfigError("lotss.simulate.sources_per_mosaic must be >= 0")
        if not 0 < self.flux_min_mjy < self.flux_max_mjy:
            raise ConfigError("lotss.simulate: need 0 < flux_min_mjy < flux_max_mjy")
        if self.rms_ujy <= 0:
            raise ConfigError("lotss.simulate.rms_ujy must be > 0")
        if not 0.2 <= self.blank_radius <= 1.5:
            raise ConfigError("lotss.simulate.blank_radius must be within [0.2, 1.5]")
        fr = self.morphology_fractions
        bad = sorted(set(fr) - set(MORPHOLOGIES))
        if bad or any(v < 0 for v in fr.values()) or sum(fr.values()) <= 0:
            raise ConfigError(
                f"lotss.simulate.morphology_fractions: keys must be among {MORPHOLOGIES} with "
                f"non-negative values summing to > 0 (got {fr})")


def mosaic_ids(n_mosaics: int) -> list[str]:
    """Names of the simulated mosaics: ``SIM000`` ... (also used by the workflow)."""
    return [f"SIM{i:03d}" for i in range(n_mosaics)]


def dr2_header(*, mosaic_id: str, size: int, ra_deg: float, dec_deg: float) -> fits.Header:
    """Primary header with the cards of a LoTSS-DR2 ``mosaic-blanked.fits`` (float32 data).

    The WCS comes from :func:`radiogen.fits_header.image_header` (astropy WCS);
    the DR2 mosaics' beam position angle, telescope and frequency cards follow.
    """
    h = fits.Header()
    h["SIMPLE"] = (True, "conforms to FITS standard")
    h["BITPIX"] = (-32, "array data type")
    h["NAXIS"] = (2, "number of array dimensions")
    h["NAXIS1"] = size
    h["NAXIS2"] = size
    h.update(image_header((size, size), pixel_scale_arcsec=PIXEL_SCALE_ARCSEC, beam_arcsec=BEAM_ARCSEC,
                          frequency_hz=RESTFRQ_HZ, ra_deg=ra_deg, dec_deg=dec_deg, bunit="JY/BEAM"))
    h["EQUINOX"] = 2000.0  # DR2 headers carry it beside RADESYS = ICRS
    h["BPA"] = 90
    h["TELESCOP"] = "LOFAR"
    h["OBSERVER"] = "LoTSS"
    h["OBJECT"] = mosaic_id
    h["ORIGIN"] = "radiogen lotss simulate (classical simulation)"
    return h


def sample_power_law(rng: np.random.Generator, n: int, *, s_min: float, s_max: float,
                     alpha: float) -> np.ndarray:
    """Draw n values from dN/dS ∝ S^-alpha on [s_min, s_max] (inverse CDF)."""
    u = rng.random(n)
    if np.isclose(alpha, 1.0):
        return s_min * (s_max / s_min) ** u
    k = 1.0 - alpha
    return (s_min**k + u * (s_max**k - s_min**k)) ** (1.0 / k)


def _total_flux_error_mjy(las_arcsec: float, settings) -> float:
    """Noise on an integrated flux: rms x sqrt(source area in beams), mJy (area >= 1 beam)."""
    beam_area = 1.1331 * BEAM_ARCSEC**2  # Gaussian beam area, arcsec^2
    source_area = np.pi / 4 * max(float(las_arcsec), 0.0) ** 2
    return float(settings.rms_ujy * 1e-3 * np.sqrt(max(1.0, source_area / beam_area)))


def source_name(ra_deg: float, dec_deg: float) -> str:
    """IAU-style LoTSS name, e.g. ``ILTJ134037.56+545009.8`` (truncated, not rounded)."""
    ra_s = (ra_deg % 360.0) / 15.0 * 3600.0
    h, rem = divmod(ra_s, 3600.0)
    m, s = divmod(rem, 60.0)
    sign = "+" if dec_deg >= 0 else "-"
    d_s = abs(dec_deg) * 3600.0
    d, drem = divmod(d_s, 3600.0)
    dm, ds = divmod(drem, 60.0)
    s = np.floor(s * 100) / 100
    ds = np.floor(ds * 10) / 10
    return f"ILTJ{int(h):02d}{int(m):02d}{s:05.2f}{sign}{int(d):02d}{int(dm):02d}{ds:04.1f}"


# --- source models -------------------------------------------------------------
# A component is (flux_jy, dx_arcsec, dy_arcsec, fwhm_major_arcsec,
# fwhm_minor_arcsec, pa_deg) relative to the host galaxy; +dy is north,
# +dx east (drawn towards -x in the image), PA east of north.

def _direction(pa_deg):
    pa = np.deg2rad(pa_deg)
    return np.sin(pa), np.cos(pa)


def _compact(rng, flux):
    major = rng.uniform(0.0, 4.0)
    minor = major * rng.uniform(0.4, 1.0)
    return [(flux, 0.0, 0.0, major, minor, rng.uniform(0, 180))]


def _jet(rng, flux, length, pa, *, bend_deg=0.0, n=10, edge_darkened=True):
    """Chain of flaring Gaussians along a (possibly curved) jet of given length."""
    comps = []
    t = (np.arange(n) + 0.5) / n
    weight = np.exp(-2.5 * t) if edge_darkened else np.ones(n)
    weight = weight / weight.sum()
    x = y = 0.0
    step = length / n
    for i in range(n):
        direction = pa + bend_deg * t[i]
        ex, ey = _direction(direction)
        x, y = x + step * ex, y + step * ey
        width = 2.0 + 0.25 * length * t[i]
        comps.append((flux * weight[i], x, y, max(step * 1.5, width), width, direction))
    return comps


def _fri(rng, flux, *, bent=False):
    las = float(np.exp(rng.uniform(np.log(20.0), np.log(90.0))))
    pa = rng.uniform(0, 360)
    core = rng.uniform(0.1, 0.3)
    ratio = rng.uniform(1.0, 3.0)  # Doppler boosting: approaching jet brighter
    jet_flux = flux * (1 - core)
    f1, f2 = jet_flux * ratio / (1 + ratio), jet_flux / (1 + ratio)
    l1 = l2 = las / 2.0
    bend = 0.0
    if bent:
        # Both jets swept towards the same side (ram pressure): wide/narrow-angle tails.
        bend = rng.uniform(40.0, 110.0) * rng.choice([-1.0, 1.0])
        l1, l2 = l1 * rng.uniform(0.8, 1.2), l2 * rng.uniform(0.8, 1.2)
    comps = [(flux * core, 0.0, 0.0, 1.0, 1.0, 0.0)]
    comps += _jet(rng, f1, l1, pa, bend_deg=bend)
    comps += _jet(rng, f2, l2, pa + 180.0, bend_deg=-bend)
    return comps


def _frii(rng, flux):
    las = float(np.exp(rng.uniform(np.log(30.0), np.log(100.0))))
    pa = rng.uniform(0, 360)
    core = rng.uniform(0.01, 0.08)
    comps = [(flux * core, 0.0, 0.0, 1.0, 1.0, 0.0)]
    lobe_flux = flux * (1 - core)
    share = rng.uniform(0.35, 0.65)
    for sign, frac in ((0.0, share), (180.0, 1 - share)):
        direction = pa + sign + rng.normal(0.0, 5.0)
        ex, ey = _direction(direction)
        half = las / 2.0 * rng.uniform(0.8, 1.0)
        hotspot = rng.uniform(0.3, 0.6)
        size_hs = rng.uniform(1.5, 5.0)
        comps.append((lobe_flux * frac * hotspot, half * ex, half * ey, size_hs, size_hs, 0.0))
        across = rng.uniform(8.0, 20.0)
        along = max(0.5 * half, across)
        centre = half - 0.5 * along
        comps.append((lobe_flux * frac * (1 - hotspot), centre * ex, centre * ey, along, across, direction))
    return comps


def _components(rng, morphology, flux):
    if morphology == "compact":
        return _compact(rng, flux)
    if morphology == "FRI":
        return _fri(rng, flux)
    if morphology == "bent":
        return _fri(rng, flux, bent=True)
    return _frii(rng, flux)


def _largest_size(comps) -> float:
    """LAS in arcsec: widest separation of component half-power edges."""
    if len(comps) == 1:
        return float(comps[0][3])
    xy = np.array([(c[1], c[2]) for c in comps])
    half = np.array([c[3] for c in comps]) / 2.0
    dist = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
    return float(np.max(dist + half[:, None] + half[None, :]))


def _render(comps, x0, y0, pixel_arcsec, beam_arcsec):
    """Beam-convolved source in Jy/beam on a local stamp; returns (stamp, iy0, ix0)."""
    sigma_b = beam_arcsec / FWHM_PER_SIGMA / pixel_arcsec
    xs = np.array([x0 - c[1] / pixel_arcsec for c in comps])  # east is -x
    ys = np.array([y0 + c[2] / pixel_arcsec for c in comps])
    extent = max(5.0 * np.hypot(c[3] / FWHM_PER_SIGMA / pixel_arcsec, sigma_b) for c in comps)
    ix0, ix1 = int(np.floor(xs.min() - extent)), int(np.ceil(xs.max() + extent)) + 1
    iy0, iy1 = int(np.floor(ys.min() - extent)), int(np.ceil(ys.max() + extent)) + 1
    gy, gx = np.mgrid[iy0:iy1, ix0:ix1].astype(float)
    stamp = np.zeros(gx.shape)
    for (flux, _dx, _dy, fmaj, fmin, pa), cx, cy in zip(comps, xs, ys):
        sa = np.hypot(fmaj / FWHM_PER_SIGMA / pixel_arcsec, sigma_b)
        sb = np.hypot(fmin / FWHM_PER_SIGMA / pixel_arcsec, sigma_b)
        ex, ey = _direction(pa)
        ux, uy = -ex, ey  # major-axis unit vector in pixel coordinates
        du, dv = gx - cx, gy - cy
        along = du * ux + dv * uy
        across = -du * uy + dv * ux
        stamp += flux * sigma_b**2 / (sa * sb) * np.exp(-0.5 * ((along / sa) ** 2 + (across / sb) ** 2))
    return stamp, iy0, ix0


def simulate_mosaic(settings: SurveySettings, *, index: int, seed: int, survey: str = "main"
                    ) -> tuple[np.ndarray, fits.Header, pd.DataFrame]:
    """Simulate one mosaic and its catalogue rows (independent stream per mosaic).

    The random stream is the global ``seed``'s ``lotss.simulate.{survey}`` stream
    at position ``index`` (:mod:`radiogen.seeds`), so any mosaic can be reproduced
    on its own, adding mosaics does not change earlier ones, and the main and the
    classical survey never share draws.
    """
    rng = generator(seed, f"lotss.simulate.{survey}", index)
    n = settings.mosaic_size
    mosaic_id = mosaic_ids(settings.n_mosaics)[index]
    width_deg = n * PIXEL_SCALE_ARCSEC / 3600.0
    ra = settings.ra_start_deg + index * 1.1 * width_deg / np.cos(np.deg2rad(settings.dec_deg))
    header = dr2_header(mosaic_id=mosaic_id, size=n, ra_deg=float(ra % 360.0), dec_deg=settings.dec_deg)
    wcs = WCS(header)

    # unit-rms noise correlated like the beam (autocorrelation FWHM = BMAJ), times the rms
    noise = beam_correlated_noise(rng, (n, n), bmaj_px=BEAM_ARCSEC / PIXEL_SCALE_ARCSEC)
    image = noise.astype(np.float64) * (settings.rms_ujy * 1e-6 / noise.std(dtype=np.float64))

    names = list(settings.morphology_fractions)
    p = np.array([settings.morphology_fractions[k] for k in names], dtype=float)
    morph = rng.choice(names, size=settings.sources_per_mosaic, p=p / p.sum())
    flux = sample_power_law(rng, settings.sources_per_mosaic, s_min=settings.flux_min_mjy,
                            s_max=settings.flux_max_mjy, alpha=settings.flux_slope) * 1e-3
    radius = settings.blank_radius * n / 2.0
    centre = (n - 1) / 2.0
    rows, seen = [], set()
    for k in range(settings.sources_per_mosaic):
        comps = _components(rng, morph[k], flux[k])
        while True:
            r = radius * np.sqrt(rng.random())
            phi = rng.uniform(0, 2 * np.pi)
            x0, y0 = centre + r * np.cos(phi), centre + r * np.sin(phi)
            stamp, iy0, ix0 = _render(comps, x0, y0, PIXEL_SCALE_ARCSEC, BEAM_ARCSEC)
            total = sum(c[0] for c in comps)
            wx = sum(c[0] * (x0 - c[1] / PIXEL_SCALE_ARCSEC) for c in comps) / total
            wy = sum(c[0] * (y0 + c[2] / PIXEL_SCALE_ARCSEC) for c in comps) / total
            radio_ra, radio_dec = wcs.pixel_to_world_values(wx, wy)
            name = source_name(float(radio_ra), float(radio_dec))
            if name not in seen:
                seen.add(name)
                break
        y_sl = slice(max(iy0, 0), min(iy0 + stamp.shape[0], n))
        x_sl = slice(max(ix0, 0), min(ix0 + stamp.shape[1], n))
        if y_sl.start < y_sl.stop and x_sl.start < x_sl.stop:
            image[y_sl, x_sl] += stamp[y_sl.start - iy0:y_sl.stop - iy0, x_sl.start - ix0:x_sl.stop - ix0]
        host_ra, host_dec = wcs.pixel_to_world_values(x0, y0)
        has_id = rng.random() < settings.optical_id_fraction
        rows.append({
            "Source_Name": name,
            "RA": float(radio_ra),
            "DEC": float(radio_dec),
            "optRA": float(host_ra) if has_id else np.nan,
            "optDec": float(host_dec) if has_id else np.nan,
            "LAS": _largest_size(comps),
            "LAS_from": "model",
            "Peak_flux": float(stamp.max()) * 1e3,
            "Total_flux": float(total) * 1e3,
            # PyBDSF-like error and source code, for the resolved-source criterion
            "E_Total_flux": _total_flux_error_mjy(_largest_size(comps), settings),
            "S_Code": "S" if morph[k] == "compact" else "M",
            "Mosaic_ID": mosaic_id,
            "Morphology": str(morph[k]),
        })
    gy, gx = np.ogrid[:n, :n]
    image[(gx - centre) ** 2 + (gy - centre) ** 2 > radius**2] = np.nan
    return image.astype(np.float32), header, pd.DataFrame(rows)


def simulate_survey(out_dir: str | os.PathLike, *, settings: SurveySettings, seed: int,
                    survey: str = "main") -> pd.DataFrame:
    """Write ``out_dir/mosaics/SIMnnn.fits`` and ``out_dir/catalogue.csv``.

    ``seed`` is the global seed; ``survey`` (``main`` or ``classical``) chooses
    its random stream.

    Every file is written atomically; the catalogue comes last, so its
    presence means the survey is complete.

    Returns
    -------
    DataFrame
        The catalogue.
    """
    settings.validate()
    out_dir = Path(out_dir)
    tables = []
    started = time.monotonic()
    for index, mosaic_id in enumerate(mosaic_ids(settings.n_mosaics)):
        image, header, table = simulate_mosaic(settings, index=index, seed=seed, survey=survey)
        with atomic_path(out_dir / "mosaics" / f"{mosaic_id}.fits") as tmp:
            fits.PrimaryHDU(data=image, header=header).writeto(tmp, overwrite=True)
        tables.append(table)
        elapsed = time.monotonic() - started
        log.info("%s: %d sources, %d/%d mosaics (%.2f mosaics/s)", mosaic_id, len(table), index + 1,
                 settings.n_mosaics, (index + 1) / max(elapsed, 1e-9))
    catalogue = pd.concat(tables, ignore_index=True)
    with atomic_path(out_dir / "catalogue.csv") as tmp:
        catalogue.to_csv(tmp, index=False, float_format="%.10g")
    log.info("catalogue: %d sources (%s); settings %s, seed %d", len(catalogue),
             catalogue["Morphology"].value_counts().to_dict(), asdict(settings), seed)
    return catalogue
