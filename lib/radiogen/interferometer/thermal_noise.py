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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from radiogen import seeds
from radiogen.errors import ConfigError
from radiogen.interferometer.settings import InterferometerSettings
from radiogen.interferometer.wsclean import image

__all__ = ["NoiseSummary", "add_thermal_noise", "ROWS_PER_CHUNK"]

#: Rows of the measurement set read and written at a time (bounds the memory).
ROWS_PER_CHUNK = 50_000


@dataclass(frozen=True)
class NoiseSummary:
    """The noise added: per-correlation sigma (Jy, each of real and imaginary part),
    the image rms of unit-sigma noise (Jy/beam per Jy), and the implied SEFD (Jy)."""

    sigma_jy: float
    unit_image_rms: float
    sefd_jy: float


def _fill_unit_noise(ms, *, seed: int) -> None:
    """DATA = complex Gaussian noise of unit sigma per part, seeded per chunk of rows."""
    n_rows = ms.nrows()
    shape = ms.getcell("DATA", 0).shape
    for chunk, start in enumerate(range(0, n_rows, ROWS_PER_CHUNK)):
        count = min(ROWS_PER_CHUNK, n_rows - start)
        rng = seeds.generator(seed, "skymap.interferometer.noise", chunk)
        noise = rng.standard_normal((count, *shape, 2), dtype=np.float32)
        ms.putcol("DATA", (noise[..., 0] + 1j * noise[..., 1]).astype(np.complex64), startrow=start, nrow=count)


def add_thermal_noise(ms_path: str | Path, *, target_rms_jy: float, settings: InterferometerSettings,
                      size_px: int, scale_arcsec: float, seed: int, workdir: str | Path,
                      log: Path | None = None) -> NoiseSummary:
    """Set DATA = MODEL_DATA + noise whose restored-image rms is ``target_rms_jy`` (Jy/beam).

    WEIGHT and SIGMA are set to 1/sigma^2 and sigma.  ``workdir`` receives the
    unit-noise image (``noise-unit-*.fits``).

    Raises
    ------
    ConfigError
        The target is not a finite positive rms.
    """
    from casacore import tables

    if not (math.isfinite(target_rms_jy) and target_rms_jy > 0):
        raise ConfigError(f"skymap.noise_rms_ujy: the target rms must be a finite number > 0, got "
                          f"{target_rms_jy * 1e6} uJy/beam")
    with tables.table(str(ms_path), readonly=False, ack=False) as ms:
        _fill_unit_noise(ms, seed=seed)
    products = image(ms_path, prefix=Path(workdir) / "noise-unit", settings=settings, size_px=size_px,
                     scale_arcsec=scale_arcsec, data_column="DATA", clean=False, log=log)
    unit_rms = float(np.std(fits.getdata(products.dirty)))
    sigma = target_rms_jy / unit_rms
    with tables.table(str(ms_path), readonly=False, ack=False) as ms:
        n_rows = ms.nrows()
        for start in range(0, n_rows, ROWS_PER_CHUNK):
            count = min(ROWS_PER_CHUNK, n_rows - start)
            data = ms.getcol("MODEL_DATA", startrow=start, nrow=count) + sigma * ms.getcol(
                "DATA", startrow=start, nrow=count)
            ms.putcol("DATA", data.astype(np.complex64), startrow=start, nrow=count)
            ms.putcol("WEIGHT", np.full((count, 4), 1.0 / sigma**2, dtype=np.float32), startrow=start, nrow=count)
            ms.putcol("SIGMA", np.full((count, 4), sigma, dtype=np.float32), startrow=start, nrow=count)
    _, width = settings.channel_frequencies_hz()
    sefd = sigma * math.sqrt(2.0 * width * settings.integration_s)  # the radiometer equation solved for the SEFD
    return NoiseSummary(sigma, unit_rms, sefd)
