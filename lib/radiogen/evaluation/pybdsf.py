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

Three measured pitfalls of PyBDSF 1.14 are handled here:

* ``import bdsf`` sets numpy's *global* error state to ``divide='raise'``; the
  import restores the caller's state and PyBDSF runs inside ``np.errstate``
  with the state it expects, so unrelated numpy code keeps its behaviour;
* PyBDSF calls ``gc.collect()`` after every step; in a long-lived process that
  walks every live object and dominates the run time (~1.1 s of ~1.2 s per
  80x80 image).  :func:`run_shard` calls ``gc.freeze()`` once before its loop,
  moving all objects alive at that point out of the collector's reach;
* images with an exactly constant background make PyBDSF divide by a zero rms.
  As in the authors' analysis, seeded Gaussian noise of standard deviation
  ``noise_fraction * min(max(x), 1)`` is added before fitting (recorded per
  image as ``noise_sigma``); the measurements use the image without that noise.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from astropy.io import fits

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.evaluation.imagesets import ImageSet, open_image_set
from radiogen.fits_header import image_header
from radiogen.io import atomic_path

__all__ = [
    "DEFAULT_SETTINGS",
    "RESULT_COLUMNS",
    "PybdsfFailure",
    "ModelFit",
    "import_bdsf",
    "bdsf_errstate",
    "gc_frozen",
    "write_fits_image",
    "fit_image",
    "a50_pixels",
    "a50_mask",
    "positive_residual",
    "measure_image",
    "shard_range",
    "run_shard",
    "merge_shards",
    "read_models",
    "MODEL_FLUX_UNITS",
    "model_flux_columns",
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

#: Columns of the per-shard and merged CSV tables, in order.
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

_BDSF = None
_BDSF_ERRSTATE: dict | None = None
_FREEZE_DEPTH = 0


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


def import_bdsf():
    """Import PyBDSF once without changing numpy's global error state.

    Returns
    -------
    module
        The ``bdsf`` module.

    Raises
    ------
    ConfigError
        If PyBDSF is not installed.
    """
    global _BDSF, _BDSF_ERRSTATE
    if _BDSF is None:
        before = np.geterr()
        try:
            import bdsf
        except ImportError as err:  # pragma: no cover - environment problem
            raise ConfigError(
                "PyBDSF (package 'bdsf') is not installed; use the pybdsf environment"
            ) from err
        finally:
            _BDSF_ERRSTATE = np.geterr()
            np.seterr(**before)
        # PyBDSF logs every step at INFO to its own file and console handlers; passing
        # them on to the root logger as well would flood job logs (and cost time).
        logging.getLogger("PyBDSF").propagate = False
        _BDSF = bdsf
    return _BDSF


def bdsf_errstate():
    """``numpy.errstate`` as PyBDSF set it at import (it relies on ignored warnings)."""
    import_bdsf()
    return np.errstate(**_BDSF_ERRSTATE)


@contextlib.contextmanager
def gc_frozen(enabled: bool = True):
    """Keep the objects alive now out of the cyclic garbage collector's reach.

    PyBDSF calls ``gc.collect()`` after each of its ~16 steps; each call walks
    every tracked object of the process, which in a long-lived process costs
    about a second per image.  ``gc.freeze()`` moves the current objects to a
    permanent generation that collections skip; objects created later (one
    image's PyBDSF state) are still collected.  Reverted on exit.
    """
    global _FREEZE_DEPTH
    if not enabled:
        yield
        return
    gc.collect()
    gc.freeze()
    _FREEZE_DEPTH += 1
    try:
        yield
    finally:
        _FREEZE_DEPTH -= 1
        # only the outermost exit unfreezes: nested use must not thaw the caller's objects
        if _FREEZE_DEPTH == 0:
            gc.unfreeze()


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


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    # SIGALRM only works in the main thread; elsewhere the limit is not enforced.
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise _Timeout(f"PyBDSF exceeded the time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _close_bdsf_log() -> None:
    # PyBDSF replaces its handlers on every call without closing the log file.
    logger = logging.getLogger("PyBDSF")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


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
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="radiogen-bdsf-") if own_dir else workdir)
    fits_path = workdir / "image.fits"
    try:
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
            with np.errstate(**_BDSF_ERRSTATE), _time_limit(settings.get("timeout_s")):
                img = bdsf.process_image(str(fits_path), outdir=str(workdir), **options)
        except Exception as err:  # PyBDSF raises bare RuntimeError/ValueError/FloatingPointError
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise PybdsfFailure(f"{type(err).__name__}: {message}"[:300]) from err
        finally:
            _close_bdsf_log()
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
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for leftover in workdir.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)


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


def shard_range(n_images: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Contiguous block ``[start, stop)`` of shard ``shard`` out of ``n_shards``.

    Blocks differ in size by at most one image; shards beyond the number of
    images are empty (their table has no rows).
    """
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ConfigError(f"shard {shard} out of range for {n_shards} shards")
    return (shard * n_images) // n_shards, ((shard + 1) * n_images) // n_shards


def _settings_key(settings: dict, image_set: ImageSet, seed: int, start: int, stop: int) -> str:
    identity = {
        "settings": settings,
        "seed": int(seed),
        "start": start,
        "stop": stop,
        "n_images": image_set.n_images,
        "file_size": image_set.path.stat().st_size,
        "file_mtime_ns": image_set.path.stat().st_mtime_ns,
        "beam_arcsec": image_set.beam_arcsec,
        "pixel_scale_arcsec": image_set.pixel_scale_arcsec,
    }
    return json.dumps(identity, sort_keys=True, default=str)


def _write_chunk(path: Path, rows: list[dict], models: list[np.ndarray | None], key: str,
                 shape: tuple[int, int]) -> None:
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    stack = np.zeros((len(rows), *shape), dtype=np.float32)
    for i, model in enumerate(models):
        if model is not None:
            stack[i] = model
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["key"] = key
            h5.attrs["rows"] = table.to_json(orient="records")
            h5.create_dataset("index", data=table["index"].to_numpy(np.int64))
            h5.create_dataset("models", data=stack, compression="gzip", compression_opts=4,
                              chunks=(1, *shape) if len(rows) else None)


def _read_chunks(part_dir: Path, key: str) -> tuple[list[dict], dict[int, np.ndarray]]:
    rows: list[dict] = []
    models: dict[int, np.ndarray] = {}
    for chunk in sorted(part_dir.glob("chunk-*.h5")):
        try:
            with h5py.File(chunk, "r") as h5:
                if h5.attrs.get("key") != key:
                    log.info("%s: written with other settings or input, ignored", chunk)
                    continue
                chunk_rows = json.loads(h5.attrs["rows"])
                stack = h5["models"][()]
        except (OSError, KeyError, ValueError) as err:
            log.warning("%s: unreadable checkpoint (%s), recomputing its images", chunk, err)
            continue
        for row, model in zip(chunk_rows, stack):
            rows.append(row)
            models[int(row["index"])] = model
    return rows, models


def run_shard(
    image_set_path: str | os.PathLike,
    *,
    shard: int,
    n_shards: int,
    output_csv: str | os.PathLike,
    output_models: str | os.PathLike,
    settings: dict | None = None,
    seed: int,
    beam_arcsec: float | dict | None = None,
    freeze_gc: bool = True,
) -> pd.DataFrame:
    """Fit every image of one shard of an image set; resumable.

    Parameters
    ----------
    image_set_path : path-like
        Training or sample set (shared HDF5 layout).
    shard, n_shards : int
        This shard's number and the fixed number of shards of the set; the
        shard's images are the contiguous block of :func:`shard_range`.
    output_csv : path-like
        Result table, one row per image (:data:`RESULT_COLUMNS`).
    output_models : path-like
        HDF5 with ``/index`` (n,) and ``/models`` (n, H, W) float32 Gaussian
        model images (zeros where the fit failed), attrs as the image set's.
    settings : dict
        PyBDSF settings (:data:`DEFAULT_SETTINGS` keys).
    seed : int
        Seed of the stabilising noise (image ``i`` uses ``default_rng([seed, i])``).
    beam_arcsec : float or dict, optional
        Beam FWHM when the set lacks the attribute (dict: per dataset).
    freeze_gc : bool
        Call ``gc.freeze()`` before the loop (see module docstring).

    Notes
    -----
    Every ``checkpoint_every`` images the finished rows and models are written
    atomically to ``<output_csv stem>.part/chunk-<first index>.h5``; a rerun
    with identical settings and input skips those images.  The checkpoint
    directory is removed once both outputs exist.
    """
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    output_csv = Path(output_csv)
    output_models = Path(output_models)
    part_dir = output_csv.with_name(output_csv.stem + ".part")
    part_dir.mkdir(parents=True, exist_ok=True)
    with open_image_set(image_set_path, beam_arcsec=beam_arcsec) as image_set:
        start, stop = shard_range(image_set.n_images, shard, n_shards)
        projection = "SIN" if image_set.dataset == "lotss" else "TAN"
        key = _settings_key(settings, image_set, seed, start, stop)
        rows, models = _read_chunks(part_dir, key)
        done = {int(r["index"]) for r in rows}
        todo = [i for i in range(start, stop) if i not in done]
        log.info("%s shard %d/%d: images [%d, %d), %d already done, %d to fit (beam %.2f\", "
                 "%.2f\"/px, noise fraction %g)", image_set.path, shard, n_shards, start, stop,
                 len(done), len(todo), image_set.beam_arcsec, image_set.pixel_scale_arcsec,
                 settings["noise_fraction"])
        peak_flux = image_set.peak_flux(start, stop)
        context = image_set.context(start, stop)
        labels = image_set.labels(start, stop)
        import_bdsf()
        with tempfile.TemporaryDirectory(prefix="radiogen-bdsf-") as tmpdir, \
                gc_frozen(freeze_gc and bool(todo)):
            workdir = Path(tmpdir)
            batch_rows: list[dict] = []
            batch_models: list[np.ndarray | None] = []
            block = 256
            t0 = time.perf_counter()
            n_done = 0
            for block_start in range(0, len(todo), block):
                indices = todo[block_start:block_start + block]
                lo, hi = indices[0], indices[-1] + 1
                images = image_set.images(lo, hi)
                for index in indices:
                    row, model = measure_image(
                        images[index - lo], index=index, seed=seed,
                        pixel_scale_arcsec=image_set.pixel_scale_arcsec,
                        beam_arcsec=image_set.beam_arcsec, frequency_hz=image_set.frequency_hz,
                        settings=settings, projection=projection, workdir=workdir,
                    )
                    _add_set_columns(row, index - start, peak_flux, context, labels)
                    batch_rows.append(row)
                    batch_models.append(model)
                    n_done += 1
                    if len(batch_rows) >= int(settings["checkpoint_every"]):
                        _write_chunk(part_dir / f"chunk-{batch_rows[0]['index']:09d}.h5",
                                     batch_rows, batch_models, key,
                                     (image_set.height, image_set.width))
                        rows.extend(batch_rows)
                        models.update({r["index"]: m for r, m in zip(batch_rows, batch_models)})
                        batch_rows, batch_models = [], []
                        rate = n_done / (time.perf_counter() - t0)
                        log.info("%d/%d images fitted (%.2f images/s)", n_done, len(todo), rate)
            if batch_rows:
                rows.extend(batch_rows)
                models.update({r["index"]: m for r, m in zip(batch_rows, batch_models)})
            if n_done:
                log.info("fitted %d images in %.1f s (%.2f images/s)", n_done,
                         time.perf_counter() - t0, n_done / (time.perf_counter() - t0))
        table = pd.DataFrame(rows, columns=RESULT_COLUMNS).sort_values("index")
        table = table.reset_index(drop=True)
        stack = np.zeros((len(table), image_set.height, image_set.width), dtype=np.float32)
        for i, index in enumerate(table["index"]):
            model = models.get(int(index))
            if model is not None:
                stack[i] = model
        with atomic_path(output_models) as tmp:
            with h5py.File(tmp, "w") as h5:
                h5.create_dataset("index", data=table["index"].to_numpy(np.int64))
                h5.create_dataset("models", data=stack, compression="gzip", compression_opts=4,
                                  chunks=(1, image_set.height, image_set.width) if len(table)
                                  else None)
                h5.attrs["image_set"] = str(image_set.path)
                h5.attrs["settings"] = json.dumps(settings, sort_keys=True)
                h5.attrs["seed"] = int(seed)
                h5.attrs["beam_arcsec"] = image_set.beam_arcsec
                h5.attrs["pixel_scale_arcsec"] = image_set.pixel_scale_arcsec
        with atomic_path(output_csv) as tmp:
            table.to_csv(tmp, index=False)
    shutil.rmtree(part_dir, ignore_errors=True)
    counts = table["status"].value_counts().to_dict()
    log.info("shard %d/%d done: %s", shard, n_shards, counts)
    return table


def _add_set_columns(row: dict, offset: int, peak_flux, context, labels) -> None:
    peak = float(peak_flux[offset])
    row["peak_flux_jy"] = peak
    for name in ("model_flux", "image_sum"):
        row[f"{name}_jy"] = row[name] * peak if np.isfinite(peak) else np.nan
    if context is not None and labels is None and context.shape[1] >= 1:
        row["context_peak"] = float(context[offset, 0])  # LoTSS: peak flux first (then size, if any)
    if labels is not None:
        row["label"] = int(labels[offset])


def check_failure_fraction(table: pd.DataFrame, *, max_fraction: float, name: str) -> float:
    """Fraction of images PyBDSF failed on; an error above ``max_fraction``.

    A set in which many fits fail (e.g. a numpy/PyBDSF incompatibility, a time
    limit too short) would otherwise enter the figures as a biased subsample.
    The message quotes the most common reason.
    """
    n = len(table)
    failed = table[table["status"] == "failed"]
    fraction = len(failed) / n if n else 0.0
    if fraction > max_fraction:
        reasons = failed["error"].fillna("").replace("", "no message").value_counts()
        raise InputFileError(
            f"{name}: PyBDSF failed on {len(failed)} of {n} images ({100 * fraction:.1f}%), more than "
            f"evaluation.pybdsf.max_failed_fraction = {max_fraction:g}; most common reason "
            f"({int(reasons.iloc[0])} images): {reasons.index[0]!r}"
        )
    return fraction


def merge_shards(csv_paths: list[str | os.PathLike], output_csv: str | os.PathLike,
                 *, n_images: int | None = None, max_failed_fraction: float = 1.0) -> pd.DataFrame:
    """Concatenate shard tables into one table sorted by image index.

    Raises
    ------
    InputFileError
        A shard table lacks columns, indices repeat, (when ``n_images`` is
        given) the union does not cover ``0..n_images-1`` exactly, or more than
        ``max_failed_fraction`` of the images failed (:func:`check_failure_fraction`;
        the shard tables are kept, so raising the limit needs no refit).
    """
    tables = []
    for path in csv_paths:
        try:
            table = pd.read_csv(path, keep_default_na=True)
        except (OSError, pd.errors.ParserError) as err:
            raise InputFileError(f"{path}: unreadable shard table ({err})") from err
        except pd.errors.EmptyDataError:
            table = pd.DataFrame(columns=RESULT_COLUMNS)
        missing = [c for c in RESULT_COLUMNS if c not in table.columns]
        if missing:
            raise InputFileError(f"{path}: shard table lacks columns {', '.join(missing)}")
        tables.append(table[RESULT_COLUMNS])
    merged = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=RESULT_COLUMNS)
    merged["error"] = merged["error"].fillna("")
    merged = merged.sort_values("index").reset_index(drop=True)
    if merged["index"].duplicated().any():
        raise InputFileError(f"{output_csv}: shard tables repeat image indices")
    if n_images is not None and not np.array_equal(merged["index"].to_numpy(),
                                                   np.arange(n_images)):
        raise InputFileError(
            f"{output_csv}: shard tables cover {len(merged)} images, expected 0..{n_images - 1}"
        )
    check_failure_fraction(merged, max_fraction=max_failed_fraction, name=str(output_csv))
    with atomic_path(output_csv) as tmp:
        merged.to_csv(tmp, index=False)
    return merged


def read_models(paths: list[str | os.PathLike], indices) -> dict[int, np.ndarray]:
    """Model images for the given image indices from shard model files."""
    wanted = {int(i) for i in indices}
    found: dict[int, np.ndarray] = {}
    for path in paths:
        with h5py.File(path, "r") as h5:
            index = h5["index"][()]
            for pos in np.flatnonzero(np.isin(index, list(wanted))):
                found[int(index[pos])] = h5["models"][pos]
    return found


def model_flux_columns(*tables: pd.DataFrame) -> list[str]:
    """Model-flux columns to compare between PyBDSF tables (summary tables and figures alike).

    Always ``model_flux`` (scaled images, as the paper compares them), then
    ``model_flux_jy`` when every table has it finite on all its ``ok`` rows
    (LoTSS sets carry a peak flux; FIRST sets do not).

    Parameters
    ----------
    *tables : DataFrame
        Merged PyBDSF tables of the compared sets.

    Returns
    -------
    list of str
        Column names, paper quantity first.
    """
    if not tables:
        return ["model_flux"]
    for table in tables:
        ok = table[table["status"] == "ok"] if "status" in table.columns else table
        if "model_flux_jy" not in table.columns or not np.all(np.isfinite(ok["model_flux_jy"].to_numpy(dtype=float))):
            return ["model_flux"]
    return ["model_flux", "model_flux_jy"]
