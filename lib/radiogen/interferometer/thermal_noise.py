"""Thermal noise per visibility, calibrated so that the restored image has a target rms.

Every correlation of every visibility gets independent Gaussian noise of the
same standard deviation ``sigma`` in its real and imaginary parts.  For a
single correlation sigma = SEFD / sqrt(2 dnu dt) (the radiometer equation,
Thompson, Moran & Swenson 2017, ch. 6, with efficiency 1), so the system equivalent flux density
implied by the result is reported.  The image noise for a given sigma depends
on the imaging weights (Briggs, taper, uv cut), so ``sigma`` is not computed
from a formula but measured: unit-sigma noise is imaged with the same weighting
(no deconvolution: CLEAN does not change the noise away from sources), its rms
``r`` read off, and ``sigma = target / r``.

Split into channel blocks (``skymap.interferometer.channel_blocks``), every
block's measurement set holds its own unit noise (:func:`fill_unit_noise`,
seeded per block and chunk of rows), the blocks' unit noise is imaged together
(:func:`unit_noise_rms` with all of them: the Briggs weights depend on every
block's uv coverage), and each block then gets ``sigma`` times its unit noise
(:func:`apply_noise`).  :func:`add_thermal_noise` does the three on one set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.io import fits

from radiogen import seeds
from radiogen.errors import ConfigError, InputFileError
from radiogen.interferometer.settings import InterferometerSettings
from radiogen.interferometer.wsclean import image

__all__ = ["NoiseSummary", "ROWS_PER_CHUNK", "add_thermal_noise", "apply_noise", "calibrated_noise", "fill_unit_noise",
           "unit_noise_rms"]

#: Rows of the measurement set read and written at a time (bounds the memory).
ROWS_PER_CHUNK = 50_000


@dataclass(frozen=True)
class NoiseSummary:
    """The noise added: per-correlation sigma (Jy, each of real and imaginary part),
    the image rms of unit-sigma noise (Jy/beam per Jy), and the implied SEFD (Jy)."""

    sigma_jy: float
    unit_image_rms: float
    sefd_jy: float


def fill_unit_noise(ms_path: str | Path, *, seed: int, block: int = 0) -> None:
    """DATA = complex Gaussian noise of unit sigma per part, seeded per channel block and chunk of rows."""
    from casacore import tables

    with tables.table(str(ms_path), readonly=False, ack=False) as ms:
        n_rows = ms.nrows()
        shape = ms.getcell("DATA", 0).shape
        for chunk, start in enumerate(range(0, n_rows, ROWS_PER_CHUNK)):
            count = min(ROWS_PER_CHUNK, n_rows - start)
            rng = seeds.generator(seed, "skymap.interferometer.noise", block, chunk)
            noise = rng.standard_normal((count, *shape, 2), dtype=np.float32)
            ms.putcol("DATA", (noise[..., 0] + 1j * noise[..., 1]).astype(np.complex64), startrow=start,
                      nrow=count)


def unit_noise_rms(ms_paths: str | Path | Sequence[str | Path], *, settings: InterferometerSettings,
                   size_px: int, scale_arcsec: float, workdir: str | Path, log: Path | None = None) -> float:
    """Rms (Jy/beam per Jy of sigma) of the unit noise in DATA of ``ms_paths``, imaged together.

    The dirty image with the imaging's weighting (no deconvolution), written to
    ``workdir/noise-unit-*.fits``.
    """
    products = image(ms_paths, prefix=Path(workdir) / "noise-unit", settings=settings, size_px=size_px,
                     scale_arcsec=scale_arcsec, data_column="DATA", clean=False, log=log)
    return float(np.std(fits.getdata(products.dirty)))


def calibrated_noise(*, target_rms_jy: float, unit_image_rms: float,
                     settings: InterferometerSettings) -> NoiseSummary:
    """Sigma per visibility and correlation for ``target_rms_jy`` given the unit noise's image rms.

    Raises
    ------
    ConfigError
        The target is not a finite positive rms.
    InputFileError
        The unit-noise image rms is not a finite positive number.
    """
    if not (math.isfinite(target_rms_jy) and target_rms_jy > 0):
        raise ConfigError(f"skymap.noise_rms_ujy: the target rms must be a finite number > 0, got "
                          f"{target_rms_jy * 1e6} uJy/beam")
    if not (math.isfinite(unit_image_rms) and unit_image_rms > 0):
        # an empty or blank unit-noise image (no visibility passed the uv cut or the flags) would
        # give NaN or infinite noise in every visibility
        raise InputFileError(f"the image of unit-sigma noise has rms {unit_image_rms}, not a finite number > 0: "
                             "no visibilities were imaged (check skymap.interferometer.uv_min_lambda and the "
                             "measurement sets)")
    sigma = target_rms_jy / unit_image_rms
    _, width = settings.channel_frequencies_hz()
    sefd = sigma * math.sqrt(2.0 * width * settings.integration_s)  # the radiometer equation solved for the SEFD
    return NoiseSummary(sigma, unit_image_rms, sefd)


def apply_noise(ms_path: str | Path, *, sigma_jy: float) -> None:
    """DATA = MODEL_DATA + ``sigma_jy`` x DATA (the unit noise); WEIGHT = 1/sigma^2, SIGMA = sigma."""
    from casacore import tables

    with tables.table(str(ms_path), readonly=False, ack=False) as ms:
        n_rows = ms.nrows()
        for start in range(0, n_rows, ROWS_PER_CHUNK):
            count = min(ROWS_PER_CHUNK, n_rows - start)
            data = ms.getcol("MODEL_DATA", startrow=start, nrow=count) + sigma_jy * ms.getcol(
                "DATA", startrow=start, nrow=count)
            ms.putcol("DATA", data.astype(np.complex64), startrow=start, nrow=count)
            ms.putcol("WEIGHT", np.full((count, 4), 1.0 / sigma_jy**2, dtype=np.float32), startrow=start,
                      nrow=count)
            ms.putcol("SIGMA", np.full((count, 4), sigma_jy, dtype=np.float32), startrow=start, nrow=count)


def add_thermal_noise(ms_path: str | Path, *, target_rms_jy: float, settings: InterferometerSettings,
                      size_px: int, scale_arcsec: float, seed: int, workdir: str | Path,
                      log: Path | None = None) -> NoiseSummary:
    """Set DATA = MODEL_DATA + noise whose restored-image rms is ``target_rms_jy`` (Jy/beam).

    One measurement set (the whole band, or block 0 alone): its unit noise,
    calibrated on its own image.  WEIGHT and SIGMA are set to 1/sigma^2 and
    sigma.  ``workdir`` receives the unit-noise image (``noise-unit-*.fits``).

    Raises
    ------
    ConfigError
        The target is not a finite positive rms (before anything is written).
    """
    calibrated_noise(target_rms_jy=target_rms_jy, unit_image_rms=1.0, settings=settings)  # the target's check
    fill_unit_noise(ms_path, seed=seed, block=0)
    unit_rms = unit_noise_rms(ms_path, settings=settings, size_px=size_px, scale_arcsec=scale_arcsec,
                              workdir=workdir, log=log)
    noise = calibrated_noise(target_rms_jy=target_rms_jy, unit_image_rms=unit_rms, settings=settings)
    apply_noise(ms_path, sigma_jy=noise.sigma_jy)
    return noise
