"""Cut fixed-size images around catalogue sources from LoTSS mosaics.

Three workflow steps, each writing one file atomically:

1. :func:`radiogen.lotss.sources.assign_sources` -- check the catalogue, pick
   each source's cutout centre (optical host, else radio position) and the
   mosaic it is cut from (WCS footprint, most central mosaic wins); sources on
   no mosaic are counted and named in the log.
2. :func:`cut_mosaic` -- one job per mosaic: stream the mosaic once in row
   blocks and fill an ``size x size`` px cutout per source (the
   :class:`astropy.nddata.Cutout2D` geometry, ``mode="partial"``: pixels off
   the mosaic are NaN), writing a per-mosaic HDF5 shard.
3. :func:`aggregate_shards` -- concatenate the shards into one HDF5 file.

Cutout HDF5 layout (shards and the aggregate), N cutouts:

``/images`` float32 (N, size, size), raw Jy/beam, NaN where blanked or off the
mosaic; ``/source_name`` utf-8; ``/centre_ra``, ``/centre_dec`` float64 degrees
(the centre used); ``/centre_from`` utf-8 ``"optical"``/``"radio"``;
``/mosaic_id`` utf-8; ``/pixel_x``, ``/pixel_y`` float64 (centre in 0-based
mosaic pixels); ``/flag_nan`` bool (any NaN pixel); ``/flag_partial`` bool
(cutout extends beyond the mosaic array); ``/nan_fraction`` float32;
``/catalogue`` table group (:func:`radiogen.io.write_table_hdf5`), one row per
cutout in the same order.  Attributes: ``pixel_scale_arcsec``,
``beam_arcsec`` (BMAJ), ``frequency_hz``, ``cutout_size``, ``n_catalogue``,
``n_off_mosaic``, ``n_cutouts``, ``n_flag_nan``, ``n_flag_partial``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import pandas as pd
from astropy.nddata.utils import NoOverlapError, overlap_slices

from radiogen.config import section_defaults
from radiogen.errors import InputFileError
from radiogen.io import atomic_path, open_hdf5, read_table_hdf5, require_datasets, write_table_hdf5
from radiogen.lotss.mosaic import Mosaic, open_mosaic
from radiogen.progress import Progress

__all__ = [
    "CUTOUT_SIZE",
    "extract_cutouts",
    "cut_mosaic",
    "aggregate_shards",
    "read_cutouts",
]

log = logging.getLogger(__name__)

#: Cutout side in pixels (80 px = 120" at LoTSS' 1.5"/px; paper Sect. 3.1).
CUTOUT_SIZE = section_defaults("lotss")["cutout_size"]

_STR = h5py.string_dtype("utf-8")
_PER_CUTOUT = (
    "images", "source_name", "centre_ra", "centre_dec", "centre_from", "mosaic_id",
    "pixel_x", "pixel_y", "flag_nan", "flag_partial", "nan_fraction",
)


def extract_cutouts(
    mosaic: Mosaic,
    x: np.ndarray,
    y: np.ndarray,
    *,
    size: int = CUTOUT_SIZE,
    block_rows: int = 256,
    progress_every_s: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Cutouts centred on 0-based pixel positions, reading the mosaic once.

    Geometry is that of ``Cutout2D(data, (x, y), size, mode="partial",
    fill_value=nan)``: for an even ``size`` the centre pixel is
    ``round-up(position)`` at index ``size // 2``.

    Returns
    -------
    images : ndarray, float32 (N, size, size)
        Jy/beam, NaN off the mosaic and where the mosaic is blanked.
    partial : ndarray of bool (N,)
        Cutout reaches beyond the mosaic array.
    n_finite : int
        Finite pixels in the whole mosaic (0 means the mosaic is all NaN).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = x.size
    ny, nx = mosaic.shape
    images = np.full((n, size, size), np.nan, dtype=np.float32)
    partial = np.zeros(n, dtype=bool)
    large, small = [], []
    by_block: dict[int, list[int]] = {}
    for i in range(n):
        try:
            sl_large, sl_small = overlap_slices((ny, nx), (size, size), (y[i], x[i]), mode="partial")
        except (NoOverlapError, ValueError):
            # No pixel in common (or a NaN position): an all-NaN cutout, flagged partial.
            sl_large = sl_small = None
            partial[i] = True
        else:
            partial[i] = (sl_small[0].stop - sl_small[0].start < size
                          or sl_small[1].stop - sl_small[1].start < size)
            for b in range(sl_large[0].start // block_rows, (sl_large[0].stop - 1) // block_rows + 1):
                by_block.setdefault(b, []).append(i)
        large.append(sl_large)
        small.append(sl_small)

    n_finite = 0
    started = time.monotonic()
    bar = Progress(ny, f"{mosaic.mosaic_id} mosaic rows", logger=log, every_s=progress_every_s)
    for first, block in mosaic.iter_blocks(block_rows=block_rows):
        n_finite += int(np.count_nonzero(np.isfinite(block)))
        stop = first + block.shape[0]
        for i in by_block.get(first // block_rows, ()):
            r0 = max(large[i][0].start, first)
            r1 = min(large[i][0].stop, stop)
            s0 = small[i][0].start + (r0 - large[i][0].start)
            images[i, s0:s0 + (r1 - r0), small[i][1]] = block[r0 - first:r1 - first, large[i][1]]
        bar.update(block.shape[0])
    bar.close()
    elapsed = max(time.monotonic() - started, 1e-9)
    log.info("%s: %d cutouts from %d x %d px in %.1f s (%.1f cutouts/s, %.1f Mpx/s)",
             mosaic.mosaic_id, n, nx, ny, elapsed, n / elapsed, nx * ny / elapsed / 1e6)
    return images, partial, n_finite


def _header_or_config(value: float | None, fallback: float | None, *, path, absent: str, invalid: str,
                      missing: str, key: str, unit: str) -> tuple[float, str]:
    """A header value (checked positive), else the config fallback (logged), else an error naming the file.

    ``absent`` completes "header ..." when the card is missing, ``invalid`` and
    ``missing`` are the error texts.  Returns the value and where it came from,
    ``"header"`` or ``"config"``.
    """
    if value is not None:
        if not (np.isfinite(value) and value > 0):
            raise InputFileError(f"{path}: {invalid}")
        return float(value), "header"
    if fallback is None:
        raise InputFileError(f"{path}: {missing}")
    log.warning("%s: header %s; using %s = %g %s", path, absent, key, fallback, unit)
    return float(fallback), "config"


def survey_beam(mosaic: Mosaic, *, fallback_arcsec: float | None = None) -> tuple[float, str]:
    """Restoring-beam FWHM (arcsec) and its source: header ``BMAJ``, else ``fallback_arcsec``.

    Raises
    ------
    InputFileError
        Neither is available, or ``BMAJ`` is not a positive number; the
        message names the mosaic file and the config key to set.
    """
    beam = mosaic.beam_arcsec
    return _header_or_config(
        beam, fallback_arcsec, path=mosaic.path, absent="has no BMAJ", key="lotss.beam_arcsec", unit="arcsec",
        invalid=f"header BMAJ = {(beam or 0) / 3600:g} deg is not a beam size",
        missing="header has no BMAJ (restoring beam); PyBDSF and the FITS export need it. "
                "Set lotss.beam_arcsec (LoTSS-DR2: 6.0) to use a fixed beam",
    )


def survey_frequency(mosaic: Mosaic, *, fallback_hz: float | None = None) -> tuple[float, str]:
    """Observing frequency (Hz) and its source: header, else ``fallback_hz``, else an error."""
    return _header_or_config(
        mosaic.frequency_hz, fallback_hz, path=mosaic.path, absent="gives no frequency",
        key="lotss.frequency_hz", unit="Hz",
        invalid=f"header frequency {mosaic.frequency_hz!r} Hz is not a frequency",
        missing="header gives no frequency (RESTFRQ, FREQ or a FREQ axis). "
                "Set lotss.frequency_hz (LoTSS-DR2: 1.44e+8) to use a fixed one",
    )


def cut_mosaic(
    mosaic_path: str | os.PathLike,
    sources_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    mosaic_id: str,
    size: int = CUTOUT_SIZE,
    block_rows: int = 256,
    beam_arcsec: float | None = None,
    frequency_hz: float | None = None,
) -> dict:
    """Write the cutout shard of one mosaic (layout in the module docstring).

    The restoring beam (FWHM, arcsec) comes from the header's ``BMAJ``; a
    mosaic without it takes ``beam_arcsec`` (config ``lotss.beam_arcsec``), and
    with neither the job stops here, before selection and training, rather
    than at PyBDSF.  The frequency likewise: ``RESTFRQ``/``FREQ``/a FREQ axis,
    else ``frequency_hz`` (``lotss.frequency_hz``), else an error.  Both are
    recorded with their source (``beam_source``, ``frequency_source``).

    Raises
    ------
    InputFileError
        Bad mosaic file (see :func:`~radiogen.lotss.mosaic.open_mosaic`) or a
        mosaic whose pixels are all NaN.
    """
    mosaic = open_mosaic(mosaic_path, mosaic_id=mosaic_id)
    beam, beam_source = survey_beam(mosaic, fallback_arcsec=beam_arcsec)
    frequency, frequency_source = survey_frequency(mosaic, fallback_hz=frequency_hz)
    with open_hdf5(sources_path) as h5:
        require_datasets(h5, ["catalogue"])
        table = read_table_hdf5(h5["catalogue"])
        n_catalogue = int(h5.attrs.get("n_catalogue", len(table)))
        n_off = int(h5.attrs.get("n_off_mosaic", 0))
    rows = table.loc[table["cutout_mosaic"].astype(str) == mosaic_id].reset_index(drop=True)
    ra = rows["centre_ra"].to_numpy(dtype=float)
    dec = rows["centre_dec"].to_numpy(dtype=float)
    if len(rows):
        px, py = mosaic.wcs.world_to_pixel_values(ra, dec)
    else:
        px = py = np.zeros(0)
    px, py = np.asarray(px, dtype=float), np.asarray(py, dtype=float)
    images, partial, n_finite = extract_cutouts(mosaic, px, py, size=size, block_rows=block_rows)
    if n_finite == 0:
        raise InputFileError(f"{mosaic_path}: every pixel of mosaic {mosaic_id} is NaN (blank mosaic)")
    ny, nx = mosaic.shape
    log.info("%s: %.1f%% of the mosaic is blanked (NaN)", mosaic_id, 100 * (1 - n_finite / (nx * ny)))
    nan_fraction = np.isnan(images).mean(axis=(1, 2)).astype(np.float32) if len(rows) else np.zeros(0, np.float32)
    data = {
        "images": images,
        "source_name": rows["Source_Name"].astype(str).to_numpy(dtype=object),
        "centre_ra": ra,
        "centre_dec": dec,
        "centre_from": rows["centre_from"].astype(str).to_numpy(dtype=object),
        "mosaic_id": np.array([mosaic_id] * len(rows), dtype=object),
        "pixel_x": px,
        "pixel_y": py,
        "flag_nan": nan_fraction > 0,
        "flag_partial": partial,
        "nan_fraction": nan_fraction,
    }
    attrs = {
        "pixel_scale_arcsec": mosaic.pixel_scale_arcsec,
        "beam_arcsec": beam,
        "beam_source": beam_source,
        "frequency_hz": frequency,
        "frequency_source": frequency_source,
        "cutout_size": size,
        "n_catalogue": n_catalogue,
        "n_off_mosaic": n_off,
        "mosaic_path": str(mosaic_path),
        "mosaic_bunit": mosaic.unit,  # pixels are converted from it to Jy/beam
        "mosaic_finite_fraction": n_finite / (nx * ny),
    }
    _write_cutout_file(out_path, data, rows, attrs)
    summary = {"mosaic_id": mosaic_id, "n_cutouts": len(rows), "n_flag_nan": int(data["flag_nan"].sum()),
               "n_flag_partial": int(partial.sum())}
    log.info("%s: wrote %s (%d cutouts, %d with NaN, %d partial)", mosaic_id, out_path,
             summary["n_cutouts"], summary["n_flag_nan"], summary["n_flag_partial"])
    return summary


def _write_cutout_file(out_path, data: dict, catalogue: pd.DataFrame, attrs: dict) -> None:
    n, size = data["images"].shape[0], data["images"].shape[-1]
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        _create_datasets(h5, n, size)
        for name in _PER_CUTOUT:
            if n:
                h5[name][...] = data[name]
        write_table_hdf5(h5, "catalogue", catalogue)
        _set_attrs(h5, attrs, data["flag_nan"], data["flag_partial"])


def _create_datasets(h5: h5py.File, n: int, size: int) -> None:
    h5.create_dataset("images", shape=(n, size, size), dtype=np.float32,
                      chunks=(max(1, min(n, 64)), size, size) if n else None)
    for name in ("source_name", "centre_from", "mosaic_id"):
        h5.create_dataset(name, shape=(n,), dtype=_STR)
    for name in ("centre_ra", "centre_dec", "pixel_x", "pixel_y"):
        h5.create_dataset(name, shape=(n,), dtype=np.float64)
    for name in ("flag_nan", "flag_partial"):
        h5.create_dataset(name, shape=(n,), dtype=bool)
    h5.create_dataset("nan_fraction", shape=(n,), dtype=np.float32)
    h5["images"].attrs["unit"] = "Jy/beam"
    h5["centre_ra"].attrs["unit"] = "deg"
    h5["centre_dec"].attrs["unit"] = "deg"


def _set_attrs(h5: h5py.File, attrs: dict, flag_nan, flag_partial) -> None:
    for key, value in attrs.items():
        h5.attrs[key] = value
    h5.attrs["n_cutouts"] = int(h5["images"].shape[0])
    h5.attrs["n_flag_nan"] = int(np.count_nonzero(flag_nan))
    h5.attrs["n_flag_partial"] = int(np.count_nonzero(flag_partial))


def aggregate_shards(
    shard_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    sources_path: str | os.PathLike | None = None,
) -> dict:
    """Concatenate per-mosaic shards (in the given order) into one cutout file.

    Images are copied shard by shard, so memory stays at one shard.  The
    ``n_catalogue``/``n_off_mosaic`` attributes come from ``sources_path``
    (the :func:`assign_sources` output) when given, else from the shards.

    Raises
    ------
    InputFileError
        A shard is missing, unreadable, lacks datasets, or its pixel scale,
        beam or cutout size differs from the first shard's.
    """
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise InputFileError(f"{out_path}: no cutout shards to aggregate")
    counts, first_attrs, origins = [], None, {"beam_source": set(), "frequency_source": set()}
    for path in shard_paths:
        with open_hdf5(path) as h5:
            require_datasets(h5, list(_PER_CUTOUT) + ["catalogue"])
            attrs = dict(h5.attrs)
            if first_attrs is None:
                first_attrs = attrs
            for key in origins:
                if key in attrs:
                    origins[key].add(str(attrs[key]))
            for key in ("pixel_scale_arcsec", "beam_arcsec", "cutout_size"):
                a, b = float(attrs[key]), float(first_attrs[key])
                if not (np.isclose(a, b, rtol=1e-3) or (np.isnan(a) and np.isnan(b))):
                    raise InputFileError(f"{path}: {key}={a} differs from {b} in {shard_paths[0]}")
            counts.append(int(h5["images"].shape[0]))
    n, size = sum(counts), int(first_attrs["cutout_size"])
    if sources_path is not None:
        with open_hdf5(sources_path) as h5:
            n_catalogue, n_off = int(h5.attrs["n_catalogue"]), int(h5.attrs["n_off_mosaic"])
            sample = str(h5.attrs.get("sample", "all"))
    else:
        n_catalogue, n_off = int(first_attrs["n_catalogue"]), int(first_attrs["n_off_mosaic"])
        sample = "all"
    started = time.monotonic()
    tables = []
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        _create_datasets(out, n, size)
        offset = 0
        for path, count in zip(shard_paths, counts):
            with open_hdf5(path) as h5:
                for name in _PER_CUTOUT:
                    if count:
                        out[name][offset:offset + count] = h5[name][()]
                tables.append(read_table_hdf5(h5["catalogue"]))
            offset += count
            log.info("aggregated %s (%d cutouts, %d/%d, %.0f cutouts/s)", path.name, count, offset, n,
                     offset / max(time.monotonic() - started, 1e-9))
        catalogue = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        write_table_hdf5(out, "catalogue", catalogue)
        attrs = {k: first_attrs[k] for k in ("pixel_scale_arcsec", "beam_arcsec", "frequency_hz", "cutout_size")}
        attrs.update(n_catalogue=n_catalogue, n_off_mosaic=n_off, n_mosaics=len(shard_paths), sample=sample)
        # where beam and frequency came from: "header", "config", or both over the mosaics
        attrs.update({key: ",".join(sorted(values)) for key, values in origins.items() if values})
        _set_attrs(out, attrs, out["flag_nan"][()], out["flag_partial"][()])
        summary = {"n_cutouts": n, "n_catalogue": n_catalogue, "n_off_mosaic": n_off,
                   "n_flag_nan": int(out.attrs["n_flag_nan"]),
                   "n_flag_partial": int(out.attrs["n_flag_partial"])}
    log.info("wrote %s: %s", out_path, summary)
    return summary


def read_cutouts(path: str | os.PathLike) -> dict:
    """Read a cutout file (shard or aggregate) into memory: arrays, ``catalogue`` and ``attrs``."""
    with open_hdf5(path) as h5:
        require_datasets(h5, list(_PER_CUTOUT) + ["catalogue"])
        out = {name: h5[name][()] for name in _PER_CUTOUT}
        for name in ("source_name", "centre_from", "mosaic_id"):
            out[name] = np.array([v.decode() if isinstance(v, bytes) else v for v in out[name]], dtype=object)
        out["catalogue"] = read_table_hdf5(h5["catalogue"])
        out["attrs"] = dict(h5.attrs)
    return out
