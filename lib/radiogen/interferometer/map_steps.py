"""The interferometer's steps on the simulated map (rules in workflow/rules/skymap.smk).

1. :func:`write_measurement_set` -- the observation of the map's field: the
   phase centre is map pixel (N/2, N/2) counting from 0, the pixel WSClean
   takes as centre, so its images share the map's pixel grid;
2. :func:`observe_sky_model` -- the noise-free intrinsic sky (Jy/pixel),
   predicted into a copy of the measurement set, plus thermal
   noise calibrated to ``skymap.noise_rms_ujy``;
3. :func:`image_observation` -- WSClean's restored, residual, model, PSF and
   dirty images.

The workflow predicts from the intrinsic sky (``intrinsic_sky.fits``, Jy/pixel,
before the beam; :func:`radiogen.skymap.assemble.assemble_map`), so imaged
sources have the restoring beam's width.  A Jy/beam sky model (already
convolved with the survey's beam) is still accepted, divided by the beam area
in pixels, with a warning: its sources come out broader by about sqrt(2).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from radiogen.errors import InputFileError
from radiogen.interferometer import thermal_noise, wsclean
from radiogen.interferometer.measurement_set import build_measurement_set
from radiogen.interferometer.model_image import model_header, write_model_image
from radiogen.interferometer.settings import InterferometerSettings
from radiogen.interferometer.stations import load_stations

__all__ = ["imaging_grid", "write_measurement_set", "observe_sky_model", "image_observation"]

log = logging.getLogger(__name__)


def imaging_grid(header: fits.Header, *, source: str) -> tuple[float, float, int, float]:
    """Phase centre (RA, Dec, deg), size (px) and pixel scale (arcsec) of a square map header."""
    size = int(header["NAXIS1"])
    if int(header["NAXIS2"]) != size or size % 2:
        raise InputFileError(f"{source}: the interferometer images square maps of an even number of pixels, "
                             f"got {header['NAXIS1']} x {header['NAXIS2']}")
    scale = abs(float(header["CDELT1"])) * 3600.0
    if not math.isclose(scale, abs(float(header["CDELT2"])) * 3600.0, rel_tol=1e-6):
        raise InputFileError(f"{source}: pixels must be square (CDELT1 {header['CDELT1']}, CDELT2 {header['CDELT2']})")
    ra, dec = WCS(header).celestial.all_pix2world([[size // 2, size // 2]], 0)[0]
    return float(ra) % 360.0, float(dec), size, scale


def write_measurement_set(header_path: str | Path, settings: InterferometerSettings, output: str | Path):
    """The measurement set of the map's field (``header_path``: the map's FITS header as text)."""
    header = fits.Header.fromtextfile(str(header_path))
    ra, dec, _, _ = imaging_grid(header, source=str(header_path))
    summary = build_measurement_set(output, stations=load_stations(settings.stations), settings=settings,
                                    ra_deg=ra, dec_deg=dec)
    log.info("measurement set %s: %d stations, %d times, %d channels, %d rows; elevation %.1f-%.1f deg",
             output, summary.n_stations, summary.n_times, summary.n_channels, summary.n_rows,
             summary.min_elevation_deg, summary.max_elevation_deg)
    return summary


def observe_sky_model(ms: str | Path, sky_model: str | Path, settings: InterferometerSettings, *,
                      target_rms_jy: float, seed: int, output: str | Path, workdir: str | Path,
                      log_path: Path | None = None):
    """Copy ``ms`` to ``output`` with DATA = prediction of ``sky_model`` + calibrated noise."""
    with fits.open(sky_model) as hdul:
        header, image = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
    unit = str(header.get("BUNIT", "")).upper()
    if unit not in ("JY/BEAM", "JY/PIXEL"):
        raise InputFileError(f"{sky_model}: the sky model must be in JY/PIXEL (intrinsic) or JY/BEAM, got BUNIT "
                             f"{header.get('BUNIT')!r}")
    ra, dec, size, scale = imaging_grid(header, source=str(sky_model))
    if unit == "JY/PIXEL":
        beam_area_px = 1.0
        if header.get("INTRINS") is False:
            log.warning("%s: its generated sources are at the survey's beam (tiles without model Gaussians); they "
                        "will be imaged about sqrt(2) too broad", sky_model)
    else:
        beam_area_px = math.pi / (4 * math.log(2)) * header["BMAJ"] * header["BMIN"] * 3600.0**2 / scale**2
        log.warning("%s: a Jy/beam sky model is the sky already convolved with the beam; observed again its "
                    "sources come out broader by about sqrt(2) (use the intrinsic sky, Jy/pixel)", sky_model)
    frequencies, width = settings.channel_frequencies_hz()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = model_header(size_px=size, scale_arcsec=scale, ra_deg=ra, dec_deg=dec,
                         frequency_hz=float(np.mean(frequencies)), bandwidth_hz=width * len(frequencies))
    write_model_image(workdir / "sky", image / beam_area_px, model, ra_deg=ra, dec_deg=dec, scale_arcsec=scale)
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ms, tmp)
    wsclean.predict(tmp, model_prefix=workdir / "sky", size_px=size, scale_arcsec=scale, threads=settings.threads,
                    log=log_path)
    noise = thermal_noise.add_thermal_noise(tmp, target_rms_jy=target_rms_jy, settings=settings, size_px=size,
                                            scale_arcsec=scale, seed=seed, workdir=workdir, log=log_path)
    log.info("sky model %s: %.4g Jy in %d px; noise sigma %.4g Jy per visibility and correlation "
             "(SEFD %.0f Jy) for %.1f uJy/beam", sky_model, image.sum() / beam_area_px, size * size,
             noise.sigma_jy, noise.sefd_jy, target_rms_jy * 1e6)
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    return noise


def image_observation(ms: str | Path, settings: InterferometerSettings, *, header_path: str | Path,
                      prefix: str | Path, log_path: Path | None = None) -> wsclean.ImagingProducts:
    """WSClean images of ``ms`` on the map's grid: ``<prefix>-{image,residual,model,psf,dirty}.fits``."""
    _, _, size, scale = imaging_grid(fits.Header.fromtextfile(str(header_path)), source=str(header_path))
    return wsclean.image(ms, prefix=prefix, settings=settings, size_px=size, scale_arcsec=scale,
                         data_column="DATA", log=log_path)
