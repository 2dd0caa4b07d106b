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
from radiogen.skymap.gaussians import pybdsf_gaussian
from radiogen.skymap.geometry import beam_area_px, n_tiles, wcs_of
from radiogen.skymap.settings import MapSettings
from radiogen.skymap import population
from radiogen.skymap.stamps import read_tile

__all__ = ["NOISE_STREAM", "OBSERVATIONS", "largest_extent_px", "place_stamps", "image_plane_observation",
           "read_rms_map", "assemble_map", "TRUTH_COLUMNS"]

log = logging.getLogger(__name__)

#: Seed stream of the map noise (radiogen.seeds).
NOISE_STREAM = stream("skymap.noise")
TRUTH_COLUMNS = ("Source_Name", "RA", "DEC", "optRA", "optDec", "LAS", "LAS_from", "Peak_flux", "Total_flux",
                 "E_Total_flux", "S_Code", "Mosaic_ID", "Requested_peak_flux", "Peak_flux_clipped", "Requested_LAS",
                 "n_islands", "n_pixels", "x_pix", "y_pix", "tile", "kind", "Resolved", "Maj", "Min", "PA",
                 "Maj_convolved", "Min_convolved")


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


def place_stamps(shape: tuple[int, int], stamps, ix: np.ndarray, iy: np.ndarray
                 ) -> tuple[np.ndarray, list[tuple[slice, slice, slice, slice]]]:
    """Sum stamps into a map of ``shape``, each centred (index size // 2) at (iy, ix).

    ``stamps``: an (n, H, W) array or a sequence of 2-D stamps of any sizes.
    Returns the map (float32) and, per stamp, (map rows, map columns, stamp
    rows, stamp columns) slices of the part that lies on the map.
    """
    sky = np.zeros(shape, dtype=np.float32)
    ny, nx = shape
    placed = []
    for stamp, x, y in zip(stamps, ix, iy):
        height, width = stamp.shape
        y0, x0 = int(y) - height // 2, int(x) - width // 2
        rows = slice(max(y0, 0), min(y0 + height, ny))
        cols = slice(max(x0, 0), min(x0 + width, nx))
        srows = slice(rows.start - y0, rows.stop - y0)
        scols = slice(cols.start - x0, cols.stop - x0)
        if rows.stop > rows.start and cols.stop > cols.start:
            sky[rows, cols] += stamp[srows, scols]
        placed.append((rows, cols, srows, scols))
    return sky, placed


def deconvolved_stamp(gaussians: np.ndarray, shape: tuple[int, int], *, beam_px: float) -> np.ndarray:
    """The intrinsic sky of a generated source, Jy/pixel: its model's Gaussians deconvolved from the beam.

    Each Gaussian (peak Jy/beam, x, y, FWHM major, minor px, theta; PyBDSF's
    convention) holds S = peak maj min / b^2 Jy; deconvolved from the circular
    beam b its axes become sqrt(theta^2 - b^2) (at least 0.3 px: a source
    narrower than the beam is a point), drawn in PyBDSF's convention
    (:func:`pybdsf_gaussian`) on 7 x 7 points per pixel and scaled so that its
    pixels sum to S.
    """
    out = np.zeros(shape, dtype=np.float64)
    oversample = 7
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    fine_x = (np.arange(shape[1])[:, None] + offsets[None, :]).ravel()
    fine_y = (np.arange(shape[0])[:, None] + offsets[None, :]).ravel()
    x_axis, y_axis = np.meshgrid(fine_x, fine_y, indexing="ij")
    for peak, x, y, major, minor, theta in np.asarray(gaussians, dtype=float):
        if not np.isfinite(peak) or peak <= 0:
            continue
        total = peak * major * minor / beam_px**2
        sizes = [max(np.sqrt(max(a * a - beam_px * beam_px, 0.0)), 0.3) for a in (major, minor)]
        fine = pybdsf_gaussian([1.0, x, y, *sizes, theta], x_axis, y_axis).T  # PyBDSF arrays are (x, y)
        pixels = fine.reshape(shape[0], oversample, shape[1], oversample).sum(axis=(1, 3))
        if pixels.sum() > 0:
            out += pixels * (total / pixels.sum())
    return out


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
        expected_rows = sources.index[(sources["tile"] == number) & (sources["kind"] == "generated")].to_numpy()
        if not np.array_equal(np.sort(tile["index"]), expected_rows):
            raise InputFileError(f"{path}: tile {number} holds sources {tile['index'][:5].tolist()}..., "
                                 f"the catalogue puts {expected_rows.size} other(s) there")
        tiles.append(tile)
    missing = sorted(set(range(expected)) - set(seen_tiles))
    if missing:
        raise InputFileError(f"tiles {missing} of {expected} are missing from the inputs")
    return tiles


def _tile_gaussians(tiles: list[dict], n: int) -> list[np.ndarray] | None:
    """Per stamp (in the tiles' concatenated order) its model's Gaussians; None if a tile has none stored."""
    if n and any(t["gaussians"] is None for t in tiles):
        log.warning("tile files without the model's Gaussians (written before radiogen stored them): the "
                    "intrinsic sky holds those sources at the beam's resolution; rerun the tile jobs")
        return None
    out = []
    for tile in tiles:
        for gaussians in (tile["gaussians"] if tile["gaussians"] is not None else []):
            out.append(gaussians[np.isfinite(gaussians[:, 0])])
    return out


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
    intrinsic_sky_path: str | Path | None = None,
) -> pd.DataFrame:
    """Write the sky model, the observed map and the truth catalogue; return the truth.

    ``intrinsic_sky_path``: where to write the intrinsic sky (Jy/pixel, before
    the beam), the input of a visibility simulation; None = not written.

    Every source of the catalogue must come from exactly one tile, and all
    tiles from this catalogue (its SHA-256) and one model.
    """
    sources = read_sources(sources_csv)
    header = fits.Header.fromtextfile(str(header_path))
    size = int(header["NAXIS1"])
    if "kind" not in sources.columns:
        sources["kind"] = "generated"
    tiles = _check_tiles(tile_paths, sources, file_digest(sources_csv),
                         n_tiles(size, settings.tile_px), sources_csv)
    index = np.concatenate([t["index"] for t in tiles]) if tiles else np.zeros(0, np.int64)
    stamps = np.concatenate([t["stamps"] for t in tiles]) if index.size else np.zeros((0, 1, 1), np.float32)
    n_islands = np.concatenate([t["n_islands"] for t in tiles]) if index.size else np.zeros(0, np.int64)
    model_gaussians = _tile_gaussians(tiles, index.size)
    order = np.argsort(index)
    index, stamps, n_islands = index[order], stamps[order], n_islands[order]
    model_gaussians = [model_gaussians[k] for k in order] if model_gaussians is not None else None

    scale_arcsec = abs(float(header["CDELT2"])) * 3600.0
    beam_arcsec = float(header["BMAJ"]) * 3600.0
    beam_px = beam_area_px(beam_arcsec, scale_arcsec)
    # every placed source: its catalogue row, its Jy/beam stamp (after the beam) and its Jy/pixel stamp
    # (intrinsic); the model's stamps come from the tiles, a population's Gaussians are drawn here
    entries = []
    for k, row in enumerate(sources.iloc[index].itertuples()):
        intrinsic = (deconvolved_stamp(model_gaussians[k], stamps[k].shape, beam_px=beam_arcsec / scale_arcsec)
                     if model_gaussians is not None else stamps[k] / beam_px)
        entries.append((row, stamps[k], intrinsic, int(n_islands[k])))
    for row in sources[sources["kind"] == "gaussian"].itertuples():
        shape = dict(major_arcsec=float(row.Maj), minor_arcsec=float(row.Min), pa_deg=float(row.PA),
                     dx=float(row.x) - int(row.ix), dy=float(row.y) - int(row.iy),
                     half=population.stamp_half_size_px(float(row.Maj), beam_arcsec, scale_arcsec),
                     pixel_scale_arcsec=scale_arcsec)
        total_jy = float(row.Total_flux) * 1e-3
        entries.append((row, population.convolved_stamp(total_jy, beam_arcsec=beam_arcsec, **shape),
                        population.intrinsic_stamp(total_jy, **shape), 1))
    entries.sort(key=lambda entry: int(entry[0].index))
    ix = np.array([int(e[0].ix) for e in entries], dtype=np.int64)
    iy = np.array([int(e[0].iy) for e in entries], dtype=np.int64)
    sky, placed = place_stamps((size, size), [e[1] for e in entries], ix, iy)
    intrinsic_sky, _ = place_stamps((size, size), [e[2] for e in entries], ix, iy)

    wcs = wcs_of(header)
    # the map noise, a number or an rms map (Jy/beam): read once, for the truth errors and the observation
    rms_jy = read_rms_map(settings.rms_map, (size, size)) if settings.rms_map else settings.noise_rms_ujy * 1e-6
    truth, cut_at_border = [], 0
    footprint = np.zeros((size, size), dtype=np.int32)
    strongest = np.zeros((size, size), dtype=np.float32)
    for (row, stamp, _, islands), (mrows, mcols, srows, scols) in zip(entries, placed):
        part = stamp[srows, scols].astype(np.float64)
        if islands == 0 or part.size == 0 or part.max() <= 0:
            continue
        gaussian = row.kind == "gaussian"
        local_rms = float(rms_jy[row.iy, row.ix]) if np.ndim(rms_jy) else rms_jy
        pixel_rms = rms_jy[mrows, mcols] if np.ndim(rms_jy) else rms_jy
        # the source's extent: the model above island_threshold_sigma x the map rms (what a source
        # finder's island could hold), or its brightest pixel for a source fainter than that
        extent = part >= settings.island_threshold_sigma * pixel_rms
        if not extent.any():
            extent = part == part.max()
        border = max(stamp[0].max(), stamp[-1].max(), stamp[:, 0].max(), stamp[:, -1].max())
        if border >= local_rms:
            cut_at_border += 1
        region = extent & (part > strongest[mrows, mcols])
        footprint[mrows, mcols][region] = len(truth) + 1
        strongest[mrows, mcols][region] = part[region]
        if gaussian:  # exact: the drawn position, total flux and the analytic peak after the beam
            ra, dec = float(row.RA), float(row.DEC)
            peak_mjy, total_mjy = float(row.Peak_flux), float(row.Total_flux)
        else:  # measured on the placed model
            py, px = np.nonzero(part > 0)
            weight = part[py, px]
            cy = mrows.start + float((py * weight).sum() / weight.sum())
            cx = mcols.start + float((px * weight).sum() / weight.sum())
            ra, dec = wcs.pixel_to_world_values(cx, cy)
            peak_mjy, total_mjy = float(part.max()) * 1e3, float(part.sum()) / beam_px * 1e3
        n_pixels = int(extent.sum())
        intrinsic_axes = (float(row.Maj), float(row.Min), float(row.PA)) if gaussian else (np.nan,) * 3
        truth.append({
            "Source_Name": row.Source_Name,
            "RA": float(ra) % 360.0,
            "DEC": float(dec),
            "optRA": float(row.RA),
            "optDec": float(row.DEC),
            "LAS": largest_extent_px(extent) * scale_arcsec,
            "LAS_from": "model",
            "Peak_flux": peak_mjy,
            "Total_flux": total_mjy,
            "E_Total_flux": local_rms * 1e3 * float(np.sqrt(max(1.0, n_pixels / beam_px))),
            "S_Code": "S" if islands == 1 else "M",
            "Mosaic_ID": name,
            "Requested_peak_flux": float(row.Peak_flux),
            "Peak_flux_clipped": bool(getattr(row, "Peak_flux_clipped", False)),
            "Requested_LAS": float(row.LAS) if "LAS" in sources.columns else np.nan,
            "n_islands": islands,
            "n_pixels": n_pixels,
            "x_pix": int(row.ix),
            "y_pix": int(row.iy),
            "tile": int(row.tile),
            "kind": row.kind,
            "Resolved": bool(getattr(row, "Resolved", True)),
            "Maj": intrinsic_axes[0],
            "Min": intrinsic_axes[1],
            "PA": intrinsic_axes[2],
            "Maj_convolved": float(population.convolved_fwhm(intrinsic_axes[0], beam_arcsec)),
            "Min_convolved": float(population.convolved_fwhm(intrinsic_axes[1], beam_arcsec)),
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
    if intrinsic_sky_path is not None:
        intrinsic_header = header.copy()
        intrinsic_header["BUNIT"] = ("JY/PIXEL", "intrinsic sky: flux per pixel, before the beam")
        intrinsic_header["INTRINS"] = (model_gaussians is not None or not index.size,
                                       "T: all before the beam")
        with atomic_path(intrinsic_sky_path) as tmp:
            fits.PrimaryHDU(data=intrinsic_sky, header=intrinsic_header).writeto(tmp, overwrite=True)
    out_header["NOISE"] = (settings.noise_rms_ujy * 1e-6 if not settings.rms_map else -1.0,
                           "image-plane noise rms [Jy/beam]; -1 = rms map")
    with atomic_path(map_path) as tmp:
        fits.PrimaryHDU(data=observed, header=out_header).writeto(tmp, overwrite=True)
    with atomic_path(truth_path) as tmp:
        truth.to_csv(tmp, index=False, float_format="%.10g")
    log.info("map %s: %dx%d px, %d of %d source(s) placed (%d Gaussian, %d generated from %d tile(s)); %d "
             "generated without emission left out", name, size, size, len(truth), len(sources),
             int((truth["kind"] == "gaussian").sum()), int((truth["kind"] == "generated").sum()), len(tiles),
             int((n_islands == 0).sum()))
    return truth
