"""Open LoTSS mosaic FITS files and stream their pixels in row blocks.

A LoTSS-DR2 ``mosaic-blanked.fits`` is ~10k x 10k px (float32 or float64),
so it is never loaded whole: :func:`open_mosaic` reads and checks only the
header, and :meth:`Mosaic.iter_blocks` memory-maps one band of rows at a time,
releasing each map before the next one.  Resident memory therefore stays at
one block (``block_rows * NAXIS1 * 8`` bytes) however large the mosaic is,
and every pixel is read from disk once, in file order.

Integer images with ``BSCALE``/``BZERO``/``BLANK`` would make astropy give up
memory mapping and scale the whole array in memory; here the raw values are
mapped and scaled per block instead (``BLANK`` becomes NaN).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning

from radiogen.errors import InputFileError

__all__ = ["Mosaic", "open_mosaic", "mosaic_id_from_path"]

log = logging.getLogger(__name__)

_BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True)
class Mosaic:
    """Header-level description of a mosaic image plus block-wise pixel access.

    Attributes
    ----------
    path : Path
        The FITS file.
    mosaic_id : str
        Identifier (from the caller, else the ``OBJECT`` card, else the file name).
    header : astropy.io.fits.Header
        Primary header.
    wcs : astropy.wcs.WCS
        Two-dimensional celestial WCS of the image plane.
    shape : tuple of int
        ``(ny, nx)`` of the image plane, in pixels.
    pixel_scale_arcsec : float
        ``|CDELT2|`` (or the WCS pixel scale), arcsec per pixel.
    beam_arcsec : float or None
        ``BMAJ`` in arcsec (FWHM of the restoring beam), None when absent.
    frequency_hz : float or None
        ``RESTFRQ``/``FREQ``/``CRVAL3`` of a frequency axis, Hz; None when absent.
    unit : str
        ``BUNIT`` as found in the header (``"Jy/beam"`` when absent); pixels read
        through :meth:`iter_blocks` are always converted to Jy/beam.
    """

    path: Path
    mosaic_id: str
    header: fits.Header = field(repr=False)
    wcs: WCS = field(repr=False)
    shape: tuple[int, int]
    pixel_scale_arcsec: float
    beam_arcsec: float | None
    frequency_hz: float | None
    _data_offset: int = field(repr=False, default=0)
    _dtype: str = field(repr=False, default=">f8")
    _bscale: float = field(repr=False, default=1.0)
    _bzero: float = field(repr=False, default=0.0)
    _blank: int | None = field(repr=False, default=None)
    unit: str = "Jy/beam"
    _to_jy_per_beam: float = field(repr=False, default=1.0)

    @property
    def bytes_per_pixel(self) -> int:
        """Size of one stored pixel in bytes (from BITPIX)."""
        return np.dtype(self._dtype).itemsize

    def iter_blocks(self, *, block_rows: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, block)`` with float64 blocks of whole rows, in file order.

        Each block is a fresh array (scaled, ``BLANK`` -> NaN); the file is
        memory-mapped only for the rows of that block, so resident memory is
        bounded by one block.
        """
        ny, nx = self.shape
        itemsize = np.dtype(self._dtype).itemsize
        row_bytes = nx * itemsize
        for first in range(0, ny, block_rows):
            n = min(block_rows, ny - first)
            mapped = np.memmap(self.path, dtype=self._dtype, mode="r",
                               offset=self._data_offset + first * row_bytes, shape=(n, nx))
            try:
                block = np.array(mapped, dtype=np.float64)
            except (OSError, ValueError) as err:
                raise InputFileError(f"{self.path}: cannot read rows {first}..{first + n} ({err})") from err
            finally:
                # Dropping the only reference unmaps the band now; keeping maps alive
                # would let every touched page accumulate in the job's resident memory.
                del mapped
            if self._blank is not None:
                blank_mask = block == self._blank
            if self._bscale != 1.0 or self._bzero != 0.0:
                block *= self._bscale
                block += self._bzero
            if self._to_jy_per_beam != 1.0:
                block *= self._to_jy_per_beam
            if self._blank is not None:
                block[blank_mask] = np.nan
            yield first, block

    def read(self) -> np.ndarray:
        """Whole image as float64 (for small images and tests only)."""
        return np.concatenate([b for _, b in self.iter_blocks(block_rows=4096)], axis=0)


#: Surface-brightness units accepted in ``BUNIT`` (lower case, spaces removed) -> Jy/beam.
_BUNIT_SCALE = {
    "jy/beam": 1.0, "jy/bm": 1.0, "jybeam-1": 1.0, "jy.beam-1": 1.0, "jy/beam1": 1.0,
    "mjy/beam": 1e-3, "mjy/bm": 1e-3, "mjybeam-1": 1e-3, "mjy.beam-1": 1e-3,
    "ujy/beam": 1e-6, "µjy/beam": 1e-6, "μjy/beam": 1e-6, "ujy/bm": 1e-6, "ujybeam-1": 1e-6,
    "ujy.beam-1": 1e-6, "microjy/beam": 1e-6,
}


def jy_per_beam_scale(bunit: str | None, *, path: str | os.PathLike = "mosaic") -> float:
    """Factor that converts pixel values in ``bunit`` to Jy/beam.

    A missing ``BUNIT`` is taken as Jy/beam (the LoTSS convention).  Anything
    that is not a flux density per beam (e.g. ``K``, ``Jy/pixel``) raises
    :class:`InputFileError` naming the file.
    """
    if bunit is None or not str(bunit).strip():
        return 1.0
    key = str(bunit).strip().lower().replace(" ", "").replace("**", "").replace("^", "")
    if key not in _BUNIT_SCALE:
        raise InputFileError(
            f"{path}: BUNIT = {bunit!r} is not a surface brightness per beam "
            "(expected Jy/beam, mJy/beam or uJy/beam)"
        )
    return _BUNIT_SCALE[key]


def header_frequency_hz(header) -> float | None:
    """Observing frequency (Hz) from ``RESTFRQ``/``RESTFREQ``/``FREQ`` or a FREQ axis; None if absent."""
    freq = header.get("RESTFRQ", header.get("RESTFREQ", header.get("FREQ")))
    if freq is None:
        for axis in range(3, int(header.get("NAXIS", 2)) + 1):
            if str(header.get(f"CTYPE{axis}", "")).upper().startswith("FREQ"):
                freq = header.get(f"CRVAL{axis}")
    return None if freq is None else float(freq)


def mosaic_id_from_path(path: str | os.PathLike) -> str:
    """Identifier for a mosaic file: its name without ``.fits`` (``P000+23.fits`` -> ``P000+23``)."""
    name = Path(path).name
    for ext in (".fits", ".fit", ".fts"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def open_mosaic(path: str | os.PathLike, *, mosaic_id: str | None = None) -> Mosaic:
    """Check a mosaic FITS file and describe it without reading its pixels.

    Parameters
    ----------
    path : path-like
        Mosaic FITS file (primary HDU image, ``NAXIS`` >= 2; extra axes such
        as frequency and Stokes must have length 1).
    mosaic_id : str, optional
        Identifier to use; default :func:`mosaic_id_from_path`.

    Returns
    -------
    Mosaic

    Raises
    ------
    InputFileError
        Missing file, not FITS, compressed, no image, truncated data, extra
        non-degenerate axes, or no celestial WCS -- the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: mosaic file does not exist")
    if not path.is_file():
        raise InputFileError(f"{path}: mosaic path is not a regular file")
    if path.suffix.lower() in (".gz", ".fz", ".bz2"):
        raise InputFileError(f"{path}: compressed FITS cannot be memory-mapped; decompress it first")
    try:
        with warnings.catch_warnings():
            # Truncation is reported below with the byte counts; astropy's warning adds nothing.
            warnings.simplefilter("ignore", AstropyUserWarning)
            hdul = fits.open(path, memmap=True, do_not_scale_image_data=True, lazy_load_hdus=True)
        with hdul:
            hdu = hdul[0]
            header = hdu.header.copy()
            data_offset = hdu.fileinfo()["datLoc"]
    except (OSError, ValueError, TypeError, IndexError) as err:
        raise InputFileError(f"{path}: not a readable FITS file ({err})") from err

    naxis = int(header.get("NAXIS", 0))
    if naxis < 2:
        raise InputFileError(f"{path}: primary HDU has no 2-D image (NAXIS={naxis})")
    dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    if any(d != 1 for d in dims[2:]):
        raise InputFileError(f"{path}: image has non-degenerate extra axes {dims[2:]}; expected one plane")
    nx, ny = dims[0], dims[1]
    if nx <= 0 or ny <= 0:
        raise InputFileError(f"{path}: empty image ({nx} x {ny} px)")
    bitpix = int(header.get("BITPIX", 0))
    if bitpix not in _BITPIX_DTYPES:
        raise InputFileError(f"{path}: unsupported BITPIX={bitpix}")
    dtype = _BITPIX_DTYPES[bitpix]
    expected = data_offset + nx * ny * np.dtype(dtype).itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise InputFileError(
            f"{path}: truncated FITS file ({actual} bytes on disk, header needs {expected}); "
            "re-download or re-create it"
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=naxis).celestial
        except Exception as err:  # astropy raises many WCS error types
            raise InputFileError(f"{path}: invalid WCS in header ({err})") from err
    if wcs.naxis != 2 or not wcs.has_celestial or wcs.wcs.lng != 0 or wcs.wcs.lat != 1:
        raise InputFileError(
            f"{path}: no celestial WCS on the image axes (CTYPE1={header.get('CTYPE1')!r}, "
            f"CTYPE2={header.get('CTYPE2')!r}); cannot place catalogue sources"
        )
    scale_deg = float(np.sqrt(np.abs(np.linalg.det(wcs.pixel_scale_matrix))))
    beam = header.get("BMAJ")
    freq = header_frequency_hz(header)
    blank = header.get("BLANK") if bitpix > 0 else None
    log.debug("%s: %d x %d px, BITPIX %d, %.3f arcsec/px", path, nx, ny, bitpix, scale_deg * 3600)
    return Mosaic(
        path=path,
        mosaic_id=mosaic_id or mosaic_id_from_path(path),
        header=header,
        wcs=wcs,
        shape=(ny, nx),
        pixel_scale_arcsec=round(scale_deg * 3600.0, 9),
        beam_arcsec=round(float(beam) * 3600.0, 9) if beam is not None else None,
        frequency_hz=freq,
        _data_offset=int(data_offset),
        _dtype=dtype,
        _bscale=float(header.get("BSCALE", 1.0)),
        _bzero=float(header.get("BZERO", 0.0)),
        _blank=int(blank) if blank is not None else None,
        unit=str(header.get("BUNIT", "Jy/beam")).strip() or "Jy/beam",
        _to_jy_per_beam=jy_per_beam_scale(header.get("BUNIT"), path=path),
    )
