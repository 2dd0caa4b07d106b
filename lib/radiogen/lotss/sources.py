"""The cutout sources: which catalogue rows are cut out, from which mosaic, and their neighbours.

First step of the LoTSS data path (:mod:`radiogen.lotss.cutouts` does the
cutting): check the catalogue, choose its source sample (the paper's resolved
sources, all, or a list), pick each source's cutout centre (optical host, else
radio position) and the mosaic it is cut from, and count the brighter sources
of the whole catalogue inside each cutout.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping

import h5py
import numpy as np

from radiogen.errors import CatalogueError, InputFileError
from radiogen.io import atomic_path, write_table_hdf5
from radiogen.lotss.catalogue import (
    _some,
    assign_to_mosaics,
    brighter_neighbour_counts,
    cutout_centres,
    normalise_catalogue,
    read_catalogue,
    read_source_list,
    select_sample,
)
from radiogen.lotss.cutouts import CUTOUT_SIZE
from radiogen.lotss.mosaic import open_mosaic

__all__ = ["assign_sources"]

log = logging.getLogger(__name__)

_STR = h5py.string_dtype("utf-8")


def assign_sources(
    catalogue_path: str | os.PathLike,
    mosaic_paths: Mapping[str, str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    duplicates: str = "error",
    sample: str = "all",
    source_list: str | os.PathLike | None = None,
    cutout_size: int = CUTOUT_SIZE,
) -> dict:
    """Check the catalogue, choose its source sample and assign every source to one mosaic.

    Parameters
    ----------
    catalogue_path : path-like
        CSV or FITS catalogue (see :mod:`radiogen.lotss.catalogue`).
    mosaic_paths : mapping
        ``mosaic_id -> FITS path``; only headers are read.
    out_path : path-like
        HDF5 file: ``/catalogue`` (rows on a mosaic, with added columns
        ``centre_ra``, ``centre_dec``, ``centre_from``, ``cutout_mosaic``),
        ``/off_mosaic_names``; attrs ``n_catalogue``, ``n_off_mosaic``,
        ``n_per_mosaic`` (JSON).
    duplicates : {"error", "keep_first"}
        Passed to :func:`~radiogen.lotss.catalogue.normalise_catalogue`.
    sample : {"all", "resolved", "list"}
        Which sources to cut out (:func:`~radiogen.lotss.catalogue.select_sample`;
        the paper: ``resolved``); ``list`` reads the names in ``source_list``.
    cutout_size : int
        Cutout side, pixels of the source's mosaic: with it, the column
        ``n_brighter_neighbours`` counts the sources of the *whole* catalogue
        (not only the sample) that are brighter and inside the cutout
        (:func:`~radiogen.lotss.catalogue.brighter_neighbour_counts`).

    Returns
    -------
    dict
        The counts written as attributes.
    """
    table = normalise_catalogue(read_catalogue(catalogue_path), source=catalogue_path,
                                duplicates=duplicates)
    full = table
    n_rows = len(table)
    names = read_source_list(source_list) if sample == "list" and source_list is not None else None
    table = select_sample(table, sample=sample, names=names, source=catalogue_path)
    mosaics = {mid: open_mosaic(p, mosaic_id=mid) for mid, p in mosaic_paths.items()}
    if not mosaics:
        raise InputFileError(f"{catalogue_path}: no mosaics given to place the sources on")
    ra, dec, centre_from = cutout_centres(table)
    where = assign_to_mosaics(ra, dec, {m.mosaic_id: (m.wcs, m.shape) for m in mosaics.values()})
    table["centre_ra"] = ra
    table["centre_dec"] = dec
    table["centre_from"] = centre_from
    table["cutout_mosaic"] = where
    off = where == ""
    off_names = table.loc[off, "Source_Name"].astype(str).tolist()
    if off_names:
        log.warning("%d of %d catalogue sources lie on no mosaic and get no cutout: %s",
                    len(off_names), len(table), _some(off_names, 20))
    if off.all():
        raise CatalogueError(
            f"{catalogue_path}: none of its {len(table)} sources lies on any of the mosaics "
            f"{', '.join(sorted(mosaics))} (positions in degrees? the right mosaics?)"
        )
    on = table.loc[~off].reset_index(drop=True)
    # pixel side of each source's mosaic, degrees: the cutout's half-width on the sky
    scale = {mid: float(np.sqrt(np.abs(np.linalg.det(m.wcs.pixel_scale_matrix)))) for mid, m in mosaics.items()}
    half = on["cutout_mosaic"].map(scale).to_numpy(float) * cutout_size / 2.0
    on["n_brighter_neighbours"] = brighter_neighbour_counts(
        on["centre_ra"], on["centre_dec"], on["Peak_flux"], on["Source_Name"], full, half_width_deg=half)
    log.info("%d of %d sources have a brighter catalogue source inside their %d px cutout (whole catalogue, "
             "%d rows)", int((on["n_brighter_neighbours"] > 0).sum()), len(on), cutout_size, len(full))
    counts = {mid: int((on["cutout_mosaic"] == mid).sum()) for mid in mosaics}
    for mid, n in counts.items():
        log.info("mosaic %s: %d sources", mid, n)
    summary = {"n_catalogue": int(len(table)), "n_off_mosaic": int(off.sum()),
               "n_per_mosaic": counts, "n_catalogue_rows": int(n_rows), "sample": sample}
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as h5:
        write_table_hdf5(h5, "catalogue", on)
        h5.create_dataset("off_mosaic_names", data=np.array(off_names, dtype=object), dtype=_STR)
        h5.attrs["n_catalogue"] = summary["n_catalogue"]
        h5.attrs["n_off_mosaic"] = summary["n_off_mosaic"]
        h5.attrs["n_per_mosaic"] = json.dumps(counts)
        h5.attrs["n_catalogue_rows"] = summary["n_catalogue_rows"]  # before the sample was chosen
        h5.attrs["sample"] = sample
        h5.attrs["catalogue_path"] = str(catalogue_path)
    return summary
