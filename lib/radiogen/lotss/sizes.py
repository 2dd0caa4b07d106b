"""Source size measured on a cutout: the maximum Feret diameter of a smoothed source mask.

One measure serves both ends of size conditioning: the training context
(``lotss.preprocess.size_source: feret``) and the evaluation, which measures
real and generated images with the settings the training set records.  The
authors' follow-up (A&A 700, A18, 2025) conditions on and measures the same
kind of size, the maximum Feret diameter of a smoothed 3-sigma source mask.

Steps, for one image (any units; only ratios to the noise matter):

1. background level and rms from the pixels farther than ``island_radius_px``
   from the centre (:func:`radiogen.skymap.stamps.background_level`: median and
   84th percentile, exact also when negatives were set to 0);
2. mask = pixels above level + ``island_threshold_sigma`` x rms;
3. smoothing: holes filled, a ``closing_px`` square binary closing (joins the
   one-pixel gaps that noise cuts into a faint contour), islands (8-connected)
   of fewer than ``min_island_px`` pixels dropped;
4. the source = the islands whose brightest pixel exceeds level +
   ``peak_threshold_sigma`` x rms and that reach within ``island_radius_px``
   of the centre (neighbours in the cutout are left out);
5. size = largest distance between two of its pixel centres + one pixel
   (:func:`radiogen.skymap.assemble.largest_extent_px`), times the pixel scale.

The size of an unresolved source is not one beam: its 3-sigma contour widens
with S/N (for a 6" beam at 1.5"/px, medians of 6.9" at 5 sigma and 18.6" at 1000
sigma), so the measure correlates with peak flux even for point sources.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from radiogen.config import section_defaults
from radiogen.errors import ConfigError

__all__ = ["FeretSettings", "source_mask", "feret_size_px", "feret_sizes"]

#: ``lotss.preprocess.feret`` defaults (the schema is their only source).
_DEFAULTS = section_defaults("lotss.preprocess")["feret"]
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class FeretSettings:
    """Thresholds and smoothing of the size measure (``lotss.preprocess.feret`` in the schema)."""

    island_threshold_sigma: float = _DEFAULTS["island_threshold_sigma"]
    peak_threshold_sigma: float = _DEFAULTS["peak_threshold_sigma"]
    island_radius_px: float = _DEFAULTS["island_radius_px"]
    closing_px: int = _DEFAULTS["closing_px"]
    min_island_px: int = _DEFAULTS["min_island_px"]

    @classmethod
    def from_mapping(cls, mapping: dict | None, *, source: str = "lotss.preprocess.feret") -> "FeretSettings":
        """Build from a (config or file attribute) mapping; unknown keys or bad values raise ConfigError."""
        mapping = dict(mapping or {})
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        try:
            values = {k: (int(v) if fields[k] == "int" else float(v)) for k, v in mapping.items()}
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {err}") from None
        return cls(**values)

    def __post_init__(self):
        for name in ("island_threshold_sigma", "peak_threshold_sigma", "island_radius_px"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"lotss.preprocess.feret.{name}: must be > 0, got {value}")
        for name in ("closing_px", "min_island_px"):
            if getattr(self, name) < 1:
                raise ConfigError(f"lotss.preprocess.feret.{name}: must be >= 1, got {getattr(self, name)}")

    def as_dict(self) -> dict:
        """The settings as a plain dict (JSON and HDF5 attributes)."""
        return dataclasses.asdict(self)


def source_mask(image: np.ndarray, *, settings: FeretSettings) -> np.ndarray:
    """Boolean mask of the central source after smoothing (steps 1-4 of the module docstring)."""
    from radiogen.skymap.stamps import background_level

    image = np.asarray(image, dtype=np.float64)
    ny, nx = image.shape
    gy, gx = np.mgrid[:ny, :nx]
    radius2 = (gx - nx // 2) ** 2 + (gy - ny // 2) ** 2
    outside = radius2 > settings.island_radius_px**2
    level, rms = background_level(image[outside] if outside.sum() >= 50 else image)
    mask = ndimage.binary_fill_holes(image > level + settings.island_threshold_sigma * rms)
    if settings.closing_px > 1:
        # padded, so that the closing's erosion does not eat pixels at the cutout's edge
        pad = settings.closing_px
        closed = ndimage.binary_closing(np.pad(mask, pad), structure=np.ones((settings.closing_px,) * 2))
        mask = ndimage.binary_fill_holes(closed[pad:-pad, pad:-pad])
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    index = np.arange(1, n + 1)
    pixels = ndimage.sum_labels(np.ones_like(image), labels, index)
    peaks = ndimage.maximum(image, labels, index)
    nearest = ndimage.minimum(radius2, labels, index)
    keep = index[(pixels >= settings.min_island_px)
                 & (peaks > level + settings.peak_threshold_sigma * rms)
                 & (nearest <= settings.island_radius_px**2)]
    return np.isin(labels, keep)


def feret_size_px(image: np.ndarray, *, settings: FeretSettings) -> float:
    """Maximum Feret diameter of the image's smoothed source mask, pixels (NaN: no source)."""
    from radiogen.skymap.assemble import largest_extent_px

    mask = source_mask(image, settings=settings)
    return float(largest_extent_px(mask)) if mask.any() else np.nan


def feret_sizes(images, *, pixel_scale_arcsec: float, settings: FeretSettings | None = None) -> np.ndarray:
    """Size of each image's source, arcsec: :func:`feret_size_px` x pixel scale (NaN: no source).

    Parameters
    ----------
    images : array_like
        (N, H, W) or (N, 1, H, W) images, e.g. min-max scaled cutouts.
    pixel_scale_arcsec : float, keyword-only
        Pixel side, arcsec.
    settings : FeretSettings, optional, keyword-only
        Default: the schema's ``lotss.preprocess.feret``.
    """
    settings = settings or FeretSettings()
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {images.shape}")
    return np.array([feret_size_px(image, settings=settings) for image in images], dtype=np.float64) \
        * float(pixel_scale_arcsec)
