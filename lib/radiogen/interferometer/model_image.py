"""The model image WSClean predicts from: Jy/pixel on a grid centred on the phase centre.

WSClean's ``-predict`` ignores the image's CRVAL and CRPIX: it takes the
centre pixel (N/2 counting from 0, FITS CRPIX N/2 + 1) to be the measurement
set's phase centre and the pixel scale from its command line.  A model on any
other grid would be predicted at the wrong place without a warning, so
:func:`check_model_grid` refuses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from radiogen.errors import InputFileError

__all__ = ["check_model_grid", "model_header", "write_model_image"]

#: Largest accepted mismatch of the model's centre or pixel scale, as a fraction of a pixel.
GRID_TOLERANCE_PX = 1e-3


def model_header(*, size_px: int, scale_arcsec: float, ra_deg: float, dec_deg: float,
                 frequency_hz: float, bandwidth_hz: float) -> fits.Header:
    """A 4-axis SIN header (RA, Dec, frequency, Stokes I) of the grid WSClean assumes."""
    header = fits.Header()
    header["BUNIT"] = ("JY/PIXEL", "model: flux per pixel")
    centre = size_px // 2 + 1  # FITS pixel of 0-based pixel N/2
    for axis, (ctype, crval, cdelt, crpix, cunit) in enumerate(
            [("RA---SIN", ra_deg, -scale_arcsec / 3600.0, centre, "deg"),
             ("DEC--SIN", dec_deg, scale_arcsec / 3600.0, centre, "deg"),
             ("FREQ", frequency_hz, bandwidth_hz, 1, "Hz"),
             ("STOKES", 1.0, 1.0, 1, "")], start=1):
        header[f"CTYPE{axis}"] = ctype
        header[f"CRVAL{axis}"] = crval
        header[f"CDELT{axis}"] = cdelt
        header[f"CRPIX{axis}"] = crpix
        header[f"CUNIT{axis}"] = cunit
    header["RADESYS"] = "FK5"
    header["EQUINOX"] = 2000.0
    return header


def check_model_grid(header: fits.Header, *, ra_deg: float, dec_deg: float, size_px: int, scale_arcsec: float,
                     source: str = "model image") -> None:
    """Raise :class:`InputFileError` unless ``header`` is WSClean's grid about the phase centre."""
    problems = []
    if header.get("NAXIS1") not in (None, size_px) or header.get("NAXIS2") not in (None, size_px):
        problems.append(f"size {header.get('NAXIS1')}x{header.get('NAXIS2')} px, not {size_px}x{size_px}")
    if header.get("CTYPE1") != "RA---SIN" or header.get("CTYPE2") != "DEC--SIN":
        problems.append(f"projection {header.get('CTYPE1')}/{header.get('CTYPE2')}, not RA---SIN/DEC--SIN")
    for axis in (1, 2):
        if abs(float(header.get(f"CRPIX{axis}", np.nan)) - (size_px // 2 + 1)) > GRID_TOLERANCE_PX:
            problems.append(f"CRPIX{axis} {header.get(f'CRPIX{axis}')}, not {size_px // 2 + 1} (pixel N/2)")
        if abs(abs(float(header.get(f"CDELT{axis}", np.nan))) * 3600.0 - scale_arcsec) > \
                GRID_TOLERANCE_PX * scale_arcsec:
            problems.append(f"pixel scale {header.get(f'CDELT{axis}')} deg, not {scale_arcsec} arcsec")
    scale_deg = scale_arcsec / 3600.0
    ra_offset = (float(header.get("CRVAL1", np.nan)) - ra_deg + 180.0) % 360.0 - 180.0
    offset_px = np.hypot(ra_offset * np.cos(np.radians(dec_deg)),
                         float(header.get("CRVAL2", np.nan)) - dec_deg) / scale_deg
    if not offset_px <= GRID_TOLERANCE_PX:
        problems.append(f"centre (CRVAL) {header.get('CRVAL1')}, {header.get('CRVAL2')} deg is not the phase "
                        f"centre {ra_deg}, {dec_deg} deg (WSClean would ignore CRVAL and misplace the sky)")
    if problems:
        raise InputFileError(f"{source}: not on the measurement set's imaging grid: " + "; ".join(problems))


def write_model_image(prefix: str | Path, jy_per_pixel: np.ndarray, header: fits.Header, *, ra_deg: float,
                      dec_deg: float, scale_arcsec: float) -> Path:
    """Write ``<prefix>-model.fits`` (atomically) after checking its grid; returns the path."""
    data = np.asarray(jy_per_pixel, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] != data.shape[1]:
        raise InputFileError(f"{prefix}-model.fits: the model must be a square 2-D image, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputFileError(f"{prefix}-model.fits: the model has non-finite pixels")
    header = header.copy()
    for key in ("NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4"):
        header.remove(key, ignore_missing=True)
    check_model_grid(header, ra_deg=ra_deg, dec_deg=dec_deg, size_px=data.shape[0], scale_arcsec=scale_arcsec,
                     source=f"{prefix}-model.fits")
    path = Path(f"{prefix}-model.fits")
    tmp = path.with_name(path.name + ".tmp")
    fits.PrimaryHDU(data[np.newaxis, np.newaxis], header=header).writeto(tmp, overwrite=True)
    tmp.replace(path)
    return path
