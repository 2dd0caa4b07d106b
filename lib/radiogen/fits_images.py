"""Folders of FITS cutouts (any survey) as an image set.

Users hold cutouts from SkyView, MiraBest, Radio Galaxy Zoo or MeerKAT as one
FITS file per source.  :func:`image_set_from_fits` turns such files into the
project's image-set layout (``/images`` in [0, 1], optional ``/peak_flux``,
``/label`` and one-hot ``/context``; see :mod:`radiogen.evaluation.imagesets`),
scaled like the dataset they are compared with, so that the set can be scored
by the classifier, run through PyBDSF, entered in the summary tables or used as
a training set.

Each file goes through the same steps:

1. read the first image HDU in Jy/beam (``BUNIT``, or the configured unit),
   its beam (``BMAJ``/``BMIN``/``BPA``, or the configured circular beam);
2. refuse (or, with ``on_blank="skip"``, leave out) a blank file;
3. match its beam to the target beam (:mod:`radiogen.beams`), rescaling
   Jy/beam by the beam-area ratio;
4. resample to the requested pixel scale, low-passed first when the pixels get
   coarser (anti-aliasing);
5. scale it like the compared dataset, then crop its centre.

Scalings
--------
``lotss``
    Negative pixels set to 0, per-image min-max; the image maximum (Jy/beam)
    is kept as ``/peak_flux`` (paper Sect. 3.1).
``first``
    Pixels below median + 3 sigma set to that level, then per-image min-max.
    Griese et al. (2023) set every pixel of their 300 x 300 px FIRST cutouts
    below three times the local noise to that level before cropping, so the
    median and sigma (sigma-clipped, 3 sigma, 5 iterations) are those of the
    whole input cutout, not of the central crop: a bright source fills a
    larger part of a small crop and would inflate its sigma.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from radiogen.beams import FWHM_PER_SIGMA, Beam, convolve_gaussian, matching_covariance
from radiogen.config import load_schema, schema_dir
from radiogen.errors import ConfigError, InputFileError
from radiogen.first.dataset import centre_crop, minmax_scale
from radiogen.io import atomic_path
from radiogen.surveys import FIRST_CLASS_NAMES

__all__ = ["SCALINGS", "BLANK_POLICIES", "IMAGESET_DEFAULTS", "FitsImage", "read_fits_image",
           "match_and_resample", "prepare_image", "resample", "first_clip_level", "image_set_from_fits"]

log = logging.getLogger("radiogen.fits_images")

SCALINGS = ("lotss", "first")
BLANK_POLICIES = ("error", "skip")
#: FIRST's morphology classes (Griese et al. 2023), the default class names.
FIRST_CLASSES = FIRST_CLASS_NAMES
#: Defaults of one ``imagesets.<name>`` entry, from its schema (the only place they are written).
IMAGESET_DEFAULTS = {
    key: spec["default"]
    for key, spec in load_schema(schema_dir() / "imagesets.schema.yaml")["additionalProperties"]["properties"].items()
    if "default" in spec
}
#: Relative tolerance on pixel scales and beams that count as equal.
_SCALE_TOLERANCE = 0.01
#: Anti-aliasing: least Gaussian sigma (in output pixels) an image must have before its
#: pixels are coarsened; the Gaussian's transfer at the output Nyquist frequency 1/(2 px)
#: is exp(-pi^2 sigma^2 / 2) = exp(-3) = 5% for sigma = sqrt(6) / pi = 0.78 px (FWHM 1.84 px).
ANTIALIAS_SIGMA_PX = float(np.sqrt(6.0) / np.pi)
#: First-like clipping: pixels below median + CLIP_SIGMAS x sigma are set to that level.
CLIP_SIGMAS = 3.0


class BlankImageError(InputFileError):
    """A file without usable pixels (or with blanks where the crop falls)."""


@dataclass
class FitsImage:
    """One 2-D FITS image with what the header says about it.

    Attributes
    ----------
    path : Path
    data : ndarray
        float64 (ny, nx), Jy/beam (converted from ``BUNIT``), NaN kept.
    pixel_to_sky : ndarray
        2x2 matrix, arcsec per pixel, mapping pixel offsets (x, y) to sky
        offsets (east, north) at the reference pixel.
    beam : Beam or None
        From ``BMAJ``/``BMIN``/``BPA``; None when the header has no ``BMAJ``.
    frequency_hz : float or None
        ``RESTFRQ``/``RESTFREQ``/``FREQ`` or the value of a FREQ axis, Hz.
    centre : tuple of float
        (RA, Dec) of the image centre, deg.
    unit_source : str
        ``"header"`` (``BUNIT``) or ``"config"``.
    """

    path: Path
    data: np.ndarray
    pixel_to_sky: np.ndarray
    beam: Beam | None
    frequency_hz: float | None
    centre: tuple[float, float]
    unit_source: str = "header"

    @property
    def pixel_scales_arcsec(self) -> np.ndarray:
        """Pixel side along x and y, arcsec."""
        return np.hypot(self.pixel_to_sky[0], self.pixel_to_sky[1])

    @property
    def pixel_scale_arcsec(self) -> float:
        """Geometric-mean pixel side, arcsec."""
        return float(np.sqrt(np.prod(self.pixel_scales_arcsec)))

    def covariance_in_pixels(self, covariance_sky: np.ndarray) -> np.ndarray:
        """A sky covariance (arcsec^2, east/north) in pixel units: J^-1 Sigma J^-T."""
        inverse = np.linalg.inv(self.pixel_to_sky)
        return inverse @ covariance_sky @ inverse.T


def _header_beam(header, path: Path) -> Beam | None:
    if header.get("BMAJ") is None:
        return None
    major = float(header["BMAJ"]) * 3600.0
    minor = float(header.get("BMIN", header["BMAJ"])) * 3600.0
    if not (np.isfinite(major) and np.isfinite(minor) and major > 0 and minor > 0):
        raise InputFileError(f"{path}: BMAJ/BMIN = {header['BMAJ']!r}/{header.get('BMIN')!r} deg is no beam")
    if header.get("BMIN") is None:
        log.info("%s: BMAJ without BMIN: circular beam of %.4g arcsec", path.name, major)
    pa = header.get("BPA")
    if pa is None and abs(major - minor) > _SCALE_TOLERANCE * major:
        raise InputFileError(f"{path}: elliptical beam (BMAJ {major:.4g}\", BMIN {minor:.4g}\") without BPA")
    pa = float(pa or 0.0)
    if minor > major:  # axes given the wrong way round: the major axis is the other one
        major, minor, pa = minor, major, pa + 90.0
    return Beam(major, minor, pa % 180.0)


def read_fits_image(path: str | os.PathLike, *, unit: str | None = None) -> FitsImage:
    """Read the first image HDU of ``path`` (degenerate axes dropped), in Jy/beam.

    Parameters
    ----------
    path : path-like
    unit : str, optional
        Pixel unit for a header without ``BUNIT`` (e.g. ``"Jy/beam"``).

    Raises
    ------
    InputFileError
        Unreadable file, no 2-D image, no celestial WCS, no ``BUNIT`` and no
        configured unit, a unit that is not a flux density per beam, or an
        elliptical beam without ``BPA``; the message names the file.
    """
    from astropy.io import fits
    from astropy.wcs import FITSFixedWarning, WCS

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
    # rows: (longitude, latitude) intermediate world coordinates, i.e. (east, north) offsets
    pixel_to_sky = wcs.pixel_scale_matrix[[wcs.wcs.lng, wcs.wcs.lat]] * 3600.0
    ny, nx = data.shape
    ra, dec = wcs.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
    bunit = header.get("BUNIT")
    unit_source = "header"
    if bunit is None or not str(bunit).strip():
        if unit is None:
            raise InputFileError(
                f"{path}: header has no BUNIT, so the pixel unit is unknown; name it in the "
                "configuration (imagesets.<name>.unit, option --unit), e.g. Jy/beam"
            )
        bunit, unit_source = unit, "config"
    data *= jy_per_beam_scale(bunit, path=path)
    return FitsImage(path, data, pixel_to_sky, _header_beam(header, path), header_frequency_hz(header),
                     (float(ra), float(dec)), unit_source)


def resample(data: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Cubic-spline resampling about the image centre; NaN where blanks reach.

    Parameters
    ----------
    data : ndarray
        2-D image (NaN = blank), already low-passed if the pixels get coarser.
    factors : (float, float)
        Output pixel size over input pixel size along y and x (> 1 coarsens).

    Returns
    -------
    ndarray
        ``floor(n / factor)`` pixels per axis; output pixel ``j`` samples input
        coordinate ``c_in + (j - c_out) * factor`` (``c`` = centre pixel), so the
        image centre stays where it was.  Surface brightness per beam is
        intensive: values are interpolated, not summed.
    """
    from scipy.ndimage import binary_dilation, distance_transform_edt, map_coordinates

    axes = []
    for n_in, factor in zip(data.shape, factors):
        n_out = int(np.floor(n_in / factor + 1e-6))  # 1e-6: 200 px of 1.5" are 120 of 2.5"
        axes.append((n_in - 1) / 2.0 + (np.arange(n_out) - (n_out - 1) / 2.0) * factor)
    grid = np.meshgrid(*axes, indexing="ij")
    blank = ~np.isfinite(data)
    filled = data
    if blank.any():
        if blank.all():
            return np.full(grid[0].shape, np.nan)
        # blanks take their nearest valid value: no step for the spline's prefilter to ring on
        nearest = distance_transform_edt(blank, return_distances=False, return_indices=True)
        filled = data[tuple(nearest)]
    values = map_coordinates(filled, grid, order=3, mode="nearest")
    if blank.any():
        # a cubic spline reaches two pixels: anything within them of a blank is blank
        near_blank = binary_dilation(blank, iterations=2).astype(np.float64)
        values[map_coordinates(near_blank, grid, order=1, mode="nearest") > 0] = np.nan
    return values


def first_clip_level(data: np.ndarray) -> float:
    """Level (median + 3 sigma, sigma-clipped, NaN ignored) below which FIRST-like pixels are set to it."""
    from astropy.stats import sigma_clipped_stats

    _, median, sigma = sigma_clipped_stats(data[np.isfinite(data)], sigma=3.0, maxiters=5)
    return float(median + CLIP_SIGMAS * sigma)


def _blank_reason(data: np.ndarray) -> str | None:
    finite = np.isfinite(data)
    if not finite.any():
        return f"all {data.size} pixels are blank (NaN)"
    values = data[finite]
    if values.min() == values.max():
        return f"every usable pixel has the same value ({values[0]:g}): no image"
    return None


@dataclass
class PreparedImage:
    """One file after matching, resampling, scaling and cropping."""

    image: np.ndarray          # float32 (size, size) in [0, 1]
    peak_jy_per_beam: float    # maximum of the crop after matching, Jy/beam (of ``beam``)
    beam: Beam                 # beam of the prepared image
    beam_source: str           # "header" or "config"
    pixel_scale_arcsec: float
    clip_level: float | None   # FIRST-like clipping level, Jy/beam (of ``beam``)
    n_blank_outside_crop: int


@dataclass
class MatchedImage:
    """One image on the set's resolution and pixel grid, in Jy/beam of ``beam``."""

    data: np.ndarray            # float64, NaN = blank
    beam: Beam
    beam_source: str            # where the input beam came from: "header" or "config"
    pixel_scale_arcsec: float


def match_and_resample(image: FitsImage, *, beam_arcsec: float | None = None,
                       target_beam_arcsec: float | None = None,
                       pixel_scale_arcsec: float | None = None) -> MatchedImage:
    """Convolve ``image`` to the target beam, then resample it to ``pixel_scale_arcsec``.

    Beam matching convolves with the Gaussian of covariance
    ``Sigma_target - Sigma_input`` and multiplies Jy/beam by
    ``Omega_target / Omega_input`` (total flux kept).  When the pixels get
    coarser the image is first smoothed, where its beam is narrower than
    :data:`ANTIALIAS_SIGMA_PX` output pixels (sigma), up to that width, so that
    the output Nyquist frequency is attenuated to 5% at most (no aliasing of
    noise or of structure finer than the new pixels); with a target beam that
    narrow the call is refused instead, since the set's beam would not be the
    target.  Both smoothings are one convolution.

    Raises
    ------
    InputFileError
        No beam in the header and none configured; a beam wider than the
        target (the message names both).
    ConfigError
        A target beam too narrow for the output pixels.
    """
    path = image.path
    beam, beam_source = image.beam, "header"
    if beam is None:
        if beam_arcsec is None:
            raise InputFileError(
                f"{path}: header has no BMAJ (restoring beam) and no beam was configured "
                "(beam_arcsec; FIRST 5.4, LoTSS 6.0)"
            )
        beam, beam_source = Beam.circular(beam_arcsec), "config"
    covariance = beam.covariance()
    kernel = np.zeros((2, 2))
    if target_beam_arcsec is not None:
        target = Beam.circular(target_beam_arcsec)
        kernel = matching_covariance(beam, target)
        if kernel is None:
            raise InputFileError(
                f"{path}: its beam ({beam.describe()}, from the {beam_source}) is wider than the target "
                f"beam ({target.describe()}) along some direction: smoothing cannot narrow a beam; "
                "choose a target beam at least as wide"
            )
    factors = np.ones(2)
    if pixel_scale_arcsec is not None:
        scales = image.pixel_scales_arcsec  # (x, y)
        if not np.allclose(scales, pixel_scale_arcsec, rtol=_SCALE_TOLERANCE):
            factors = pixel_scale_arcsec / scales[::-1]  # (y, x)
        if factors.max() > 1.0:
            least = (ANTIALIAS_SIGMA_PX * pixel_scale_arcsec) ** 2  # arcsec^2
            values, vectors = np.linalg.eigh(covariance + kernel)
            missing = np.clip(least - values, 0.0, None)
            if missing.max() > _SCALE_TOLERANCE * least:
                if target_beam_arcsec is not None:
                    raise ConfigError(
                        f"target beam {target_beam_arcsec:g}\" is narrower than "
                        f"{ANTIALIAS_SIGMA_PX * FWHM_PER_SIGMA * pixel_scale_arcsec:.3g}\" (FWHM of "
                        f"{ANTIALIAS_SIGMA_PX * FWHM_PER_SIGMA:.3g} pixels of {pixel_scale_arcsec:g}\"): "
                        f"{path.name} would alias when resampled; choose a wider target beam or finer pixels"
                    )
                kernel = kernel + (vectors * missing) @ vectors.T
    if target_beam_arcsec is not None:
        final_beam = Beam.circular(target_beam_arcsec)
    else:
        final_beam = Beam.from_covariance(covariance + kernel) if np.any(kernel) else beam
    data = image.data
    if np.any(kernel):
        # a unit-sum kernel keeps Jy per pixel; Jy/beam scales with the beam area
        data = convolve_gaussian(data, image.covariance_in_pixels(kernel))
        data = data * (final_beam.solid_angle_arcsec2() / beam.solid_angle_arcsec2())
        if target_beam_arcsec is None:
            log.info("%s: smoothed from %s to %s before coarsening its pixels (anti-aliasing)",
                     path.name, beam.describe(), final_beam.describe())
    if np.any(factors != 1.0):
        return MatchedImage(resample(data, factors), final_beam, beam_source, float(pixel_scale_arcsec))
    return MatchedImage(data, final_beam, beam_source, image.pixel_scale_arcsec)


def prepare_image(image: FitsImage, *, dataset: str, size: int, beam_arcsec: float | None = None,
                  target_beam_arcsec: float | None = None,
                  pixel_scale_arcsec: float | None = None) -> PreparedImage:
    """Match, resample, scale and crop one image (module docstring, steps 2-5).

    Raises
    ------
    BlankImageError
        No usable pixel, blank pixels inside the crop, or nothing above the
        clipping level in the crop.
    InputFileError, ConfigError
        As :func:`match_and_resample`; an image smaller than the crop.
    """
    path = image.path
    reason = _blank_reason(image.data)
    if reason:
        raise BlankImageError(f"{path}: {reason}")
    matched = match_and_resample(image, beam_arcsec=beam_arcsec, target_beam_arcsec=target_beam_arcsec,
                                 pixel_scale_arcsec=pixel_scale_arcsec)
    data, final_beam, beam_source, out_scale = (matched.data, matched.beam, matched.beam_source,
                                                matched.pixel_scale_arcsec)
    ny, nx = data.shape
    if size > min(ny, nx):
        raise InputFileError(f"{path}: image is {nx}x{ny} px (after resampling), smaller than the {size} px crop")
    crop = centre_crop(data, size)
    blank_in_crop = int((~np.isfinite(crop)).sum())
    if blank_in_crop:
        raise BlankImageError(
            f"{path}: {blank_in_crop} of the {size}x{size} px of the central crop are blank (NaN, or within "
            "reach of a blank pixel or the image edge after smoothing): incomplete coverage"
        )
    reason = _blank_reason(crop)
    if reason:
        raise BlankImageError(f"{path}: central crop: {reason}")
    clip_level = None
    if dataset == "lotss":
        crop = np.clip(crop, 0.0, None)
        if crop.max() <= 0.0:
            raise BlankImageError(f"{path}: no pixel of the central crop is positive: nothing to scale")
    else:
        clip_level = first_clip_level(data)
        crop = np.clip(crop, clip_level, None)
        if crop.max() <= clip_level:
            raise BlankImageError(
                f"{path}: no pixel of the central crop is above median + 3 sigma of the cutout "
                f"({clip_level:.3g} Jy/beam): nothing to scale"
            )
    return PreparedImage(minmax_scale(crop), float(crop.max()), final_beam, beam_source, out_scale,
                         clip_level, int((~np.isfinite(data)).sum()))


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


def _list_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
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
    return files


_D = IMAGESET_DEFAULTS


def image_set_from_fits(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    dataset: str,
    size: int = _D["size"],
    pixel_scale_arcsec: float | None = _D["pixel_scale_arcsec"],
    beam_arcsec: float | None = _D["beam_arcsec"],
    target_beam_arcsec: float | None = _D["target_beam_arcsec"],
    unit: str | None = _D["unit"],
    frequency_hz: float | None = _D["frequency_hz"],
    label_pattern: str | None = _D["label_pattern"],
    label_map: Mapping[str, str] | None = None,
    class_names: Sequence[str] = tuple(_D["class_names"]),
    skip_unlabelled: bool = _D["skip_unlabelled"],
    on_blank: str = _D["on_blank"],
) -> dict:
    """Write FITS cutouts as an image set (HDF5, the layout of the training sets).

    Settings and their defaults are those of ``workflow/schemas/imagesets.schema.yaml``.

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
        Resample every image to this pixel scale (arcsec) after matching the
        beams (anti-aliased when coarsening; :func:`prepare_image`).  Without it
        all images must share one pixel scale (1% tolerance).
    beam_arcsec : float, optional
        Circular beam FWHM (arcsec) for files whose header has no ``BMAJ``
        (said so in the log).
    target_beam_arcsec : float, optional
        Circular beam FWHM (arcsec) every image is convolved to.  Without it all
        images must share one beam (1%).
    unit : str, optional
        Pixel unit of files whose header has no ``BUNIT``.
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
    on_blank : {"error", "skip"}
        A blank file (no usable pixel, or blanks inside the crop): stop naming
        it, or leave it out with a warning naming it.

    Returns
    -------
    dict
        Counts and the header facts used, as written to the file's attributes.
    """
    if dataset not in SCALINGS:
        raise ConfigError(f"dataset must be one of {SCALINGS}, got {dataset!r}")
    if on_blank not in BLANK_POLICIES:
        raise ConfigError(f"on_blank must be one of {BLANK_POLICIES}, got {on_blank!r}")
    if size < 8:
        raise ConfigError(f"crop size must be >= 8 px, got {size}")
    if unit is not None:
        from radiogen.lotss.mosaic import jy_per_beam_scale

        try:
            jy_per_beam_scale(unit, path="configured unit")
        except InputFileError as err:
            raise ConfigError(f"imagesets unit: {err}") from None
    files = _list_files(paths)
    labels = None
    if label_pattern is not None:
        files, labels = _labels_from_names(files, label_pattern, dict(label_map or {}), class_names,
                                           skip_unlabelled)
        if not files:
            raise InputFileError(f"no file name matched a class with pattern {label_pattern!r}")

    prepared: list[PreparedImage] = []
    kept: list[int] = []
    centres, names, freqs = [], [], []
    no_freq, config_unit, skipped = [], [], []
    for index, path in enumerate(files):
        image = read_fits_image(path, unit=unit)
        if pixel_scale_arcsec is None and prepared and not np.isclose(
                image.pixel_scale_arcsec, prepared[0].pixel_scale_arcsec, rtol=_SCALE_TOLERANCE):
            raise InputFileError(
                f"{path}: pixel scale {image.pixel_scale_arcsec:.4g}\" differs from {names[0]}'s "
                f"{prepared[0].pixel_scale_arcsec:.4g}\"; give a pixel scale to resample to"
            )
        try:
            result = prepare_image(image, dataset=dataset, size=size, beam_arcsec=beam_arcsec,
                                   target_beam_arcsec=target_beam_arcsec, pixel_scale_arcsec=pixel_scale_arcsec)
        except BlankImageError as err:
            if on_blank == "error":
                raise BlankImageError(f"{err}; set on_blank: skip (--on-blank skip) to leave such files out") from None
            log.warning("%s; left out of the set (on_blank: skip)", err)
            skipped.append(path.name)
            continue
        if image.frequency_hz is None:
            if frequency_hz is None:
                raise InputFileError(f"{path}: header gives no frequency (RESTFRQ/FREQ/FREQ axis) "
                                     "and none was configured (frequency_hz)")
            no_freq.append(path.name)
        if image.unit_source == "config":
            config_unit.append(path.name)
        if result.n_blank_outside_crop:
            log.info("%s: %d blank (NaN) pixels outside the crop, left out of the statistics",
                     path.name, result.n_blank_outside_crop)
        if prepared and not result.beam.close_to(prepared[0].beam, _SCALE_TOLERANCE):
            raise InputFileError(
                f"{path}: beam {result.beam.describe()} ({result.beam_source}) differs from {names[0]}'s "
                f"{prepared[0].beam.describe()}; one set holds one resolution: give a target beam "
                "(target_beam_arcsec) to match them"
            )
        prepared.append(result)
        kept.append(index)
        centres.append(image.centre)
        names.append(path.name)
        freqs.append(image.frequency_hz if image.frequency_hz is not None else frequency_hz)
        if (index + 1) % 1000 == 0:
            log.info("%d/%d FITS files read", index + 1, len(files))
    if not prepared:
        raise InputFileError(f"all {len(files)} files are blank (left out: {', '.join(skipped)}); no image set")
    no_beam = [n for n, p in zip(names, prepared) if p.beam_source == "config"]
    if no_beam:
        log.warning("%d of %d files have no BMAJ: using the configured beam %g arcsec (e.g. %s)",
                    len(no_beam), len(prepared), beam_arcsec, no_beam[0])
    if config_unit:
        log.warning("%d of %d files have no BUNIT: using the configured unit %s (e.g. %s)",
                    len(config_unit), len(prepared), unit, config_unit[0])
    if no_freq:
        log.warning("%d of %d files give no frequency: using the configured %g Hz",
                    len(no_freq), len(prepared), frequency_hz)
    if skipped:
        log.warning("%d of %d files left out as blank: %s", len(skipped), len(files), ", ".join(skipped))
    if not np.allclose(freqs, freqs[0], rtol=_SCALE_TOLERANCE):
        odd = names[int(np.argmax(~np.isclose(freqs, freqs[0], rtol=_SCALE_TOLERANCE)))]
        raise InputFileError(f"{odd}: frequency differs from {names[0]}'s ({freqs[0]:g}); one set holds one survey")
    beam = prepared[0].beam
    summary = {
        "dataset": dataset,
        "n_images": len(prepared),
        "n_skipped_blank": len(skipped),
        "pixel_scale_arcsec": float(np.median([p.pixel_scale_arcsec for p in prepared])),
        "beam_arcsec": float(beam.major_arcsec),
        "beam_minor_arcsec": float(beam.minor_arcsec),
        "beam_pa_deg": float(beam.pa_deg),
        "beam_source": ("target" if target_beam_arcsec is not None
                        else "config" if no_beam else "header"),
        "beam_matched": target_beam_arcsec is not None,
        "frequency_hz": float(freqs[0]),
        "frequency_source": "config" if no_freq else "header",
        "unit_source": "config" if config_unit else "header",
        "scaling": dataset,
        "crop_size": int(size),
        "resampled": pixel_scale_arcsec is not None,
    }
    import h5py

    strings = h5py.string_dtype("utf-8")
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("images", data=np.stack([p.image for p in prepared]), compression="gzip",
                          compression_opts=4)
        h5.create_dataset("split", data=np.zeros(len(prepared), np.uint8))
        centres_arr = np.asarray(centres, dtype=np.float64)
        h5.create_dataset("ra", data=centres_arr[:, 0]).attrs["unit"] = "deg"
        h5.create_dataset("dec", data=centres_arr[:, 1]).attrs["unit"] = "deg"
        h5.create_dataset("source_name", data=np.asarray(names, dtype=object), dtype=strings)
        if dataset == "lotss":
            peaks = np.asarray([p.peak_jy_per_beam for p in prepared], np.float64)
            h5.create_dataset("peak_flux", data=peaks).attrs["unit"] = "Jy/beam"
        else:
            levels = np.asarray([p.clip_level for p in prepared], np.float64)
            h5.create_dataset("clip_level", data=levels).attrs["unit"] = "Jy/beam"
        if labels is not None:
            label_arr = np.asarray([labels[i] for i in kept], np.int64)
            h5.create_dataset("label", data=label_arr)
            h5.create_dataset("context", data=np.eye(len(class_names), dtype=np.float32)[label_arr])
            h5.attrs["class_names"] = json.dumps(list(class_names))
            summary["class_counts"] = {c: int((label_arr == i).sum()) for i, c in enumerate(class_names)}
        h5.attrs.update({k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in summary.items()})
        h5.attrs["skipped_blank"] = json.dumps(skipped)
        h5.attrs["source"] = "FITS files: " + ", ".join(sorted({str(Path(f).parent) for f in files}))
    log.info("wrote %s: %d images of %d px at %.3g\"/px (beam %s from %s, %.4g Hz from %s)",
             output, len(prepared), size, summary["pixel_scale_arcsec"], beam.describe(),
             summary["beam_source"], summary["frequency_hz"], summary["frequency_source"])
    return summary
