"""FITS headers of the images radiogen writes: a celestial WCS plus beam and unit cards.

The WCS is built with :class:`astropy.wcs.WCS` and written with
``WCS.to_header()``, so the cards follow the FITS WCS papers exactly; the beam
(``BMAJ``/``BMIN``/``BPA``, degrees), ``BUNIT`` and ``RESTFRQ`` are added as
radio tools (PyBDSF, CASA, DS9, CARTA) read them.  With ``freq_stokes_axes``
the image has the four axes of radio interferometric images (RA, Dec, FREQ,
STOKES = I), each extra axis of length 1.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["image_wcs", "image_header", "as_fits_data"]

#: STOKES axis value of total intensity (FITS WCS paper III, Table 7).
STOKES_I = 1.0


def image_wcs(
    shape: tuple[int, int],
    *,
    pixel_scale_arcsec: float,
    ra_deg: float,
    dec_deg: float,
    projection: str = "SIN",
    frequency_hz: float | None = None,
    bandwidth_hz: float | None = None,
    freq_stokes_axes: bool = False,
) -> WCS:
    """WCS of an (ny, nx) image with the reference pixel at its centre.

    Parameters
    ----------
    shape : tuple of int
        (ny, nx) pixels.
    pixel_scale_arcsec : float, keyword-only
        Pixel side, arcsec (RA increases to the left: CDELT1 < 0).
    ra_deg, dec_deg : float, keyword-only
        ICRS position of the image centre, degrees.
    projection : str, keyword-only
        Three-letter projection code (``SIN`` for LoTSS, ``TAN``...).
    frequency_hz, bandwidth_hz : float, keyword-only
        Centre and width of the band, Hz: ``RESTFRQ`` and, with
        ``freq_stokes_axes``, the FREQ axis (width 1 Hz when unknown).
    freq_stokes_axes : bool, keyword-only
        Add FREQ and STOKES axes (length 1; Stokes I).
    """
    ny, nx = (int(n) for n in shape)
    wcs = WCS(naxis=4 if freq_stokes_axes else 2)
    scale_deg = float(pixel_scale_arcsec) / 3600.0
    ctype = [f"RA---{projection}", f"DEC--{projection}"]
    cunit = ["deg", "deg"]
    crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]  # FITS pixels are 1-based; centre of the grid
    crval = [float(ra_deg) % 360.0, float(dec_deg)]
    cdelt = [-scale_deg, scale_deg]
    if freq_stokes_axes:
        if frequency_hz is None:
            raise ValueError("freq_stokes_axes needs frequency_hz")
        ctype += ["FREQ", "STOKES"]
        cunit += ["Hz", ""]
        crpix += [1.0, 1.0]
        crval += [float(frequency_hz), STOKES_I]
        cdelt += [float(bandwidth_hz) if bandwidth_hz else 1.0, 1.0]
    wcs.wcs.ctype, wcs.wcs.cunit = ctype, cunit
    wcs.wcs.crpix, wcs.wcs.crval, wcs.wcs.cdelt = crpix, crval, cdelt
    wcs.wcs.radesys, wcs.wcs.equinox = "ICRS", 2000.0
    if frequency_hz is not None:
        wcs.wcs.restfrq = float(frequency_hz)
    return wcs


def image_header(
    shape: tuple[int, int],
    *,
    pixel_scale_arcsec: float,
    beam_arcsec: float,
    frequency_hz: float,
    ra_deg: float,
    dec_deg: float,
    bunit: str,
    projection: str = "SIN",
    bandwidth_hz: float | None = None,
    freq_stokes_axes: bool = False,
) -> fits.Header:
    """Header of one (ny, nx) image: :func:`image_wcs` plus beam, unit and frequency cards.

    ``beam_arcsec`` is the FWHM of a circular beam (BMAJ = BMIN, degrees in the
    header; BPA 0).  ``bunit`` is written as given (``JY/BEAM`` for LoTSS
    images; empty for min-max scaled images without a flux scale).
    """
    header = image_wcs(shape, pixel_scale_arcsec=pixel_scale_arcsec, ra_deg=ra_deg, dec_deg=dec_deg,
                       projection=projection, frequency_hz=frequency_hz, bandwidth_hz=bandwidth_hz,
                       freq_stokes_axes=freq_stokes_axes).to_header()
    header["BUNIT"] = (bunit, "pixel unit")
    header["BTYPE"] = "Intensity"
    header["BMAJ"] = (float(beam_arcsec) / 3600.0, "[deg] beam major axis FWHM")
    header["BMIN"] = (float(beam_arcsec) / 3600.0, "[deg] beam minor axis FWHM")
    header["BPA"] = (0.0, "[deg] beam position angle")
    header["ORIGIN"] = "radiogen"
    return header


def as_fits_data(image: np.ndarray, header: fits.Header) -> np.ndarray:
    """``image`` (ny, nx) as float32, shaped (1, 1, ny, nx) when the header has four axes."""
    image = np.asarray(image, dtype=np.float32)
    naxis = int(header.get("WCSAXES", 2))
    return image.reshape((1,) * (naxis - image.ndim) + image.shape)
