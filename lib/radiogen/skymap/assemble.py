"""Place the tiles' source stamps on the map grid, observe it, and write the truth.

Outputs, each written atomically (the truth catalogue last, so its presence
means the map is complete):

- ``sky_model.fits``: the noise-free sky model, Jy/beam at the survey
  resolution (the generated sources are already at the survey's beam), with
  an image extension ``FOOTPRINT``: per pixel 1 + the truth-catalogue row of
  the source that contributes most there, on each source's pixels above
  ``island_threshold_sigma`` x the map rms, 0 elsewhere;
- ``map.fits``: the observed map, the sky model through an observation of
  :data:`OBSERVATIONS` (``image_plane``: plus beam-correlated Gaussian noise at
  ``noise_rms_ujy`` or an rms map);
- ``truth.csv``: one row per placed source with the LoTSS catalogue columns,
  measured on the placed noise-free model: ``Peak_flux``, ``Total_flux``
  (sum / beam area in pixels) and the flux-weighted position on all of it;
  ``LAS``, ``n_pixels`` and the footprint on the pixels above
  ``island_threshold_sigma`` x the map rms (the brightest pixel of a fainter
  source).

Simplified against the follow-up paper (Vičánek Martínez et al. 2025): no
visibilities, no LOSITO corruptions and no deconvolution.  A visibility
simulation plugs in as another entry of :data:`OBSERVATIONS`: a function from
the sky model and its header to the observed map.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from astropy.io import fits
from scipy.spatial import ConvexHull, QhullError

from radiogen.errors import InputFileError
from radiogen.io import atomic_path, file_digest
from radiogen.lotss.mosaic import jy_per_beam_scale
from radiogen.noise import beam_correlated_noise
from radiogen.seeds import stream
from radiogen.skymap.catalogue import read_sources
from radiogen.skymap.geometry import beam_area_px, n_tiles, wcs_of
from radiogen.skymap.settings import MapSettings
from radiogen.skymap.stamps import read_tile

__all__ = ["NOISE_STREAM", "OBSERVATIONS", "largest_extent_px", "place_stamps", "image_plane_observation",
           "read_rms_map", "assemble_map", "TRUTH_COLUMNS"]

log = logging.getLogger(__name__)

#: Seed stream of the map noise (radiogen.seeds).
NOISE_STREAM = stream("skymap.noise")
TRUTH_COLUMNS = ("Source_Name", "RA", "DEC", "optRA", "optDec", "LAS", "LAS_from", "Peak_flux", "Total_flux",
                 "E_Total_flux", "S_Code", "Mosaic_ID", "Requested_peak_flux", "Peak_flux_clipped", "Requested_LAS",
                 "n_islands", "n_pixels", "x_pix", "y_pix", "tile")


def largest_extent_px(mask: np.ndarray) -> float:
    """Largest extent (maximum Feret diameter) of the mask's pixels, in pixels.

    Distance between the two farthest pixel centres plus one pixel (their own
    width); 1 for a single pixel, 0 for an empty mask.
    """
    points = np.argwhere(mask).astype(float)
    if len(points) == 0:
        return 0.0
    if len(points) >= 3:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all pixels on one line: every point is a candidate
            pass
    diff = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max() + 1.0)


def place_stamps(shape: tuple[int, int], stamps: np.ndarray, ix: np.ndarray, iy: np.ndarray
                 ) -> tuple[np.ndarray, list[tuple[slice, slice, slice, slice]]]:
    """Sum stamps into a map of ``shape``, each centred (index size // 2) at (iy, ix).

    Returns the map (float32) and, per stamp, (map rows, map columns, stamp
    rows, stamp columns) slices of the part that lies on the map.
    """
    sky = np.zeros(shape, dtype=np.float32)
    ny, nx = shape
    placed = []
    height, width = stamps.shape[1:]
    for stamp, x, y in zip(stamps, ix, iy):
        y0, x0 = int(y) - height // 2, int(x) - width // 2
        rows = slice(max(y0, 0), min(y0 + height, ny))
        cols = slice(max(x0, 0), min(x0 + width, nx))
        srows = slice(rows.start - y0, rows.stop - y0)
        scols = slice(cols.start - x0, cols.stop - x0)
        sky[rows, cols] += stamp[srows, scols]
        placed.append((rows, cols, srows, scols))
    return sky, placed


def read_rms_map(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """An rms map on the map grid, in Jy/beam (BUNIT converted); shape and values checked."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: rms map does not exist")
    with fits.open(path) as hdul:
        data = np.squeeze(hdul[0].data)
        scale = jy_per_beam_scale(hdul[0].header.get("BUNIT"), path=path)
    if data is None or data.shape != tuple(shape):
        raise InputFileError(f"{path}: rms map has shape {None if data is None else data.shape}, "
                             f"the map grid is {tuple(shape)}")
    rms = np.asarray(data, dtype=np.float64) * scale
    if not (np.isfinite(rms).all() and (rms > 0).all()):
        raise InputFileError(f"{path}: rms map must be finite and > 0 everywhere")
    return rms


def image_plane_observation(sky: np.ndarray, *, header: fits.Header, settings: MapSettings,
                            rms_jy: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sky model plus Gaussian noise correlated like the restoring beam.

    Unit-rms noise whose autocorrelation is the header's beam (BMAJ, BMIN,
    BPA; :func:`radiogen.noise.beam_correlated_noise`), times ``rms_jy`` (a
    number or an rms map on the grid, Jy/beam).
    """
    scale_deg = abs(float(header["CDELT2"]))
    bmaj = float(header["BMAJ"])
    noise = beam_correlated_noise(rng, sky.shape, bmaj_px=bmaj / scale_deg,
                                  bmin_px=float(header.get("BMIN", bmaj)) / scale_deg,
                                  bpa_deg=float(header.get("BPA", 0.0)))
    return (sky + noise * rms_jy).astype(np.float32)


#: Observations of the sky model: name -> f(sky, header=, settings=, rms_jy=, rng=) -> map.
OBSERVATIONS: dict[str, Callable[..., np.ndarray]] = {"image_plane": image_plane_observation}


def _check_tiles(tile_paths: Sequence[str | Path], sources: pd.DataFrame, digest: str, expected: int,
                 sources_csv) -> list[dict]:
    tiles, seen_tiles, model = [], {}, None
    for path in tile_paths:
        tile = read_tile(path)
        attrs = tile["attrs"]
        if attrs.get("catalogue_sha256") != digest:
            raise InputFileError(f"{path}: tile was generated from another source catalogue than "
                                 f"{sources_csv}; rerun its tile job")
        if model is not None and attrs.get("model_id") != model[1]:
            raise InputFileError(f"{path}: tile comes from another model than {model[0]}")
        model = model or (path, attrs.get("model_id"))
        number = int(attrs["tile"])
        if number in seen_tiles:
            raise InputFileError(f"{path}: tile {number} given twice (also {seen_tiles[number]})")
        seen_tiles[number] = path
        expected_rows = sources.index[sources["tile"] == number].to_numpy()
        if not np.array_equal(np.sort(tile["index"]), expected_rows):
            raise InputFileError(f"{path}: tile {number} holds sources {tile['index'][:5].tolist()}..., "
                                 f"the catalogue puts {expected_rows.size} other(s) there")
        tiles.append(tile)
    missing = sorted(set(range(expected)) - set(seen_tiles))
    if missing:
        raise InputFileError(f"tiles {missing} of {expected} are missing from the inputs")
    return tiles


def assemble_map(
    sources_csv: str | Path,
    header_path: str | Path,
    tile_paths: Sequence[str | Path],
    *,
    settings: MapSettings,
    seed: int,
    name: str,
    map_path: str | Path,
    sky_model_path: str | Path,
    truth_path: str | Path,
) -> pd.DataFrame:
    """Write the sky model, the observed map and the truth catalogue; return the truth.

    Every source of the catalogue must come from exactly one tile, and all
    tiles from this catalogue (its SHA-256) and one model.
    """
    sources = read_sources(sources_csv)
    header = fits.Header.fromtextfile(str(header_path))
    size = int(header["NAXIS1"])
    tiles = _check_tiles(tile_paths, sources, file_digest(sources_csv),
                         n_tiles(size, settings.tile_px), sources_csv)
    index = np.concatenate([t["index"] for t in tiles]) if tiles else np.zeros(0, np.int64)
    stamps = np.concatenate([t["stamps"] for t in tiles]) if index.size else np.zeros((0, 1, 1), np.float32)
    n_islands = np.concatenate([t["n_islands"] for t in tiles]) if index.size else np.zeros(0, np.int64)
    order = np.argsort(index)
    index, stamps, n_islands = index[order], stamps[order], n_islands[order]
    rows = sources.iloc[index]
    sky, placed = place_stamps((size, size), stamps, rows["ix"].to_numpy(), rows["iy"].to_numpy())

    scale_arcsec = abs(float(header["CDELT2"])) * 3600.0
    beam_px = beam_area_px(float(header["BMAJ"]) * 3600.0, scale_arcsec)
    wcs = wcs_of(header)
    # the map noise, a number or an rms map (Jy/beam): read once, for the truth errors and the observation
    rms_jy = read_rms_map(settings.rms_map, (size, size)) if settings.rms_map else settings.noise_rms_ujy * 1e-6
    truth, cut_at_border = [], 0
    footprint = np.zeros((size, size), dtype=np.int32)
    strongest = np.zeros((size, size), dtype=np.float32)
    for k, (row, (mrows, mcols, srows, scols)) in enumerate(zip(rows.itertuples(), placed)):
        part = stamps[k][srows, scols].astype(np.float64)
        if n_islands[k] == 0 or part.max() <= 0:
            continue
        local_rms = float(rms_jy[row.iy, row.ix]) if np.ndim(rms_jy) else rms_jy
        pixel_rms = rms_jy[mrows, mcols] if np.ndim(rms_jy) else rms_jy
        # the source's extent: the model above island_threshold_sigma x the map rms (what a source
        # finder's island could hold), or its brightest pixel for a source fainter than that
        extent = part >= settings.island_threshold_sigma * pixel_rms
        if not extent.any():
            extent = part == part.max()
        stamp = stamps[k]
        border = max(stamp[0].max(), stamp[-1].max(), stamp[:, 0].max(), stamp[:, -1].max())
        if border >= local_rms:
            cut_at_border += 1
        region = extent & (part > strongest[mrows, mcols])
        footprint[mrows, mcols][region] = len(truth) + 1
        strongest[mrows, mcols][region] = part[region]
        py, px = np.nonzero(part > 0)
        weight = part[py, px]
        cy = mrows.start + float((py * weight).sum() / weight.sum())
        cx = mcols.start + float((px * weight).sum() / weight.sum())
        ra, dec = wcs.pixel_to_world_values(cx, cy)
        n_pixels = int(extent.sum())
        truth.append({
            "Source_Name": row.Source_Name,
            "RA": float(ra) % 360.0,
            "DEC": float(dec),
            "optRA": float(row.RA),
            "optDec": float(row.DEC),
            "LAS": largest_extent_px(extent) * scale_arcsec,
            "LAS_from": "model",
            "Peak_flux": float(part.max()) * 1e3,
            "Total_flux": float(part.sum()) / beam_px * 1e3,
            "E_Total_flux": local_rms * 1e3 * float(np.sqrt(max(1.0, n_pixels / beam_px))),
            "S_Code": "S" if n_islands[k] == 1 else "M",
            "Mosaic_ID": name,
            "Requested_peak_flux": float(row.Peak_flux),
            "Peak_flux_clipped": bool(row.Peak_flux_clipped) if "Peak_flux_clipped" in rows else False,
            "Requested_LAS": float(row.LAS) if "LAS" in rows else np.nan,
            "n_islands": int(n_islands[k]),
            "n_pixels": n_pixels,
            "x_pix": int(row.ix),
            "y_pix": int(row.iy),
            "tile": int(row.tile),
        })
    if cut_at_border:
        log.warning("%d source model(s) reach the edge of their %dx%d px cutout above the map rms; the map "
                    "has a step there", cut_at_border, *stamps.shape[1:])
    truth = pd.DataFrame(truth, columns=list(TRUTH_COLUMNS))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), NOISE_STREAM]))
    observed = OBSERVATIONS[settings.observation](sky, header=header, settings=settings, rms_jy=rms_jy, rng=rng)

    out_header = header.copy()
    out_header["BUNIT"] = "JY/BEAM"
    with atomic_path(sky_model_path) as tmp:
        fits.HDUList([fits.PrimaryHDU(data=sky, header=out_header),
                      fits.ImageHDU(data=footprint, header=wcs.to_header(), name="FOOTPRINT")]
                     ).writeto(tmp, overwrite=True)
    out_header["NOISE"] = (settings.noise_rms_ujy * 1e-6 if not settings.rms_map else -1.0,
                           "image-plane noise rms [Jy/beam]; -1 = rms map")
    with atomic_path(map_path) as tmp:
        fits.PrimaryHDU(data=observed, header=out_header).writeto(tmp, overwrite=True)
    with atomic_path(truth_path) as tmp:
        truth.to_csv(tmp, index=False, float_format="%.10g")
    log.info("map %s: %dx%d px, %d of %d source(s) placed from %d tile(s); %d without emission left out",
             name, size, size, len(truth), len(sources), len(tiles), int((n_islands == 0).sum()))
    return truth
