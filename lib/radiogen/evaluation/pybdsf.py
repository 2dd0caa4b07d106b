"""PyBDSF source models of many small images in one process (paper Sect. 5.1).

Each image is written to a temporary FITS file whose header carries the pixel
scale (CDELT), the restoring beam (BMAJ/BMIN/BPA), the frequency and a SIN
(LoTSS) or TAN (FIRST) WCS, fitted with :func:`bdsf.process_image`, and reduced
to a few numbers:

* ``model_flux``: sum of the fitted Gaussians' total fluxes (image unit x beam,
  i.e. Jy for an image in Jy/beam);
* ``a50_pixels``: A50%, the smallest number of pixels of the Gaussian model
  image holding half of its total flux (sort model pixels in decreasing order,
  count until the cumulative sum reaches 50%);
* ``delta_plus``: the positive residual of paper Sect. 5.2,
  ``Delta+ = sum_i (x_i - m_i) Theta(x_i - m_i)`` of the image x against the
  model m, in summed pixel units of the image.

Images with an exactly constant background make PyBDSF divide by a zero rms.
As in the authors' analysis, seeded Gaussian noise of standard deviation
``noise_fraction * min(max(x), 1)`` is added before fitting (recorded per
image as ``noise_sigma``); the measurements use the image without that noise.

PyBDSF's run-time pitfalls (numpy error state, garbage collection, log files,
time limits) are handled in :mod:`radiogen.evaluation.pybdsf_runtime`; whole
image sets in resumable shards in :mod:`radiogen.evaluation.pybdsf_shards`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from radiogen.config import section_defaults
from radiogen.evaluation.pybdsf_runtime import bdsf_errstate, close_bdsf_log, fit_workdir, import_bdsf, time_limit
from radiogen.fits_header import image_header

__all__ = [
    "DEFAULT_SETTINGS",
    "RESULT_COLUMNS",
    "PybdsfFailure",
    "ModelFit",
    "write_fits_image",
    "fit_image",
    "a50_pixels",
    "a50_mask",
    "positive_residual",
    "measure_image",
    "MODEL_FLUX_UNITS",
]

log = logging.getLogger(__name__)

#: Defaults follow the authors' PyBDSF analysis (paper Table 5): a hard
#: threshold with island threshold 5 sigma and *pixel* threshold 0.5 sigma.  A
#: pixel threshold below the island threshold means every island above 5 sigma
#: is accepted down to 0.5 sigma; the usual PyBDSF choice is thresh_pix=5,
#: thresh_isl=3 and stays available through the configuration.
#: They are written once, in ``evaluation.pybdsf`` of the schema; these are the
#: keys that the fits and the shard driver read.
FIT_KEYS = ("thresh", "thresh_isl", "thresh_pix", "mean_map", "rms_map", "rms_box", "noise_fraction",
            "timeout_s", "checkpoint_every", "options")
DEFAULT_SETTINGS = {key: section_defaults("evaluation.pybdsf")[key] for key in FIT_KEYS}

#: Columns of one image's result row (:func:`measure_image`), in the order of the tables.
RESULT_COLUMNS = [
    "index",
    "status",
    "error",
    "n_gaussians",
    "n_sources",
    "model_flux",
    "model_image_sum",
    "image_sum",
    "a50_pixels",
    "delta_plus",
    "peak_flux_jy",
    "model_flux_jy",
    "image_sum_jy",
    "noise_sigma",
    "context_peak",
    "label",
    "seconds",
]

#: Model-flux columns of the tables and their units.  ``model_flux`` is the
#: total flux of the min-max-scaled image, the quantity of the paper's Fig. 15;
#: ``model_flux_jy`` undoes the scaling with the image's peak flux (LoTSS only).
MODEL_FLUX_UNITS = {"model_flux": "scaled image units x beam", "model_flux_jy": "Jy"}


class PybdsfFailure(Exception):
    """PyBDSF could not model one image; the message is the recorded reason."""


@dataclass
class ModelFit:
    """Result of fitting one image.

    Attributes
    ----------
    model : ndarray (H, W) float32
        Gaussian model image in the image's unit (NaN-free; masked pixels are 0).
    n_gaussians, n_sources : int
        Numbers of fitted Gaussians and of sources they were grouped into.
    model_flux : float
        Sum of the Gaussians' total fluxes (image unit x beam; Jy for Jy/beam).
    """

    model: np.ndarray
    n_gaussians: int
    n_sources: int
    model_flux: float


def write_fits_image(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    pixel_scale_arcsec: float,
    beam_arcsec: float,
    frequency_hz: float,
    projection: str = "SIN",
    bunit: str = "JY/BEAM",
) -> None:
    """Write a 2-D image as FITS with the WCS, beam and frequency PyBDSF needs.

    The reference pixel is the image centre at an arbitrary sky position
    (RA 180 deg, Dec 45 deg): positions do not enter any measurement here.
    """
    image = np.asarray(image, dtype=np.float32)
    header = image_header(image.shape, pixel_scale_arcsec=pixel_scale_arcsec, beam_arcsec=beam_arcsec,
                          frequency_hz=frequency_hz, ra_deg=180.0, dec_deg=45.0, bunit=bunit,
                          projection=projection)
    fits.PrimaryHDU(data=image, header=header).writeto(path, overwrite=True)


def _process_options(settings: dict, *, beam_arcsec: float, frequency_hz: float) -> dict:
    options = {
        "thresh": settings["thresh"],
        "thresh_isl": float(settings["thresh_isl"]),
        "thresh_pix": float(settings["thresh_pix"]),
        "mean_map": settings["mean_map"],
        "rms_map": bool(settings["rms_map"]),
        "beam": (beam_arcsec / 3600.0, beam_arcsec / 3600.0, 0.0),
        "frequency": float(frequency_hz),
        "quiet": True,
        # One core: with ncores unset PyBDSF forks a multiprocessing manager and up to
        # (CPUs - 1) workers per image with several islands, oversubscribing the node.
        "ncores": 1,
    }
    if settings.get("rms_box"):
        options["rms_box"] = tuple(int(v) for v in settings["rms_box"])
    options.update(settings.get("options") or {})
    return options


def fit_image(
    image: np.ndarray,
    *,
    pixel_scale_arcsec: float,
    beam_arcsec: float,
    frequency_hz: float,
    settings: dict | None = None,
    projection: str = "SIN",
    workdir: str | os.PathLike | None = None,
) -> ModelFit:
    """Fit one image with PyBDSF and return its Gaussian model.

    Parameters
    ----------
    image : ndarray (H, W)
        The image as given to PyBDSF (add any stabilising noise beforehand).
    pixel_scale_arcsec, beam_arcsec, frequency_hz : float
        Header values (arcsec/pixel, circular beam FWHM in arcsec, Hz).
    settings : dict, optional
        Keys of :data:`DEFAULT_SETTINGS`; missing keys take the defaults.
    projection : {"SIN", "TAN"}
        WCS projection of the temporary FITS file.
    workdir : path-like, optional
        Directory for the temporary FITS and PyBDSF log; a fresh one if None.

    Raises
    ------
    PybdsfFailure
        PyBDSF raised (e.g. "unphysical rms" on a blank image) or returned no model.
    """
    bdsf = import_bdsf()
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    with fit_workdir(workdir, prefix="radiogen-bdsf-") as workdir:
        fits_path = workdir / "image.fits"
        write_fits_image(
            fits_path,
            image,
            pixel_scale_arcsec=pixel_scale_arcsec,
            beam_arcsec=beam_arcsec,
            frequency_hz=frequency_hz,
            projection=projection,
        )
        options = _process_options(settings, beam_arcsec=beam_arcsec, frequency_hz=frequency_hz)
        try:
            with bdsf_errstate(), time_limit(settings.get("timeout_s")):
                img = bdsf.process_image(str(fits_path), outdir=str(workdir), **options)
        except Exception as err:  # PyBDSF raises bare RuntimeError/ValueError/FloatingPointError
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise PybdsfFailure(f"{type(err).__name__}: {message}"[:300]) from err
        finally:
            close_bdsf_log()
        n_gaussians = int(getattr(img, "ngaus", 0) or 0)
        n_sources = int(getattr(img, "nsrc", 0) or 0)
        model = getattr(img, "model_gaus_arr", None)
        if model is None:
            if n_gaussians:
                raise PybdsfFailure("PyBDSF returned Gaussians but no model image")
            model = np.zeros(np.shape(image), dtype=np.float32)
        else:
            # PyBDSF stores arrays as (x, y); FITS/numpy order is (y, x).
            model = np.nan_to_num(np.asarray(model, dtype=np.float32).T, nan=0.0)
        model_flux = float(sum(float(g.total_flux) for g in getattr(img, "gaussians", []) or []))
        del img
        return ModelFit(model=model, n_gaussians=n_gaussians, n_sources=n_sources,
                        model_flux=model_flux)


def a50_mask(model: np.ndarray) -> np.ndarray:
    """Boolean mask of the fewest model pixels holding 50% of the model's flux.

    Pixels are taken in decreasing order of value until their sum reaches half
    of the total (negative model pixels are ignored).  All False for an empty model.
    """
    values = np.clip(np.nan_to_num(np.asarray(model, dtype=np.float64)), 0.0, None).ravel()
    total = values.sum()
    mask = np.zeros(values.size, dtype=bool)
    if not total > 0:
        return mask.reshape(np.shape(model))
    order = np.argsort(values)[::-1]
    cumulative = np.cumsum(values[order])
    count = int(np.searchsorted(cumulative, 0.5 * total, side="left")) + 1
    mask[order[:count]] = True
    return mask.reshape(np.shape(model))


def a50_pixels(model: np.ndarray) -> float:
    """A50%: the number of pixels of :func:`a50_mask` (NaN for an empty model)."""
    mask = a50_mask(model)
    return float(mask.sum()) if mask.any() else float("nan")


def positive_residual(image: np.ndarray, model: np.ndarray) -> float:
    """``Delta+ = sum_i (x_i - m_i) Theta(x_i - m_i)`` (paper Sect. 5.2), image units x pixels."""
    diff = np.asarray(image, dtype=np.float64) - np.nan_to_num(np.asarray(model, dtype=np.float64))
    return float(diff[diff > 0].sum())


def _image_seed(seed: int, index: int) -> np.random.Generator:
    # Seeded by (seed, index) so the noise of an image does not depend on sharding.
    return np.random.default_rng([int(seed), int(index)])


def measure_image(
    image: np.ndarray,
    *,
    index: int,
    seed: int,
    pixel_scale_arcsec: float,
    beam_arcsec: float,
    frequency_hz: float,
    settings: dict | None = None,
    projection: str = "SIN",
    workdir: str | os.PathLike | None = None,
) -> tuple[dict, np.ndarray | None]:
    """Fit one image (with the stabilising noise) and return its result row and model.

    Never raises for PyBDSF problems: the row's ``status`` is ``"ok"``,
    ``"no_source"`` (PyBDSF fitted no Gaussian) or ``"failed"`` with ``error``
    holding the reason.  Fluxes are in the image's unit; ``image_sum`` and
    ``model_image_sum`` divide pixel sums by the beam area in pixels
    (``2 pi sigma^2 / px^2``) so they compare with ``model_flux``.
    """
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    image = np.asarray(image, dtype=np.float32)
    sigma_beam = beam_arcsec / np.sqrt(8.0 * np.log(2.0))
    beam_area = 2.0 * np.pi * sigma_beam**2 / pixel_scale_arcsec**2
    peak = float(np.max(image)) if image.size else 0.0
    noise_sigma = float(settings["noise_fraction"]) * min(max(peak, 0.0), 1.0)
    noisy = image
    if noise_sigma > 0:
        noise = _image_seed(seed, index).normal(0.0, noise_sigma, size=image.shape)
        noisy = (image + noise).astype(np.float32)
    row = {column: np.nan for column in RESULT_COLUMNS}
    row.update(index=int(index), status="failed", error="", n_gaussians=0, n_sources=0,
               image_sum=float(image.sum() / beam_area), noise_sigma=noise_sigma)
    start = time.perf_counter()
    model = None
    try:
        fit = fit_image(noisy, pixel_scale_arcsec=pixel_scale_arcsec, beam_arcsec=beam_arcsec,
                        frequency_hz=frequency_hz, settings=settings, projection=projection,
                        workdir=workdir)
    except PybdsfFailure as err:
        row["error"] = str(err) or "PyBDSF failed without a message"
    except Exception as err:  # noqa: BLE001 - one odd image must not abort a shard
        log.warning("image %d: unexpected %s: %s", index, type(err).__name__, err)
        row["error"] = f"{type(err).__name__}: {err}"[:300]
    else:
        model = fit.model
        row.update(n_gaussians=fit.n_gaussians, n_sources=fit.n_sources)
        if fit.n_gaussians == 0:
            row.update(status="no_source", error="PyBDSF fitted no Gaussian")
        else:
            row.update(
                status="ok",
                model_flux=fit.model_flux,
                model_image_sum=float(model.sum() / beam_area),
                a50_pixels=a50_pixels(model),
                delta_plus=positive_residual(image, model),
            )
    row["seconds"] = time.perf_counter() - start
    return row, model


