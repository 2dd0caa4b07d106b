"""Map grid and tiles of a simulated survey map.

The map has the layout of a LoTSS-DR2 ``mosaic-blanked.fits`` (SIN projection,
square pixels of the model's pixel scale, BMAJ/BMIN/BPA, ``BUNIT = 'JY/BEAM'``,
RESTFRQ), either built from scratch or from a real DR2 header used as template.
Tiles are squares of ``tile_px`` pixels in row-major order; a source belongs to
the tile that holds its placement pixel, so each source is placed exactly once
however far its emission reaches across tile borders.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from radiogen.errors import InputFileError
from radiogen.simulate import dr2_header
from radiogen.surveys import LOTSS

__all__ = ["map_size_px", "map_header", "n_tiles", "tile_index", "tile_names", "beam_area_px", "wcs_of", "model_geometry"]

#: Keywords of a template header that describe the map grid and are rewritten.
_GRID_KEYS = ("NAXIS1", "NAXIS2", "CRPIX1", "CRPIX2")


def map_size_px(size_deg: float, *, pixel_scale_arcsec: float = LOTSS.pixel_scale_arcsec) -> int:
    """Side of the square map in pixels: ceil(size / pixel scale)."""
    return int(math.ceil(float(size_deg) * 3600.0 / float(pixel_scale_arcsec) - 1e-9))


def n_tiles(size_px: int, tile_px: int) -> int:
    """Number of tiles, ceil(size / tile)^2."""
    per_side = int(math.ceil(size_px / tile_px))
    return per_side * per_side


def tile_names(size_px: int, tile_px: int) -> list[str]:
    """Zero-padded tile wildcards 0000, 0001, ... (row-major, bottom row first)."""
    return [f"{i:04d}" for i in range(n_tiles(size_px, tile_px))]


def tile_index(ix, iy, *, size_px: int, tile_px: int) -> np.ndarray:
    """Tile of integer pixel positions (0-based column ``ix``, row ``iy``)."""
    per_side = int(math.ceil(size_px / tile_px))
    return (np.asarray(iy) // tile_px) * per_side + np.asarray(ix) // tile_px


def beam_area_px(beam_arcsec: float, pixel_scale_arcsec: float) -> float:
    """Area of a circular Gaussian beam in pixels: pi / (4 ln 2) * (FWHM / pixel)^2."""
    return float(np.pi / (4.0 * np.log(2.0)) * (beam_arcsec / pixel_scale_arcsec) ** 2)


def _read_template(path: str | Path) -> fits.Header:
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: header template does not exist")
    try:
        if path.suffix.lower() in (".fits", ".fit", ".fz"):
            return fits.getheader(path)
        return fits.Header.fromtextfile(str(path))
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: cannot read a FITS header ({err})") from err


def _check_template_beam(header: fits.Header, template: str | Path, beam_arcsec: float) -> None:
    """Refuse a template whose beam differs from the model's (BMAJ/BMIN, rtol 1e-3), naming both."""
    for key in ("BMAJ", "BMIN"):
        if key not in header:
            continue
        try:
            value = float(header[key]) * 3600.0
        except (TypeError, ValueError) as err:
            raise InputFileError(f"{template}: header template {key} = {header[key]!r} is not a number") from err
        if not np.isclose(value, beam_arcsec, rtol=1e-3):
            bmaj = float(header.get("BMAJ", np.nan)) * 3600.0
            bmin = float(header.get("BMIN", np.nan)) * 3600.0
            raise InputFileError(
                f"{template}: header template beam is BMAJ x BMIN = {bmaj:.4g}\" x {bmin:.4g}\", but the "
                f"model's images have a {beam_arcsec:g}\" x {beam_arcsec:g}\" beam; the sources would be made at "
                "the model's beam and their total fluxes read with the template's")


def map_header(
    *,
    size_px: int,
    name: str,
    centre_ra_deg: float,
    centre_dec_deg: float,
    pixel_scale_arcsec: float = LOTSS.pixel_scale_arcsec,
    beam_arcsec: float = LOTSS.beam_arcsec,
    frequency_hz: float = LOTSS.frequency_hz,
    template: str | Path | None = None,
) -> fits.Header:
    """FITS header of the map: a DR2-like SIN grid of ``size_px`` squared pixels.

    With ``template`` (a DR2 ``*.hdr`` text header or a FITS file), its
    projection, centre (CRVAL), beam and frequency are kept and only the grid
    size and reference pixel change; its pixel scale must equal
    ``pixel_scale_arcsec`` (the model's), or the generated sources would be
    drawn at the wrong angular size, and its beam (BMAJ, BMIN, where given)
    must be the model's circular ``beam_arcsec``: the sources are made at the
    model's beam, and a header beam of another area would turn every Jy/beam
    into a wrong total flux.
    """
    if template is None:
        header = dr2_header(mosaic_id=name, size=size_px, ra_deg=float(centre_ra_deg) % 360.0,
                            dec_deg=float(centre_dec_deg))
        header["CDELT1"] = -pixel_scale_arcsec / 3600.0
        header["CDELT2"] = pixel_scale_arcsec / 3600.0
        header["BMAJ"] = header["BMIN"] = beam_arcsec / 3600.0
        header["RESTFRQ"] = float(frequency_hz)
    else:
        header = _read_template(template).copy()
        for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2"):
            if key not in header:
                raise InputFileError(f"{template}: header template has no {key}")
        for axis in ("1", "2"):
            scale = abs(float(header[f"CDELT{axis}"])) * 3600.0
            if not np.isclose(scale, pixel_scale_arcsec, rtol=1e-4):
                raise InputFileError(
                    f"{template}: CDELT{axis} is {scale:.4f} arcsec/px, but the model's images have "
                    f"{pixel_scale_arcsec:g} arcsec/px")
        _check_template_beam(header, template, beam_arcsec)
        header.setdefault("BMAJ", beam_arcsec / 3600.0)
        header.setdefault("BMIN", beam_arcsec / 3600.0)
        header.setdefault("BPA", 0.0)
        header.setdefault("RESTFRQ", float(frequency_hz))
        header.setdefault("BUNIT", "JY/BEAM")
        header["BITPIX"] = -32
        header["OBJECT"] = name
    header["NAXIS1"] = header["NAXIS2"] = int(size_px)
    header["CRPIX1"] = header["CRPIX2"] = size_px / 2.0 + 0.5
    header["ORIGIN"] = "radiogen skymap (diffusion-model sources)"
    return header


def wcs_of(header: fits.Header) -> WCS:
    """Celestial WCS of a map header."""
    return WCS(header).celestial


def model_geometry(meta) -> dict:
    """``pixel_scale_arcsec``, ``beam_arcsec``, ``frequency_hz`` of a LoTSS model's images.

    The model file's values where it records them, else the LoTSS survey's.
    """
    from radiogen.surveys import survey_attrs

    attrs = survey_attrs("lotss")
    for key in attrs:
        if meta.get(key) is not None:
            attrs[key] = float(meta[key])
    return attrs
