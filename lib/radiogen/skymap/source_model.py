"""A noise-free model of one generated source: PyBDSF Gaussians of its islands.

A generated LoTSS image holds the source and the training cutouts' noise.
Cutting the source out as islands above 3 sigma keeps that noise inside the
islands, ends every island in a cliff and loses the flux below the cut (for a
point source of peak k sigma about 3/k of its total flux).  The map instead
places a model: the Gaussians PyBDSF fits to the source's islands, each
evaluated on the whole cutout (smooth, noise-free, falling to zero far below
any map noise).

The fit is PyBDSF as the survey runs it on a mosaic, on the cutout with its
background level subtracted and the background rms given (``rms_value``,
from :func:`radiogen.skymap.stamps.background_level`, exact also for noise
whose negatives were set to 0, where PyBDSF's own clipped statistics would
not be).  Gaussians whose centres lie on the requested source's islands,
grown by one beam FWHM, are kept; neighbours in the cutout are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from radiogen.evaluation.pybdsf import PybdsfFailure, write_fits_image
from radiogen.evaluation.pybdsf_runtime import (
    bdsf_errstate,
    close_bdsf_log,
    fit_workdir,
    gc_frozen,
    import_bdsf,
    time_limit,
)
from radiogen.skymap.gaussians import pybdsf_gaussian

__all__ = ["fit_gaussians", "gaussian_model", "grow_mask", "FIT_TIME_LIMIT_S"]

#: Wall-clock limit of one cutout's fit, s (an 80x80 cutout takes ~0.1-0.3 s).
FIT_TIME_LIMIT_S = 60.0


def fit_gaussians(image: np.ndarray, *, rms: float, keep: np.ndarray, thresh_isl: float, thresh_pix: float,
                  pixel_scale_arcsec: float, beam_arcsec: float, frequency_hz: float,
                  workdir: str | Path | None = None) -> list[list[float]]:
    """PyBDSF Gaussians of a background-subtracted cutout whose centres lie in ``keep``.

    Parameters
    ----------
    image : ndarray (H, W)
        Cutout with its background level subtracted (image units).
    rms : float
        Background rms in image units (PyBDSF ``rms_value``; constant mean 0).
    keep : ndarray of bool (H, W)
        Pixels on which a kept Gaussian's centre must lie.
    thresh_isl, thresh_pix : float
        PyBDSF island and detection thresholds, in units of ``rms``.
    pixel_scale_arcsec, beam_arcsec, frequency_hz : float
        Pixel scale, circular restoring beam FWHM and frequency of the cutout.

    Returns
    -------
    list of [peak, x, y, fwhm_major_px, fwhm_minor_px, theta_deg]
        PyBDSF's Gaussian parameters (``peak_flux``, ``centre_pix``,
        ``size_pix``), for :func:`gaussian_model`.

    Raises
    ------
    PybdsfFailure
        PyBDSF raised or exceeded :data:`FIT_TIME_LIMIT_S`.
    """
    bdsf = import_bdsf()
    with fit_workdir(workdir, prefix="radiogen-stamp-") as workdir:
        fits_path = workdir / "cutout.fits"
        write_fits_image(fits_path, np.asarray(image, dtype=np.float32), pixel_scale_arcsec=pixel_scale_arcsec,
                         beam_arcsec=beam_arcsec, frequency_hz=frequency_hz)
        try:
            # gc_frozen: PyBDSF's own gc.collect() calls cost ~10 s per cutout in a process holding torch
            with gc_frozen(), bdsf_errstate(), time_limit(FIT_TIME_LIMIT_S):
                img = bdsf.process_image(
                    str(fits_path), outdir=str(workdir), quiet=True, ncores=1, thresh="hard",
                    thresh_isl=float(thresh_isl), thresh_pix=float(thresh_pix), mean_map="zero",
                    rms_map=False, rms_value=float(rms), beam=(beam_arcsec / 3600.0, beam_arcsec / 3600.0, 0.0),
                    frequency=float(frequency_hz))
        except Exception as err:  # PyBDSF raises bare RuntimeError/ValueError/FloatingPointError
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise PybdsfFailure(f"{type(err).__name__}: {message}"[:300]) from err
        finally:
            close_bdsf_log()
        kept = []
        height, width = keep.shape
        for g in getattr(img, "gaussians", None) or []:
            x, y = (float(v) for v in g.centre_pix)  # PyBDSF (x, y) = numpy (column, row)
            ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
            if 0 <= ix < width and 0 <= iy < height and keep[iy, ix] and float(g.peak_flux) > 0:
                kept.append([float(g.peak_flux), x, y, *(float(v) for v in g.size_pix)])
        del img
        return kept


def gaussian_model(shape: tuple[int, int], gaussians: list[list[float]]) -> np.ndarray:
    """Sum of elliptical Gaussians on a (H, W) grid, unclipped (float64).

    Each Gaussian is [peak, x, y, fwhm_major_px, fwhm_minor_px, theta_deg] as
    PyBDSF gives it, in PyBDSF's convention
    (:func:`radiogen.skymap.gaussians.pybdsf_gaussian`).
    """
    model = np.zeros(shape, dtype=np.float64)
    x_axis, y_axis = np.mgrid[:shape[1], :shape[0]].astype(np.float64)
    for g in gaussians:
        model += pybdsf_gaussian(g, x_axis, y_axis).T  # PyBDSF arrays are (x, y)
    return model


def grow_mask(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """The mask grown by a disc of ``radius_px`` pixels."""
    r = int(np.ceil(radius_px))
    gy, gx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndimage.binary_dilation(mask, structure=gx**2 + gy**2 <= radius_px**2)
