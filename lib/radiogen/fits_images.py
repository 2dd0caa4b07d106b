"""Folders of FITS cutouts (any survey) as an image set.

Users hold cutouts from SkyView, MiraBest, Radio Galaxy Zoo or MeerKAT as one
FITS file per source.  :func:`image_set_from_fits` turns such files into the
project's image-set layout (``/images`` in [0, 1], optional ``/peak_flux``,
``/label`` and one-hot ``/context``; see :mod:`radiogen.evaluation.imagesets`),
scaled like the dataset they are compared with, so that the set can be scored
by the classifier, run through PyBDSF, entered in the summary tables or used as
a training set.

Scalings
--------
``lotss``
    Negative pixels set to 0, per-image min-max; the image maximum (Jy/beam)
    is kept as ``/peak_flux`` (paper Sect. 3.1).
``first``
    Pixels below 3 x the sigma-clipped rms set to that level, then per-image
    min-max, as in the FIRST dataset of Griese et al. (2023).
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from radiogen.errors import ConfigError, InputFileError
from radiogen.first.dataset import centre_crop, minmax_scale
from radiogen.io import atomic_path
from radiogen.surveys import FIRST_CLASS_NAMES

__all__ = ["SCALINGS", "FitsImage", "read_fits_image", "image_set_from_fits"]

log = logging.getLogger("radiogen.fits_images")

SCALINGS = ("lotss", "first")
#: FIRST's morphology classes (Griese et al. 2023), the default class names.
FIRST_CLASSES = FIRST_CLASS_NAMES
#: Relative tolerance on pixel scales that count as equal.
_SCALE_TOLERANCE = 0.01


class FitsImage:
    """One 2-D FITS image with what the header says about it.

    Attributes
    ----------
    data : ndarray
        float64 (ny, nx), Jy/beam (converted from ``BUNIT``), NaN kept.
    pixel_scale_arcsec : float
        Geometric-mean pixel side from the celestial WCS, arcsec.
    beam_arcsec : float or None
        ``BMAJ`` in arcsec; None when the header has none.
    frequency_hz : float or None
        ``RESTFRQ``/``RESTFREQ``/``FREQ`` or the value of a FREQ axis, Hz.
    centre : tuple of float
        (RA, Dec) of the image centre, deg.
    """

    def __init__(self, path: Path, data: np.ndarray, pixel_scale_arcsec: float,
                 beam_arcsec: float | None, frequency_hz: float | None, centre: tuple[float, float]):
        self.path = path
        self.data = data
        self.pixel_scale_arcsec = pixel_scale_arcsec
        self.beam_arcsec = beam_arcsec
        self.frequency_hz = frequency_hz
        self.centre = centre


def read_fits_image(path: str | os.PathLike) -> FitsImage:
    """Read the first image HDU of ``path`` (degenerate axes dropped), in Jy/beam.

    Raises
    ------
    InputFileError
        Unreadable file, no 2-D image, no celestial WCS, or a ``BUNIT`` that is
        not a flux density per beam; the message names the file.
    """
    from astropy.io import fits
    from astropy.wcs import FITSFixedWarning, WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    from radiogen.lotss.mosaic import header_frequency_hz, jy_per_beam_scale

    path = Path(path)
    try:
        # SkyView headers carry tabs in COMMENT cards: harmless, but astropy warns per card
        with warnings.catch_warnings(), fits.open(path, memmap=False) as hdul:
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdu = next((h for h in hdul if h.data is not None and h.data.ndim >= 2), None)
            if hdu is None:
                raise InputFileError(f"{path}: no image data in any HDU")
            header = hdu.header.copy()
            data = np.asarray(hdu.data, dtype=np.float64)
    except InputFileError:
        raise
    except (OSError, ValueError, TypeError) as err:
        raise InputFileError(f"{path}: not a readable FITS file ({err})") from err
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise InputFileError(f"{path}: expected a 2-D image (after dropping length-1 axes), got {data.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header).celestial
        except Exception as err:  # astropy raises many WCS error types
            raise InputFileError(f"{path}: invalid WCS ({err})") from err
    if wcs.naxis != 2:
        raise InputFileError(f"{path}: no celestial WCS (CTYPE1={header.get('CTYPE1')!r}); pixel scale unknown")
    scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs)))) * 3600.0
    ny, nx = data.shape
    ra, dec = wcs.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
    data *= jy_per_beam_scale(header.get("BUNIT"), path=path)
    beam = header.get("BMAJ")
    return FitsImage(path, data, scale, None if beam is None else float(beam) * 3600.0,
                     header_frequency_hz(header), (float(ra), float(dec)))


def _centre_crop(image: FitsImage, size: int) -> np.ndarray:
    ny, nx = image.data.shape
    if size > min(ny, nx):
        raise InputFileError(f"{image.path}: image is {nx}x{ny} px, smaller than the {size} px crop")
    return centre_crop(image.data, size)


def _resample(image: FitsImage, pixel_scale_arcsec: float) -> np.ndarray:
    """Bilinear resampling about the image centre onto ``pixel_scale_arcsec`` pixels."""
    from scipy.ndimage import zoom

    factor = image.pixel_scale_arcsec / pixel_scale_arcsec
    filled = np.nan_to_num(image.data, nan=0.0)
    # surface brightness per beam is intensive: interpolate values, no flux rescaling
    return zoom(filled, factor, order=1, mode="nearest")


def _scale(crop: np.ndarray, scaling: str) -> tuple[np.ndarray, float]:
    """Scaled image in [0, 1] and the peak (Jy/beam) that undoes the scaling (lotss)."""
    from astropy.stats import sigma_clipped_stats

    crop = np.nan_to_num(crop, nan=0.0)
    if scaling == "lotss":
        crop = np.clip(crop, 0.0, None)
    else:
        _, _, rms = sigma_clipped_stats(crop)
        crop = np.clip(crop, 3.0 * rms, None)
    return minmax_scale(crop), float(crop.max())


def _labels_from_names(paths: Sequence[Path], pattern: str, label_map: Mapping[str, str],
                       class_names: Sequence[str], skip_unlabelled: bool) -> tuple[list[Path], list[int]]:
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"label pattern {pattern!r}: not a regular expression ({err})") from err
    if "label" not in regex.groupindex:
        raise ConfigError(f"label pattern {pattern!r} needs a named group (?P<label>...)")
    kept, labels = [], []
    for path in paths:
        match = regex.search(path.name)
        token = match.group("label") if match else None
        name = label_map.get(token, token) if token is not None else None
        if name not in class_names:
            if skip_unlabelled:
                log.info("%s: label %r is not one of %s; skipped", path.name, token, list(class_names))
                continue
            raise InputFileError(
                f"{path}: file name gives label {token!r}, which maps to none of the classes "
                f"{list(class_names)} (label map {dict(label_map)}); use skip_unlabelled to leave it out"
            )
        kept.append(path)
        labels.append(list(class_names).index(name))
    return kept, labels


def image_set_from_fits(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    dataset: str,
    size: int = 80,
    pixel_scale_arcsec: float | None = None,
    beam_arcsec: float | None = None,
    frequency_hz: float | None = None,
    label_pattern: str | None = None,
    label_map: Mapping[str, str] | None = None,
    class_names: Sequence[str] = FIRST_CLASSES,
    skip_unlabelled: bool = False,
) -> dict:
    """Write FITS cutouts as an image set (HDF5, the layout of the training sets).

    Parameters
    ----------
    paths : sequence of path-like
        FITS files, or folders whose ``*.fits`` / ``*.fits.gz`` files are read
        (sorted by name: the image order of the set).
    output : path-like
        HDF5 file to write (atomically).
    dataset : {"lotss", "first"}
        The dataset the set is compared with: its scaling (module docstring)
        and the ``dataset`` attribute.
    size : int
        Side of the central crop, pixels.
    pixel_scale_arcsec : float, optional
        Resample every image to this pixel scale before cropping (bilinear).
        Without it all images must share one pixel scale (1% tolerance).
    beam_arcsec : float, optional
        Beam FWHM for files whose header has no ``BMAJ`` (said so in the log).
    frequency_hz : float, optional
        Frequency for files whose header gives none.
    label_pattern : str, optional
        Regular expression with a named group ``label`` searched in each file
        name; the match (through ``label_map``) must be one of ``class_names``.
        Gives ``/label`` and a one-hot ``/context``.
    label_map : mapping, optional
        Matched token -> class name (e.g. MiraBest ``{"1": "FRI", "2": "FRII"}``).
    class_names : sequence of str
        Class order of ``/label`` (default FIRST's FRI, FRII, Compact, Bent).
    skip_unlabelled : bool
        Leave out files whose label is not a class instead of stopping.

    Returns
    -------
    dict
        Counts and the header facts used, as written to the file's attributes.
    """
    if dataset not in SCALINGS:
        raise ConfigError(f"dataset must be one of {SCALINGS}, got {dataset!r}")
    if size < 8:
        raise ConfigError(f"crop size must be >= 8 px, got {size}")
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted([*entry.glob("*.fits"), *entry.glob("*.fits.gz"), *entry.glob("*.fit")])
            if not found:
                raise InputFileError(f"{entry}: folder holds no *.fits files")
            files.extend(found)
        elif entry.exists():
            files.append(entry)
        else:
            raise InputFileError(f"{entry}: no such FITS file or folder")
    if not files:
        raise InputFileError("no FITS files given")
    labels = None
    if label_pattern is not None:
        files, labels = _labels_from_names(files, label_pattern, dict(label_map or {}), class_names,
                                           skip_unlabelled)
        if not files:
            raise InputFileError(f"no file name matched a class with pattern {label_pattern!r}")

    images, peaks, centres, names = [], [], [], []
    scales, beams, freqs = [], [], []
    no_beam, no_freq = [], []
    for index, path in enumerate(files):
        image = read_fits_image(path)
        if pixel_scale_arcsec is not None:
            if not np.isclose(image.pixel_scale_arcsec, pixel_scale_arcsec, rtol=_SCALE_TOLERANCE):
                image.data = _resample(image, pixel_scale_arcsec)
                image.pixel_scale_arcsec = pixel_scale_arcsec
        elif scales and not np.isclose(image.pixel_scale_arcsec, scales[0], rtol=_SCALE_TOLERANCE):
            raise InputFileError(
                f"{path}: pixel scale {image.pixel_scale_arcsec:.4g}\" differs from {files[0].name}'s "
                f"{scales[0]:.4g}\"; give a pixel scale to resample to"
            )
        if image.beam_arcsec is None:
            if beam_arcsec is None:
                raise InputFileError(
                    f"{path}: header has no BMAJ (restoring beam) and no beam was configured "
                    "(beam_arcsec; FIRST 5.4, LoTSS 6.0)"
                )
            no_beam.append(path.name)
        if image.frequency_hz is None:
            if frequency_hz is None:
                raise InputFileError(f"{path}: header gives no frequency (RESTFRQ/FREQ/FREQ axis) "
                                     "and none was configured (frequency_hz)")
            no_freq.append(path.name)
        scaled, peak = _scale(_centre_crop(image, size), dataset)
        images.append(scaled)
        peaks.append(peak)
        centres.append(image.centre)
        names.append(path.name)
        scales.append(image.pixel_scale_arcsec)
        beams.append(image.beam_arcsec if image.beam_arcsec is not None else beam_arcsec)
        freqs.append(image.frequency_hz if image.frequency_hz is not None else frequency_hz)
        if (index + 1) % 1000 == 0:
            log.info("%d/%d FITS files read", index + 1, len(files))
    if no_beam:
        log.warning("%d of %d files have no BMAJ: using the configured beam %g arcsec (e.g. %s)",
                    len(no_beam), len(files), beam_arcsec, no_beam[0])
    if no_freq:
        log.warning("%d of %d files give no frequency: using the configured %g Hz",
                    len(no_freq), len(files), frequency_hz)
    for name, values in (("beam", beams), ("frequency", freqs)):
        if not np.allclose(values, values[0], rtol=_SCALE_TOLERANCE):
            raise InputFileError(
                f"{files[int(np.argmax(~np.isclose(values, values[0], rtol=_SCALE_TOLERANCE)))]}: "
                f"{name} differs from {files[0].name}'s ({values[0]:g}); one set holds one survey"
            )
    summary = {
        "dataset": dataset,
        "n_images": len(images),
        "pixel_scale_arcsec": float(np.median(scales)),
        "beam_arcsec": float(beams[0]),
        "beam_source": "config" if no_beam else "header",
        "frequency_hz": float(freqs[0]),
        "frequency_source": "config" if no_freq else "header",
        "scaling": dataset,
        "crop_size": int(size),
        "resampled": pixel_scale_arcsec is not None,
    }
    import h5py

    strings = h5py.string_dtype("utf-8")
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("images", data=np.stack(images), compression="gzip", compression_opts=4)
        h5.create_dataset("split", data=np.zeros(len(images), np.uint8))
        centres_arr = np.asarray(centres, dtype=np.float64)
        h5.create_dataset("ra", data=centres_arr[:, 0]).attrs["unit"] = "deg"
        h5.create_dataset("dec", data=centres_arr[:, 1]).attrs["unit"] = "deg"
        h5.create_dataset("source_name", data=np.asarray(names, dtype=object), dtype=strings)
        if dataset == "lotss":
            h5.create_dataset("peak_flux", data=np.asarray(peaks, np.float64)).attrs["unit"] = "Jy/beam"
        if labels is not None:
            label_arr = np.asarray(labels, np.int64)
            h5.create_dataset("label", data=label_arr)
            h5.create_dataset("context", data=np.eye(len(class_names), dtype=np.float32)[label_arr])
            h5.attrs["class_names"] = json.dumps(list(class_names))
            summary["class_counts"] = {c: int((label_arr == i).sum()) for i, c in enumerate(class_names)}
        h5.attrs.update({k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in summary.items()})
        h5.attrs["source"] = "FITS files: " + ", ".join(sorted({str(Path(f).parent) for f in files}))
    log.info("wrote %s: %d images of %d px at %.3g\"/px (beam %.3g\" from %s, %.4g Hz from %s)",
             output, len(images), size, summary["pixel_scale_arcsec"], summary["beam_arcsec"],
             summary["beam_source"], summary["frequency_hz"], summary["frequency_source"])
    return summary
