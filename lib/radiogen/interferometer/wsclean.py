"""WSClean's command line: prediction of a model image and LoTSS-like imaging.

Both read and write the measurement set in place.  Measured pitfalls of WSClean
3.1 that this module handles:

* its default prediction (small-inversion resampling, few w-layers) is accurate
  to only ~0.6%; ``-use-wgridder -no-small-inversion`` matches a direct
  Fourier sum to ~1e-5 (tests/test_interferometer.py checks it);
* it images CORRECTED_DATA when that column exists, so the column is always
  named (``-data-column``);
* it ignores a model image's CRVAL: the model's centre pixel (N/2, counting
  from 0) is the measurement set's phase centre
  (:func:`radiogen.interferometer.model_image.check_model_grid` checks it).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from radiogen.errors import InputFileError, RadiogenError
from radiogen.interferometer.settings import InterferometerSettings

__all__ = ["ImagingProducts", "WscleanError", "image", "predict", "wsclean_executable"]


class WscleanError(RadiogenError):
    """WSClean exited with an error; the message holds the end of its output."""


@dataclass(frozen=True)
class ImagingProducts:
    """FITS files of one imaging run (Jy/beam except ``model``, Jy/pixel)."""

    restored: Path
    residual: Path
    model: Path
    psf: Path
    dirty: Path


def wsclean_executable() -> str:
    """Path of ``wsclean``; :class:`InputFileError` naming the package when it is missing."""
    found = shutil.which("wsclean")
    if found is None:
        raise InputFileError("the imager wsclean is not installed (not on PATH): install the Debian package "
                             "wsclean (scripts/setup does it when run as root)")
    return found


def _run(arguments: list[str], *, log: Path | None, timeout_s: float) -> str:
    """Run WSClean with ``arguments``; its output goes to ``log`` (appended) and is returned."""
    command = [wsclean_executable(), *arguments]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        raise WscleanError(f"wsclean ran past its limit of {timeout_s} s: {' '.join(command)}") from err
    output = done.stdout + done.stderr
    if log is not None:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(command) + "\n" + output + "\n")
    if done.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise WscleanError(f"wsclean exited with status {done.returncode}: {' '.join(command)}\n{tail}")
    return output


def predict(ms: str | Path, *, model_prefix: str | Path, size_px: int, scale_arcsec: float, threads: int,
            log: Path | None = None, timeout_s: float = 6 * 3600) -> None:
    """Predict ``<model_prefix>-model.fits`` (Jy/pixel) into the MODEL_DATA column of ``ms``.

    The w-gridder without small inversion (accurate to ~1e-5 against a direct
    Fourier sum, with the w-term); the model's grid must be ``size_px`` square
    at ``scale_arcsec`` per pixel, centred on the phase centre.
    """
    model = Path(f"{model_prefix}-model.fits")
    if not model.is_file():
        raise InputFileError(f"{model}: model image for the prediction not found")
    _run(["-predict", "-use-wgridder", "-no-small-inversion", "-j", str(threads),
          "-size", str(size_px), str(size_px), "-scale", f"{scale_arcsec}asec",
          "-name", str(model_prefix), str(ms)], log=log, timeout_s=timeout_s)


def imaging_arguments(settings: InterferometerSettings, *, size_px: int, scale_arcsec: float,
                      data_column: str, clean: bool = True) -> list[str]:
    """WSClean options of a LoTSS-like image: weighting, taper, uv cut, beam fit, masks, thresholds."""
    arguments = ["-use-wgridder", "-j", str(settings.threads), "-size", str(size_px), str(size_px),
                 "-scale", f"{scale_arcsec}asec", "-weight", "briggs", str(settings.robust),
                 "-minuv-l", str(settings.uv_min_lambda), "-data-column", data_column,
                 "-no-update-model-required"]
    if settings.taper_arcsec > 0:
        arguments += ["-taper-gaussian", f"{settings.taper_arcsec}asec"]
    if clean:  # the restoring beam's fit and CLEAN: not read for a dirty image (the noise calibration's)
        arguments += ["-beam-fitting-size", str(settings.beam_fitting_size),
                      "-niter", str(settings.max_iterations), "-mgain", str(settings.major_gain),
                      "-auto-mask", str(settings.auto_mask_sigma),
                      "-auto-threshold", str(settings.auto_threshold_sigma)]
        if settings.multiscale:
            arguments.append("-multiscale")
    else:
        arguments += ["-niter", "0"]
    return arguments


def image(ms: str | Path | Sequence[str | Path], *, prefix: str | Path, settings: InterferometerSettings,
          size_px: int, scale_arcsec: float, data_column: str = "DATA", clean: bool = True,
          log: Path | None = None, timeout_s: float = 6 * 3600) -> ImagingProducts:
    """Image ``data_column`` of ``ms`` into ``<prefix>-{image,residual,model,psf,dirty}.fits``.

    ``ms`` is one measurement set or several (channel blocks of one
    observation): WSClean grids them together into one image, with imaging
    weights computed over all of them.  With ``clean`` False only the dirty
    image and PSF are meaningful (no deconvolution; WSClean still writes the
    other files).
    """
    sets = [str(ms)] if isinstance(ms, (str, Path)) else [str(m) for m in ms]
    if not sets:
        raise InputFileError("no measurement set to image")
    _run([*imaging_arguments(settings, size_px=size_px, scale_arcsec=scale_arcsec, data_column=data_column,
                             clean=clean), "-make-psf", "-name", str(prefix), *sets],
         log=log, timeout_s=timeout_s)
    products = ImagingProducts(*(Path(f"{prefix}-{kind}.fits")
                                 for kind in ("image", "residual", "model", "psf", "dirty")))
    for path in (products.restored, products.psf, products.dirty):
        if not path.is_file():
            raise WscleanError(f"wsclean finished but wrote no {path}")
    return products
