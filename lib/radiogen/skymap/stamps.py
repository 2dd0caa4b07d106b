"""Generated sources of one map tile, reduced to noise-free source models in Jy/beam.

A generated LoTSS image is a min-max scaled 80x80 cutout of a source with the
training cutouts' noise (negatives set to 0) around it.  Placing it as it is
would print an 80x80 square of foreign noise on the map; cutting out its
islands would keep that noise inside them, end each island in a cliff and
lose the flux below the cut.  Each image is reduced to a noise-free model:

- background level and rms from the pixels farther than ``island_radius_px``
  from the centre (:func:`background_level`: median and 84th percentile,
  exact for noise whose negatives were set to 0);
- the requested source's islands: pixels above level +
  ``island_threshold_sigma`` x rms (8-connected), kept when their brightest
  pixel exceeds level + ``peak_threshold_sigma`` x rms and they reach within
  ``island_radius_px`` of the centre (neighbours in the cutout are left out);
- PyBDSF fitted to the background-subtracted cutout with that rms and the same
  thresholds; the Gaussians centred on the kept islands grown by one beam FWHM
  make the model (:mod:`radiogen.skymap.source_model`), evaluated on the whole
  cutout: smooth, noise-free, falling to zero far below any map noise;
- the model scaled so that its maximum is the requested peak flux (the model's
  conditioning variable).

Measured on Gaussian sources in beam-correlated and in real LoTSS DR1 noise
(10 cutouts each, negatives set to 0, min-max scaled): at a cutout peak S/N of
30 the model keeps the total flux to 0.2-2.7 % (median; the 3 sigma islands
lost 7-10 %, 37-42 % at S/N 8) and differs from the noise-free source by
0.4-0.7 of the cutout's noise rms inside the islands, against 1.1-1.5 for the
islands themselves (their noise and cliff).  At S/N 8 the fitted model
overestimates the total flux by up to 30 % (noise widens the fitted Gaussians).

The authors' map code (tmartinezML/LOFAR-Diffusion) masks at mean + 3 sigma of
the background outside a central circle, then scales to a total flux;
radiogen keeps the peak flux because that is what the LoTSS model is
conditioned on.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np
from scipy import ndimage

from radiogen.errors import InputFileError
from radiogen.evaluation.pybdsf import PybdsfFailure
from radiogen.evaluation.pybdsf_runtime import gc_frozen
from radiogen.io import atomic_path, file_digest
from radiogen.progress import Progress
from radiogen.sampler import conditioning as cond
from radiogen.seeds import stream
from radiogen.skymap.catalogue import read_sources
from radiogen.skymap.geometry import model_geometry
from radiogen.skymap.settings import MapSettings
from radiogen.skymap.source_model import fit_gaussians, gaussian_model, grow_mask
from radiogen.surveys import LOTSS

__all__ = ["MAP_STREAM", "map_seed", "background_level", "source_mask", "extract_source", "extract_source_gaussians",
           "generate_tile", "write_tile",
           "read_tile"]

log = logging.getLogger(__name__)

#: Seed stream of the map's source images (radiogen.seeds; distinct from the sample sets').
MAP_STREAM = stream("skymap.tiles")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def map_seed(seed: int) -> int:
    """Seed of the map's image noise, derived from the global seed."""
    return int(np.random.SeedSequence([int(seed), MAP_STREAM]).generate_state(1, np.uint32)[0])


def background_level(pixels: np.ndarray) -> tuple[float, float]:
    """Noise level and rms of background pixels, also when negatives were set to 0.

    level = median and rms = 84.13th percentile - median: for Gaussian noise
    both are exact, and they stay exact when the pixels below the mean were
    clipped to 0 (the LoTSS preprocessing), where a standard deviation would
    give 0.58 of the rms.  Pixels above level + 5 rms (sources) are dropped
    and the estimate repeated, up to five times.
    """
    pixels = np.asarray(pixels, dtype=np.float64).ravel()
    pixels = pixels[np.isfinite(pixels)]
    level, rms = float(np.median(pixels)), float(np.percentile(pixels, 84.13) - np.median(pixels))
    for _ in range(5):
        kept = pixels[pixels <= level + 5.0 * rms] if rms > 0 else pixels
        if kept.size < 10:
            break
        new_level = float(np.median(kept))
        new_rms = float(np.percentile(kept, 84.13) - new_level)
        if np.isclose(new_rms, rms) and np.isclose(new_level, level):
            break
        level, rms = new_level, new_rms
    if not rms > 0:
        rms = float(np.std(pixels)) or 1e-6
    return level, rms


def source_mask(image: np.ndarray, *, island_threshold_sigma: float, peak_threshold_sigma: float,
                island_radius_px: float) -> tuple[np.ndarray, float, int]:
    """Mask of the central source's islands in one cutout.

    Returns
    -------
    mask : ndarray of bool
        Pixels of the kept islands.
    background : float
        Clipped mean of the background pixels (image units).
    n_islands : int
        Number of kept islands.
    """
    image = np.asarray(image, dtype=np.float64)
    ny, nx = image.shape
    gy, gx = np.mgrid[:ny, :nx]
    radius2 = (gx - nx // 2) ** 2 + (gy - ny // 2) ** 2
    mean, std = background_level(_background_pixels(image, island_radius_px))
    labels, n = ndimage.label(image > mean + island_threshold_sigma * std, structure=_EIGHT_CONNECTED)
    if n == 0:
        return np.zeros(image.shape, dtype=bool), float(mean), 0
    index = np.arange(1, n + 1)
    peaks = ndimage.maximum(image, labels, index)
    nearest = ndimage.minimum(radius2, labels, index)
    keep = index[(peaks > mean + peak_threshold_sigma * std) & (nearest <= island_radius_px**2)]
    return np.isin(labels, keep), float(mean), int(keep.size)


def extract_source(image: np.ndarray, peak_flux_jy: float, settings: MapSettings, *,
                   pixel_scale_arcsec: float = LOTSS.pixel_scale_arcsec, beam_arcsec: float = LOTSS.beam_arcsec,
                   frequency_hz: float = LOTSS.frequency_hz, workdir: str | Path | None = None
                   ) -> tuple[np.ndarray, int]:
    """The noise-free source model of one generated image in Jy/beam, and its number of islands.

    All zeros (and 0 islands) when no island passes the thresholds or PyBDSF
    fits no Gaussian on them.  ``pixel_scale_arcsec``, ``beam_arcsec`` and
    ``frequency_hz`` describe the model's images (``model_geometry``).

    Raises
    ------
    PybdsfFailure
        PyBDSF failed on the cutout.
    """
    stamp, n_islands, _ = extract_source_gaussians(image, peak_flux_jy, settings, pixel_scale_arcsec=pixel_scale_arcsec,
                                                   beam_arcsec=beam_arcsec, frequency_hz=frequency_hz, workdir=workdir)
    return stamp, n_islands


def extract_source_gaussians(image: np.ndarray, peak_flux_jy: float, settings: MapSettings, *,
                             pixel_scale_arcsec: float = LOTSS.pixel_scale_arcsec,
                             beam_arcsec: float = LOTSS.beam_arcsec, frequency_hz: float = LOTSS.frequency_hz,
                             workdir: str | Path | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """:func:`extract_source` and the model's Gaussians, (G, 6) [peak Jy/beam, x, y, FWHM major px,
    FWHM minor px, theta deg] scaled like the stamp (PyBDSF's convention; (0, 6) for an empty model)."""
    image = np.asarray(image, dtype=np.float64)
    empty = np.zeros((0, 6))
    mask, background, n_islands = source_mask(
        image, island_threshold_sigma=settings.island_threshold_sigma,
        peak_threshold_sigma=settings.peak_threshold_sigma, island_radius_px=settings.island_radius_px)
    if n_islands == 0:
        return np.zeros(image.shape, dtype=np.float32), 0, empty
    _, rms = background_level(_background_pixels(image, settings.island_radius_px))
    # Pixels at or below the background level are blanked (NaN): in the preprocessing's images they
    # are a block of identical clipped negatives, on which PyBDSF's clipped statistics divide by
    # zero. The fit does not need them: it uses the islands above level + thresh_isl x rms, with the
    # rms given (rms_value) rather than measured by PyBDSF.
    work = image - background
    work[work <= 0] = np.nan
    gaussians = fit_gaussians(work, rms=rms, keep=grow_mask(mask, beam_arcsec / pixel_scale_arcsec),
                              thresh_isl=settings.island_threshold_sigma, thresh_pix=settings.peak_threshold_sigma,
                              pixel_scale_arcsec=pixel_scale_arcsec, beam_arcsec=beam_arcsec,
                              frequency_hz=frequency_hz, workdir=workdir)
    model = gaussian_model(image.shape, gaussians)
    top = model.max()
    if not gaussians or not top > 0:
        return np.zeros(image.shape, dtype=np.float32), 0, empty
    scaled = np.array(gaussians, dtype=np.float64)
    scaled[:, 0] *= peak_flux_jy / top
    return (model * (peak_flux_jy / top)).astype(np.float32), n_islands, scaled


def _background_pixels(image: np.ndarray, island_radius_px: float) -> np.ndarray:
    """Pixels beyond ``island_radius_px`` of the centre (all pixels if fewer than 50), as source_mask uses."""
    ny, nx = image.shape
    gy, gx = np.mgrid[:ny, :nx]
    outside = (gx - nx // 2) ** 2 + (gy - ny // 2) ** 2 > island_radius_px**2
    return image[outside] if outside.sum() >= 50 else image.ravel()


def _context(sources, meta: Mapping, source: str) -> np.ndarray:
    """(n, K) model context of catalogue rows: peak flux, and LAS for a size-conditioned model."""
    columns = [cond.peak_flux_to_context(sources["Peak_flux"].to_numpy(dtype=float) * 1e-3, meta, source=source)]
    if "size" in cond.context_names(meta):
        if "LAS" not in sources.columns:
            raise InputFileError(f"{source}: size-conditioned model, but the source catalogue has no LAS column; "
                                 "rerun the sources step with this model")
        columns.append(cond.size_to_context(sources["LAS"].to_numpy(dtype=float), meta, source=source))
    return np.column_stack(columns).astype(np.float32)


def generate_tile(
    model_path: str | Path,
    sources_csv: str | Path,
    output: str | Path,
    *,
    tile: int,
    seed: int,
    guidance: float,
    settings: MapSettings,
    sampler: Mapping | None = None,
    batch_size: int = 32,
    cuda_batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    expect_context: str | None = None,
) -> Path:
    """Generate the sources of ``tile`` and write their stamps (HDF5).

    A size-conditioned model gets each source's ``LAS`` from the catalogue as
    the second context value.

    Datasets: ``stamps`` (n, H, W) float32 Jy/beam, ``index`` (catalogue
    rows), ``n_islands``; attributes name the catalogue digest, the model and
    the sampler, which :func:`radiogen.skymap.assemble.assemble_map` checks.
    """
    from radiogen.sampler import generate

    sources = read_sources(sources_csv)
    torch_device = generate.resolve_device(device)
    autocast_dtype = generate.resolve_autocast(precision, torch_device)
    batch_size = generate.batch_size_on(torch_device, batch_size=batch_size, cuda_batch_size=cuda_batch_size)
    net, meta = generate.load_sampling_model(model_path, device=torch_device)
    generate.check_model_kind(meta, str(model_path), dataset="lotss", context=expect_context)
    # only the model's sources (a population's Gaussians are drawn analytically by the assemble step)
    generated = sources["kind"].eq("generated") if "kind" in sources.columns else True
    mine = sources[(sources["tile"] == int(tile)) & generated]
    indices = mine["index"].to_numpy(dtype=np.int64)
    peak_jy = mine["Peak_flux"].to_numpy(dtype=np.float64) * 1e-3
    sampler = generate.sampler_settings(sampler)
    _, height, width = generate.image_shape(meta)
    stamps = np.zeros((indices.size, height, width), dtype=np.float32)
    n_islands = np.zeros(indices.size, dtype=np.int64)
    gaussians = [np.zeros((0, 6))] * indices.size
    log.info("tile %d: %d source(s), guidance %g, %s %d steps on %s", tile, indices.size, guidance,
             sampler["solver"], sampler["num_steps"], torch_device)
    started = time.perf_counter()
    if indices.size:
        bar = Progress(indices.size, f"tile {tile} sources", logger=log)
        arrays = generate.generate_images(
            net, meta, indices, seed=map_seed(seed), guidance=guidance, sampler=sampler,
            batch_size=batch_size, device=torch_device, autocast_dtype=autocast_dtype,
            context=_context(mine, meta, str(model_path)),
            progress=lambda done, n: bar.update(done - bar.done), source=str(model_path),
            model_digest=generate.model_id(model_path),
        )
        bar.close()
        geometry = model_geometry(meta)
        failed = []
        fit_bar = Progress(indices.size, f"tile {tile} source models", logger=log)
        with gc_frozen(), tempfile.TemporaryDirectory(prefix="radiogen-tile-") as workdir:
            for k, (image, peak) in enumerate(zip(arrays["images"], peak_jy)):
                try:
                    stamps[k], n_islands[k], gaussians[k] = extract_source_gaussians(
                        image, peak, settings, workdir=workdir, **geometry)
                except PybdsfFailure as err:
                    failed.append(f"row {int(indices[k])}: {err}")
                fit_bar.update(1)
        fit_bar.close()
        if failed:
            log.warning("tile %d: PyBDSF failed on %d of %d generated source(s); they are left off the map "
                        "and out of the truth catalogue: %s", tile, len(failed), indices.size, "; ".join(failed[:5]))
    empty = int((n_islands == 0).sum())
    if empty:
        log.warning("tile %d: %d of %d generated source(s) have no island above %g sigma of their "
                    "cutout's noise (or no PyBDSF model); they are left off the map and out of the truth catalogue",
                    tile, empty, indices.size, settings.peak_threshold_sigma)
    write_tile(output, stamps=stamps, index=indices, n_islands=n_islands, gaussians=gaussians, attrs=dict(
        tile=int(tile), catalogue_sha256=file_digest(sources_csv), model_id=generate.model_id(model_path),
        seed=int(seed), guidance=float(guidance), sampler=json.dumps(sampler, sort_keys=True),
        **model_geometry(meta)))
    log.info("wrote %s (%d stamps, %.1f s)", output, indices.size, time.perf_counter() - started)
    return output


def write_tile(output: str | Path, *, stamps: np.ndarray, index: np.ndarray, n_islands: np.ndarray,
               attrs: Mapping, gaussians=None) -> Path:
    """Write a tile file: ``stamps`` (n, H, W) Jy/beam, ``index``, ``n_islands`` and ``attrs``.

    ``gaussians``: per stamp its model's Gaussians ((G_k, 6) arrays of
    :func:`extract_source_gaussians`), stored as ``gaussians`` (n, max G, 6),
    NaN-padded; the assemble step deconvolves them into the intrinsic sky.

    ``attrs`` must hold at least ``tile`` and ``catalogue_sha256`` (checked by
    the assemble step) and ``model_id``.
    """
    missing = [k for k in ("tile", "catalogue_sha256", "model_id") if k not in attrs]
    if missing:
        raise ValueError(f"tile attributes missing: {missing}")
    stamps = np.asarray(stamps, dtype=np.float32)
    output = Path(output)
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
        chunks = (max(1, min(64, len(stamps))),) + stamps.shape[1:] if len(stamps) else None
        h5.create_dataset("stamps", data=stamps, chunks=chunks)
        h5.create_dataset("index", data=np.asarray(index, dtype=np.int64))
        h5.create_dataset("n_islands", data=np.asarray(n_islands, dtype=np.int64))
        if gaussians is not None:
            width = max([len(g) for g in gaussians] + [1])
            padded = np.full((len(gaussians), width, 6), np.nan)
            for k, g in enumerate(gaussians):
                padded[k, :len(g)] = g
            h5.create_dataset("gaussians", data=padded)
        h5.attrs.update(dict(attrs))
    return output


def read_tile(path: str | Path) -> dict:
    """Arrays and attributes of a tile file, checked for its datasets."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: tile file does not exist")
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in ("stamps", "index", "n_islands") if k not in h5]
            if missing:
                raise InputFileError(f"{path}: not a map tile (missing {', '.join(missing)})")
            return {"stamps": h5["stamps"][()], "index": h5["index"][()], "n_islands": h5["n_islands"][()],
                    "gaussians": h5["gaussians"][()] if "gaussians" in h5 else None, "attrs": dict(h5.attrs)}
    except OSError as err:
        raise InputFileError(f"{path}: cannot read the tile ({err})") from err
