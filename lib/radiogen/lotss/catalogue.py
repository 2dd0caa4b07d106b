"""Read and check LoTSS source catalogues and place their sources on mosaics.

Accepted: the LoTSS-DR2 optical cross-match catalogue (Hardcastle et al. 2023;
``Source_Name, RA, DEC, optRA, optDec, LAS, LAS_from, Peak_flux, Total_flux``)
and DR1-style PyBDSF source lists (Shimwell et al. 2019), which lack optical
positions and ``LAS``: there ``LAS`` is taken from the deconvolved major axis
``DC_Maj`` and the cutout centre falls back to the radio position.  Files are
CSV or a FITS binary table.  Units as in LoTSS: positions in degrees, fluxes in
mJy (``Peak_flux`` in mJy/beam), sizes in arcsec.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import astropy.units as u

from radiogen.errors import CatalogueError, InputFileError

__all__ = [
    "REQUIRED_COLUMNS",
    "read_catalogue",
    "normalise_catalogue",
    "cutout_centres",
    "assign_to_mosaics",
    "brighter_neighbour_counts",
]

log = logging.getLogger(__name__)

#: Columns every catalogue must have (after the DR1 -> DR2 mapping).
REQUIRED_COLUMNS = ("Source_Name", "RA", "DEC", "Peak_flux", "Total_flux")


def read_catalogue(path: str | os.PathLike) -> pd.DataFrame:
    """Read a catalogue (``.csv`` or a FITS table) into a DataFrame.

    Byte strings are decoded and stripped; multidimensional FITS columns
    are dropped (logged).  Raises :class:`InputFileError` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: catalogue file does not exist")
    suffix = "".join(path.suffixes).lower()
    if suffix.endswith(".csv") or suffix.endswith(".csv.gz"):
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise InputFileError(f"{path}: not a readable CSV catalogue ({err})") from err
    else:
        from astropy.table import Table

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)
                t = Table.read(path)
        except Exception as err:  # astropy raises many reader-specific errors
            raise InputFileError(f"{path}: not a readable FITS/VOTable catalogue ({err})") from err
        multidim = [c for c in t.colnames if len(t[c].shape) > 1]
        if multidim:
            log.info("%s: dropping multidimensional columns %s", path, ", ".join(multidim))
            t.remove_columns(multidim)
        table = t.to_pandas()
        for column in table.columns:
            # Masked integer/bool FITS columns become pandas nullable types; store them as float with NaN.
            if isinstance(table[column].dtype, pd.api.extensions.ExtensionDtype) and (
                    pd.api.types.is_integer_dtype(table[column].dtype)
                    or pd.api.types.is_bool_dtype(table[column].dtype)):
                table[column] = table[column].astype("float64")
    for column in table.columns:
        if table[column].dtype == object:
            table[column] = [v.decode().strip() if isinstance(v, bytes) else v for v in table[column]]
    if "Source_Name" in table.columns:
        table["Source_Name"] = table["Source_Name"].astype(str).str.strip()
    return table


def normalise_catalogue(
    table: pd.DataFrame,
    *,
    source: str | os.PathLike = "catalogue",
    duplicates: str = "error",
) -> pd.DataFrame:
    """Map DR1 columns to DR2 names and check the table.

    Parameters
    ----------
    table : DataFrame
        As read by :func:`read_catalogue`.
    source : str or path
        Name used in messages (the catalogue file).
    duplicates : {"error", "keep_first"}
        What to do with repeated ``Source_Name``: raise, or keep the first
        row of each name (the dropped names are logged).

    Returns
    -------
    DataFrame
        A copy with ``LAS``, ``LAS_from``, ``optRA``, ``optDec`` always present
        (NaN / empty where unknown).

    Raises
    ------
    CatalogueError
        Missing required columns, non-numeric or non-finite positions,
        duplicate names -- naming the file and the sources.
    """
    table = table.copy()
    if "LAS" not in table.columns and "DC_Maj" in table.columns:
        table["LAS"] = table["DC_Maj"]
        table["LAS_from"] = "DC_Maj"
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CatalogueError(
            f"{source}: missing required column(s) {', '.join(missing)} "
            f"(have: {', '.join(map(str, table.columns[:30]))}{' ...' if len(table.columns) > 30 else ''})"
        )
    if "LAS" not in table.columns:
        table["LAS"] = np.nan
    if "LAS_from" not in table.columns:
        table["LAS_from"] = ""
    for column in ("optRA", "optDec"):
        if column not in table.columns:
            table[column] = np.nan
    for column in ("RA", "DEC", "optRA", "optDec", "Peak_flux", "Total_flux", "LAS"):
        converted = pd.to_numeric(table[column], errors="coerce")
        bad = converted.isna() & table[column].notna()
        if bad.any():
            names = table.loc[bad, "Source_Name"].astype(str).tolist()
            raise CatalogueError(f"{source}: non-numeric {column} for source(s) {_some(names)}")
        table[column] = converted.astype(float)
    if len(table) == 0:
        raise CatalogueError(f"{source}: the catalogue has no rows (no sources to cut out)")
    bad_pos = ~(np.isfinite(table["RA"]) & np.isfinite(table["DEC"]))
    if bad_pos.any():
        raise CatalogueError(
            f"{source}: missing RA/DEC for source(s) {_some(table.loc[bad_pos, 'Source_Name'].tolist())}"
        )
    _check_sky_ranges(table, source)
    bad_name = table["Source_Name"].isna() | table["Source_Name"].astype(str).str.strip().isin(["", "nan", "None"])
    if bad_name.any():
        raise CatalogueError(f"{source}: {int(bad_name.sum())} row(s) without Source_Name "
                             f"(row numbers {_some(np.flatnonzero(bad_name).tolist())})")
    dup = table["Source_Name"].duplicated(keep=False)
    if dup.any():
        names = sorted(set(table.loc[dup, "Source_Name"]))
        if duplicates == "keep_first":
            log.warning("%s: %d duplicated Source_Name(s), keeping the first row of each: %s",
                        source, len(names), _some(names))
            table = table.loc[~table["Source_Name"].duplicated(keep="first")]
        elif duplicates == "error":
            raise CatalogueError(
                f"{source}: {len(names)} duplicated Source_Name(s): {_some(names)} "
                "(set lotss.duplicate_names: keep_first to keep the first row of each)"
            )
        else:
            raise ValueError(f"duplicates must be 'error' or 'keep_first', not {duplicates!r}")
    return table.reset_index(drop=True)


def _check_sky_ranges(table: pd.DataFrame, source) -> None:
    """Positions must be degrees: RA in [0, 360], Dec in [-90, 90]; RA like hours warns."""
    for ra_col, dec_col in (("RA", "DEC"), ("optRA", "optDec")):
        ra, dec = table[ra_col].to_numpy(float), table[dec_col].to_numpy(float)
        bad_dec = np.isfinite(dec) & (np.abs(dec) > 90)
        if bad_dec.any():
            raise CatalogueError(
                f"{source}: {dec_col} outside [-90, 90] deg for {int(bad_dec.sum())} source(s) "
                f"{_some(table.loc[bad_dec, 'Source_Name'].tolist())} (e.g. {dec[bad_dec][0]:g})"
            )
        bad_ra = np.isfinite(ra) & ((ra < 0) | (ra > 360))
        if bad_ra.any():
            raise CatalogueError(
                f"{source}: {ra_col} outside [0, 360] deg for {int(bad_ra.sum())} source(s) "
                f"{_some(table.loc[bad_ra, 'Source_Name'].tolist())} (e.g. {ra[bad_ra][0]:g}); "
                "positions must be in degrees"
            )
    # RA in hours squeezes a field 15x in RA: all values below 24 and an RA extent
    # (on the sky) much narrower than the Dec extent is worth a word.
    ra, dec = table["RA"].to_numpy(float), table["DEC"].to_numpy(float)
    ra_extent = np.ptp(ra) * np.cos(np.deg2rad(np.median(dec)))
    if len(ra) >= 10 and ra.max() <= 24 and ra_extent < np.ptp(dec) / 5:
        log.warning(
            "%s: all %d RA values lie in [%.3g, %.3g] in a strip %.2g deg wide, %.2g deg tall: "
            "if RA is in hours, convert it to degrees (x 15); radiogen reads RA in degrees",
            source, len(ra), ra.min(), ra.max(), ra_extent, np.ptp(dec),
        )


#: Source samples: the paper's resolved sources, every catalogue row, or a list of names.
SOURCE_SAMPLES = ("resolved", "all", "list")


def resolved_mask(table: pd.DataFrame, *, source: str | os.PathLike = "catalogue") -> np.ndarray:
    """LoTSS-DR2 resolved sources (Shimwell et al. 2022, Sect. 3.1).

    The catalogue's own boolean ``Resolved`` column is used when present (the
    DR2 value-added catalogue of Hardcastle et al. 2023 has one).  Otherwise a
    source is resolved when R = ln(S_I / S_P) exceeds the envelope fitted to the
    99.9th percentile of compact sources,
    R_99.9 = 0.42 + 1.08 / (1 + (SNR / 96.57)^2.49), SNR = S_I / sigma(S_I),
    or when PyBDSF built it from several Gaussians with its own island
    (``S_Code == "Z"``), as the DR2 catalogue's ``Resolved`` column does.

    Raises
    ------
    CatalogueError
        Neither a ``Resolved`` column nor ``Total_flux``, ``E_Total_flux`` and
        ``Peak_flux`` to apply the criterion.
    """
    if "Resolved" in table.columns:
        values = table["Resolved"]
        if values.dtype == bool:
            return values.to_numpy(bool)
        text = values.astype(str).str.strip().str.lower()
        known = text.isin(["true", "false", "1", "0", "t", "f"])
        if not known.all():
            bad = table.loc[~known, "Source_Name"].astype(str).tolist()
            raise CatalogueError(f"{source}: Resolved is not a boolean for source(s) {_some(bad)}")
        return text.isin(["true", "1", "t"]).to_numpy()
    missing = [c for c in ("Total_flux", "E_Total_flux", "Peak_flux") if c not in table.columns]
    if missing:
        raise CatalogueError(
            f"{source}: cannot select resolved sources: no Resolved column, and {', '.join(missing)} "
            "missing for the LoTSS-DR2 criterion (set lotss.sources: all to keep every source)"
        )
    total = pd.to_numeric(table["Total_flux"], errors="coerce").to_numpy(float)
    error = pd.to_numeric(table["E_Total_flux"], errors="coerce").to_numpy(float)
    peak = pd.to_numeric(table["Peak_flux"], errors="coerce").to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = total / error
        ratio = np.log(total / peak)  # R = ln(S_I / S_P)
    envelope = 0.42 + 1.08 / (1.0 + (snr / 96.57) ** 2.49)  # Shimwell et al. 2022, Sect. 3.1
    resolved = np.isfinite(ratio) & np.isfinite(envelope) & (ratio > envelope)
    if "S_Code" in table.columns:
        resolved |= table["S_Code"].astype(str).str.strip().eq("Z").to_numpy()
    return resolved


def select_sample(table: pd.DataFrame, *, sample: str = "all", names: Sequence[str] | None = None,
                  source: str | os.PathLike = "catalogue") -> pd.DataFrame:
    """The catalogue rows to cut out: ``resolved`` (:func:`resolved_mask`), ``all`` or ``list``.

    ``list`` keeps the rows whose ``Source_Name`` is in ``names``; a name that
    is not in the catalogue is an error (a typo would silently shrink the set).
    """
    if sample == "all":
        return table
    if sample == "resolved":
        keep = resolved_mask(table, source=source)
        log.info("%s: %d of %d sources are resolved (LoTSS-DR2 criterion)", source, int(keep.sum()), len(table))
    elif sample == "list":
        if not names:
            raise CatalogueError(f"{source}: lotss.sources is list but the source list is empty")
        wanted = pd.Index([str(n).strip() for n in names])
        unknown = wanted.difference(pd.Index(table["Source_Name"].astype(str)))
        if len(unknown):
            raise CatalogueError(f"{source}: {len(unknown)} listed source(s) not in the catalogue: "
                                 f"{_some(sorted(unknown))}")
        keep = table["Source_Name"].astype(str).isin(wanted).to_numpy()
    else:
        raise CatalogueError(f"lotss.sources must be one of {SOURCE_SAMPLES}, got {sample!r}")
    if not keep.any():
        raise CatalogueError(f"{source}: the {sample} sample is empty (no source to cut out)")
    return table.loc[keep].reset_index(drop=True)


def read_source_list(path: str | os.PathLike) -> list[str]:
    """Source names, one per line (``#`` starts a comment), or a CSV with a Source_Name column."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: source list does not exist")
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0].strip() if text.strip() else ""
    if first.split(",")[0].strip() == "Source_Name":
        return pd.read_csv(path)["Source_Name"].astype(str).str.strip().tolist()
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def cutout_centres(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cutout centre per row: the optical host where known, else the radio position.

    Returns
    -------
    ra, dec : ndarray
        Degrees.
    centre_from : ndarray of str
        ``"optical"`` or ``"radio"``.
    """
    opt_ra = table["optRA"].to_numpy(dtype=float)
    opt_dec = table["optDec"].to_numpy(dtype=float)
    optical = np.isfinite(opt_ra) & np.isfinite(opt_dec)
    ra = np.where(optical, opt_ra, table["RA"].to_numpy(dtype=float))
    dec = np.where(optical, opt_dec, table["DEC"].to_numpy(dtype=float))
    return ra, dec, np.where(optical, "optical", "radio")


def assign_to_mosaics(
    ra: np.ndarray,
    dec: np.ndarray,
    footprints: Mapping[str, tuple[object, tuple[int, int]]] | Sequence,
) -> np.ndarray:
    """Mosaic whose footprint holds each position, preferring the most central one.

    Mosaics overlap in LoTSS, so a position can lie on several; it goes to the
    mosaic where its distance to the nearest image border is largest, which
    gives a complete cutout whenever any mosaic can.

    Parameters
    ----------
    ra, dec : ndarray
        Positions in degrees.
    footprints : mapping
        ``mosaic_id -> (celestial WCS, (ny, nx))``.

    Returns
    -------
    ndarray of object
        Mosaic ID per position, ``""`` where no mosaic covers it.
    """
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    # Unit vectors: one dot product per mosaic finds nearby sources, fast even
    # for the 4.4 million DR2 sources times ~840 mosaics.
    xyz = _unit_vectors(ra, dec)
    best = np.full(ra.shape, "", dtype=object)
    best_margin = np.full(ra.shape, -np.inf)
    for mosaic_id, (wcs, (ny, nx)) in dict(footprints).items():
        c_ra, c_dec = wcs.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
        scale = np.sqrt(np.abs(np.linalg.det(wcs.pixel_scale_matrix)))
        # Only project nearby positions: SIN is double-valued beyond 90 degrees.
        radius = min(0.75 * np.hypot(nx, ny) * scale, 80.0)
        cos_sep = xyz @ _unit_vectors(np.atleast_1d(c_ra), np.atleast_1d(c_dec))[0]
        near = np.flatnonzero(cos_sep > np.cos(np.deg2rad(radius)))
        if near.size == 0:
            continue
        x, y = wcs.world_to_pixel_values(ra[near], dec[near])
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        margin = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        margin = np.where(np.isfinite(margin), margin, -np.inf)
        better = (margin > 0) & (margin > best_margin[near])
        best[near[better]] = mosaic_id
        best_margin[near[better]] = margin[better]
    return best


def brighter_neighbour_counts(
    centre_ra: np.ndarray,
    centre_dec: np.ndarray,
    peak_flux: np.ndarray,
    names: np.ndarray,
    catalogue: pd.DataFrame,
    *,
    half_width_deg: np.ndarray | float,
) -> np.ndarray:
    """Catalogue sources brighter than each cut-out source that lie inside its cutout.

    The image of a cutout, and the peak-flux context taken from its maximum,
    belong to a brighter neighbour when one lies inside it; counting against
    the whole catalogue (not only the chosen sample) also finds the unresolved
    neighbours that the resolved-source sample leaves out.

    Parameters
    ----------
    centre_ra, centre_dec : ndarray
        Cutout centres, degrees.
    peak_flux : ndarray
        Catalogue peak flux of each cut-out source (any unit, the catalogue's).
    names : ndarray
        ``Source_Name`` of each cut-out source (it does not count itself).
    catalogue : DataFrame
        The whole catalogue: ``Source_Name``, ``RA``, ``DEC`` (radio positions,
        degrees) and ``Peak_flux`` in the same unit.
    half_width_deg : float or ndarray, keyword-only
        Half the cutout side, degrees (per source or one value).

    Returns
    -------
    ndarray of int
        Per cut-out source, the number of catalogue sources with a higher
        ``Peak_flux`` whose position falls inside its square cutout (offsets
        along RA and Dec on the tangent plane at the centre).
    """
    from scipy.spatial import cKDTree

    centre_ra, centre_dec = np.asarray(centre_ra, float), np.asarray(centre_dec, float)
    peak = np.asarray(peak_flux, float)
    half = np.broadcast_to(np.asarray(half_width_deg, float), centre_ra.shape)
    cat_ra, cat_dec = catalogue["RA"].to_numpy(float), catalogue["DEC"].to_numpy(float)
    cat_peak = catalogue["Peak_flux"].to_numpy(float)
    cat_names = catalogue["Source_Name"].astype(str).to_numpy()
    counts = np.zeros(centre_ra.shape, dtype=np.int64)
    if centre_ra.size == 0 or cat_ra.size == 0:
        return counts
    tree = cKDTree(_unit_vectors(cat_ra, cat_dec))
    # the square's corners are sqrt(2) half-widths away: a chord of that angle bounds the search
    chord = 2.0 * np.sin(np.deg2rad(np.sqrt(2.0) * float(half.max())) / 2.0)
    near = tree.query_ball_point(_unit_vectors(centre_ra, centre_dec), r=chord)
    for i, idx in enumerate(near):
        if not idx:
            continue
        idx = np.asarray(idx)
        dx = ((cat_ra[idx] - centre_ra[i] + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(centre_dec[i]))
        dy = cat_dec[idx] - centre_dec[i]
        inside = (np.abs(dx) < half[i]) & (np.abs(dy) < half[i])
        counts[i] = int(np.count_nonzero(inside & (cat_peak[idx] > peak[i]) & (cat_names[idx] != str(names[i]))))
    return counts


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.deg2rad(ra_deg), np.deg2rad(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _some(items: Sequence, limit: int = 10) -> str:
    items = [str(i) for i in items]
    text = ", ".join(items[:limit])
    return text + (f" ... ({len(items)} in all)" if len(items) > limit else "")
