"""The interferometer's steps on the simulated map (rules in workflow/rules/interferometer.smk).

The workflow's jobs, per channel block b of ``skymap.interferometer.channel_blocks``
(:mod:`radiogen.interferometer.blocks`):

1. :func:`predict_block` -- block b's measurement set of the map's field (the
   phase centre is map pixel (N/2, N/2) counting from 0, the pixel WSClean
   takes as centre, so its images share the map's pixel grid), the noise-free
   intrinsic sky (Jy/pixel) predicted into MODEL_DATA, unit-sigma noise in DATA;
2. :func:`calibrate_noise` -- one job: the unit noise of all blocks imaged
   together, and the sigma for ``skymap.noise_rms_ujy`` written as JSON;
3. :func:`add_block_noise` -- block b's copy with DATA = MODEL_DATA + sigma x noise;
4. :func:`image_observation` -- WSClean's restored, residual, model, PSF and
   dirty images of all blocks together.

:func:`write_measurement_set` and :func:`observe_sky_model` do the same on the
whole band in one process (``radiogen interferometer ms|observe``; the
benchmark's steps).

The workflow predicts from the intrinsic sky (``intrinsic_sky.fits``, Jy/pixel,
before the beam; :func:`radiogen.skymap.assemble.assemble_map`), so imaged
sources have the restoring beam's width.  A Jy/beam sky model (already
convolved with the survey's beam) is still accepted, divided by the beam area
in pixels, with a warning: its sources come out broader by about sqrt(2).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from radiogen.errors import InputFileError
from radiogen.interferometer import blocks, thermal_noise, wsclean
from radiogen.io import file_digest
from radiogen.interferometer.measurement_set import build_measurement_set
from radiogen.interferometer.model_image import model_header, write_model_image
from radiogen.interferometer.settings import InterferometerSettings
from radiogen.interferometer.stations import load_stations

__all__ = ["imaging_grid", "write_measurement_set", "observe_sky_model", "predict_block", "calibrate_noise",
           "add_block_noise", "image_observation"]

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


def _write_prediction_model(sky_model: str | Path, workdir: Path, *, frequencies: list[float],
                            width: float) -> tuple[tuple[float, float, int, float], float]:
    """The sky model as WSClean's model image ``workdir/sky-model.fits`` (Jy/pixel): its grid and total, Jy."""
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
    workdir.mkdir(parents=True, exist_ok=True)
    model = model_header(size_px=size, scale_arcsec=scale, ra_deg=ra, dec_deg=dec,
                         frequency_hz=float(np.mean(frequencies)), bandwidth_hz=width * len(frequencies))
    write_model_image(workdir / "sky", image / beam_area_px, model, ra_deg=ra, dec_deg=dec, scale_arcsec=scale)
    return (ra, dec, size, scale), float(image.sum() / beam_area_px)


def _replace_directory(tmp: Path, output: Path) -> None:
    """Put the finished ``tmp`` in place of ``output`` (a rename: no reader sees a half-written set)."""
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)


def observe_sky_model(ms: str | Path, sky_model: str | Path, settings: InterferometerSettings, *,
                      target_rms_jy: float, seed: int, output: str | Path, workdir: str | Path,
                      log_path: Path | None = None):
    """Copy ``ms`` to ``output`` with DATA = prediction of ``sky_model`` + calibrated noise (the whole band)."""
    frequencies, width = settings.channel_frequencies_hz()
    workdir = Path(workdir)
    (ra, dec, size, scale), total_jy = _write_prediction_model(sky_model, workdir, frequencies=frequencies,
                                                               width=width)
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ms, tmp)
    wsclean.predict(tmp, model_prefix=workdir / "sky", size_px=size, scale_arcsec=scale, threads=settings.threads,
                    log=log_path)
    noise = thermal_noise.add_thermal_noise(tmp, target_rms_jy=target_rms_jy, settings=settings, size_px=size,
                                            scale_arcsec=scale, seed=seed, workdir=workdir, log=log_path)
    log.info("sky model %s: %.4g Jy in %d px; noise sigma %.4g Jy per visibility and correlation "
             "(SEFD %.0f Jy) for %.1f uJy/beam", sky_model, total_jy, size * size,
             noise.sigma_jy, noise.sefd_jy, target_rms_jy * 1e6)
    _replace_directory(tmp, output)
    return noise


def predict_block(header_path: str | Path, sky_model: str | Path, settings: InterferometerSettings, *,
                  block: int, seed: int, output: str | Path, log_path: Path | None = None):
    """Channel block ``block``: its measurement set, the sky predicted into MODEL_DATA, unit noise in DATA.

    The set is written as ``<output>.tmp`` and renamed when complete; the
    model image is made in a temporary folder beside it.

    Raises
    ------
    InputFileError
        The sky model is not on the map header's grid.
    """
    header = fits.Header.fromtextfile(str(header_path))
    grid = imaging_grid(header, source=str(header_path))
    frequencies, width = settings.block_frequencies_hz(block)
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=output.name + ".model.", dir=output.parent) as workdir:
        model_grid, total_jy = _write_prediction_model(sky_model, Path(workdir), frequencies=frequencies,
                                                       width=width)
        if not np.allclose(model_grid, grid, rtol=1e-9, atol=1e-9):
            raise InputFileError(f"{sky_model}: its grid (RA, Dec, size, arcsec/px) {model_grid} is not the map "
                                 f"header's {grid} ({header_path})")
        ra, dec, size, scale = grid
        summary = build_measurement_set(tmp, stations=load_stations(settings.stations), settings=settings,
                                        ra_deg=ra, dec_deg=dec, block=block)
        wsclean.predict(tmp, model_prefix=Path(workdir) / "sky", size_px=size, scale_arcsec=scale,
                        threads=settings.threads, log=log_path)
    thermal_noise.fill_unit_noise(tmp, seed=seed, block=block)
    blocks.write_tag(tmp, blocks.block_tag(settings, block=block, seed=seed, phase_centre_deg=(ra, dec),
                                           sky_model_sha256=file_digest(sky_model)))
    channels = settings.block_channels(block)
    log.info("block %d of %d: channels %d-%d (%.3f-%.3f MHz), %d stations, %d times, %d rows; sky model %s: "
             "%.4g Jy predicted; unit noise in DATA", block, settings.channel_blocks, channels.start,
             channels.stop - 1, frequencies[0] / 1e6, frequencies[-1] / 1e6, summary.n_stations, summary.n_times,
             summary.n_rows, sky_model, total_jy)
    _replace_directory(tmp, output)
    return summary


def calibrate_noise(ms_paths: Sequence[str | Path], settings: InterferometerSettings, *,
                    header_path: str | Path, target_rms_jy: float, seed: int, output: str | Path,
                    log_path: Path | None = None) -> thermal_noise.NoiseSummary:
    """Sigma per visibility that gives ``target_rms_jy`` in the image of all blocks together, as JSON.

    The blocks' unit noise is imaged together on the map's grid with the
    imaging's weights (:func:`radiogen.interferometer.thermal_noise.unit_noise_rms`).
    ``output`` records sigma, the unit-noise rms, the implied SEFD, the target,
    the seed, the observation's settings and weighting, the phase centre, the
    sky model's SHA-256 and the blocks with their channels.
    """
    thermal_noise.calibrated_noise(target_rms_jy=target_rms_jy, unit_image_rms=1.0, settings=settings)
    ra, dec, size, scale = imaging_grid(fits.Header.fromtextfile(str(header_path)), source=str(header_path))
    tags = blocks.check_blocks(ms_paths, settings, seed=seed, noise_added=False, phase_centre_deg=(ra, dec))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=output.name + ".", dir=output.parent) as workdir:
        unit_rms = thermal_noise.unit_noise_rms(list(ms_paths), settings=settings, size_px=size,
                                                scale_arcsec=scale, workdir=workdir, log=log_path)
    noise = thermal_noise.calibrated_noise(target_rms_jy=target_rms_jy, unit_image_rms=unit_rms, settings=settings)
    record = {"sigma_jy": noise.sigma_jy, "unit_image_rms": noise.unit_image_rms, "sefd_jy": noise.sefd_jy,
              "target_rms_ujy": target_rms_jy * 1e6, "seed": seed, "size_px": size, "scale_arcsec": scale,
              "channel_blocks": settings.channel_blocks,
              "blocks": [{"block": tag["block"], "channels": tag["channels"], "measurement_set": str(path)}
                         for path, tag in sorted(zip(ms_paths, tags), key=lambda pair: pair[1]["block"])],
              "observation": blocks.observation_record(settings), "weighting": blocks.weighting_record(settings),
              "phase_centre_deg": tags[0]["phase_centre_deg"], "sky_model_sha256": tags[0]["sky_model_sha256"]}
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, output)
    log.info("noise calibrated on %d block(s) imaged together: unit-noise rms %.4g, sigma %.4g Jy per visibility "
             "and correlation (SEFD %.0f Jy) for %.1f uJy/beam", len(tags), unit_rms, noise.sigma_jy,
             noise.sefd_jy, target_rms_jy * 1e6)
    return noise


def add_block_noise(ms: str | Path, calibration: str | Path, settings: InterferometerSettings, *, block: int,
                    seed: int, output: str | Path) -> float:
    """Copy block ``block``'s predicted set to ``output`` with DATA = MODEL_DATA + sigma x its unit noise.

    Sigma comes from the calibration file, checked to be of the same settings,
    seed and blocks as ``ms``.  Returns sigma, Jy.
    """
    calibration = Path(calibration)
    try:
        record = json.loads(calibration.read_text())
    except (OSError, ValueError) as err:
        raise InputFileError(f"{calibration}: unreadable noise calibration ({err})") from err
    tag = blocks.check_block(ms, settings, seed=seed, noise_added=False)
    if tag["block"] != block:
        raise InputFileError(f"{ms}: holds channel block {tag['block']}, not block {block}")
    blocks.check_calibration(record, calibration, settings, seed=seed, block=block, tag=tag)
    sigma = float(record["sigma_jy"])
    output = Path(output)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(ms, tmp)
    thermal_noise.apply_noise(tmp, sigma_jy=sigma)
    blocks.write_tag(tmp, {**tag, "noise_sigma_jy": sigma, "weighting": record["weighting"],
                           "noise_grid": [record["size_px"], record["scale_arcsec"]]})
    _replace_directory(tmp, output)
    log.info("block %d: DATA = MODEL_DATA + %.4g Jy x unit noise (calibration %s)", block, sigma, calibration)
    return sigma


def image_observation(ms: str | Path | Sequence[str | Path], settings: InterferometerSettings, *,
                      header_path: str | Path, prefix: str | Path,
                      log_path: Path | None = None) -> wsclean.ImagingProducts:
    """WSClean images of ``ms`` on the map's grid: ``<prefix>-{image,residual,model,psf,dirty}.fits``.

    ``ms``: one measurement set, or every channel block of one observation with
    its noise added (checked: same settings, seed and sigma, each block once,
    the map's phase centre, the noise calibrated for this image weighting),
    imaged together.
    """
    sets = [Path(ms)] if isinstance(ms, (str, Path)) else [Path(m) for m in ms]
    ra, dec, size, scale = imaging_grid(fits.Header.fromtextfile(str(header_path)), source=str(header_path))
    if len(sets) > 1 or blocks.read_tag(sets[0]) is not None:
        blocks.check_blocks(sets, settings, seed=None, noise_added=True, phase_centre_deg=(ra, dec),
                            image_grid=(size, scale))
    return wsclean.image(sets, prefix=prefix, settings=settings, size_px=size, scale_arcsec=scale,
                         data_column="DATA", log=log_path)
