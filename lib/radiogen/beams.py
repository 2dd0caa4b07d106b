"""Elliptical Gaussian restoring beams: geometry, matching kernels, convolution.

A beam is described as in a FITS header: FWHM of its major and minor axes
(``BMAJ``, ``BMIN``) and the position angle of the major axis (``BPA``), east
of north.  Gaussians convolve by adding their covariance matrices, so an image
made with beam ``B_in`` reaches a wider beam ``B_target`` after convolution
with the Gaussian of covariance ``Sigma_target - Sigma_in``; that difference
must be positive semi-definite (no beam can be made narrower by smoothing).

Sky-plane coordinates here are (east, north) offsets in arcsec; pixel
coordinates are (x, y) = (column, row).  The FITS pixel-scale matrix (the
celestial WCS's ``PC x CDELT``) maps pixel offsets to (east, north).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FWHM_PER_SIGMA", "Beam", "matching_covariance", "convolve_gaussian"]

#: FWHM / sigma of a Gaussian, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Relative tolerance under which two beams count as equal (and a kernel as empty).
_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Beam:
    """An elliptical Gaussian beam.

    Attributes
    ----------
    major_arcsec, minor_arcsec : float
        FWHM of the major and minor axes, arcsec (``minor <= major``).
    pa_deg : float
        Position angle of the major axis, degrees east of north.
    """

    major_arcsec: float
    minor_arcsec: float
    pa_deg: float = 0.0

    @classmethod
    def circular(cls, fwhm_arcsec: float) -> "Beam":
        """A circular beam of FWHM ``fwhm_arcsec``."""
        return cls(float(fwhm_arcsec), float(fwhm_arcsec), 0.0)

    @classmethod
    def from_covariance(cls, covariance: np.ndarray) -> "Beam":
        """The beam whose (east, north) covariance is ``covariance`` (arcsec^2)."""
        values, vectors = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
        values = np.clip(values, 0.0, None)
        east, north = vectors[:, 1]  # eigenvector of the larger eigenvalue: the major axis
        pa = float(np.degrees(np.arctan2(east, north))) % 180.0
        return cls(float(np.sqrt(values[1]) * FWHM_PER_SIGMA), float(np.sqrt(values[0]) * FWHM_PER_SIGMA), pa)

    @property
    def is_circular(self) -> bool:
        return abs(self.major_arcsec - self.minor_arcsec) <= _TOLERANCE * self.major_arcsec

    def covariance(self) -> np.ndarray:
        """(east, north) covariance matrix, arcsec^2: R diag(sigma_maj^2, sigma_min^2) R^T."""
        sigma_major = self.major_arcsec / FWHM_PER_SIGMA
        sigma_minor = self.minor_arcsec / FWHM_PER_SIGMA
        pa = np.radians(self.pa_deg)
        major_axis = np.array([np.sin(pa), np.cos(pa)])  # (east, north) unit vector at PA east of north
        minor_axis = np.array([np.cos(pa), -np.sin(pa)])
        return (sigma_major**2 * np.outer(major_axis, major_axis)
                + sigma_minor**2 * np.outer(minor_axis, minor_axis))

    def solid_angle_arcsec2(self) -> float:
        """Beam area, arcsec^2: Omega = pi theta_maj theta_min / (4 ln 2)."""
        return float(np.pi * self.major_arcsec * self.minor_arcsec / (4.0 * np.log(2.0)))

    def describe(self) -> str:
        if self.is_circular:
            return f'{self.major_arcsec:.4g}" circular'
        return f'{self.major_arcsec:.4g}" x {self.minor_arcsec:.4g}" at PA {self.pa_deg:.4g} deg'

    def close_to(self, other: "Beam", rtol: float) -> bool:
        """Whether the two beams' covariances agree to ``rtol`` of the larger axis."""
        scale = max(self.major_arcsec, other.major_arcsec) ** 2 / FWHM_PER_SIGMA**2
        return bool(np.abs(self.covariance() - other.covariance()).max() <= rtol * scale)


def matching_covariance(beam: Beam, target: Beam) -> np.ndarray | None:
    """Covariance (arcsec^2, east/north) of the kernel that turns ``beam`` into ``target``.

    Returns None where the kernel is not positive semi-definite, i.e. where
    ``beam`` is wider than ``target`` along some direction.  Equal beams give
    a zero matrix.
    """
    kernel = target.covariance() - beam.covariance()
    values, vectors = np.linalg.eigh(kernel)
    scale = target.covariance().trace()
    if values.min() < -_TOLERANCE * scale:
        return None
    values = np.where(values < _TOLERANCE * scale, 0.0, values)
    return (vectors * values) @ vectors.T


def convolve_gaussian(data: np.ndarray, covariance_px: np.ndarray, *,
                      min_weight: float = 0.99) -> np.ndarray:
    """Convolve an image with a unit-sum Gaussian, treating NaN as missing data.

    The Gaussian's transfer function ``exp(-2 pi^2 k^T Sigma k)`` (k in cycles
    per pixel) is applied in Fourier space, so that kernels narrower than a
    pixel are exact too.  The image is zero-padded (no wrap-around); missing
    pixels (NaN, and everything outside the image) carry no weight, and the
    result is renormalised by the kernel weight that fell on valid pixels
    (normalised convolution).  Pixels where that weight is below
    ``min_weight`` depend on missing data and come back NaN.

    Parameters
    ----------
    data : ndarray
        2-D image; NaN marks missing pixels.
    covariance_px : ndarray
        2x2 kernel covariance in pixel units, (x, y) order.
    min_weight : float
        Least fraction of the kernel that must fall on valid pixels.

    Returns
    -------
    ndarray
        float64 image of the same shape, the sum of the kernel being 1.
    """
    covariance_px = np.asarray(covariance_px, dtype=np.float64)
    if not np.any(covariance_px):
        return np.array(data, dtype=np.float64)
    valid = np.isfinite(data)
    sigma_max = float(np.sqrt(np.linalg.eigvalsh(covariance_px).max()))
    pad = int(np.ceil(5.0 * sigma_max)) + 2
    ny, nx = data.shape
    shape = (ny + 2 * pad, nx + 2 * pad)
    filled = np.zeros(shape)
    weight = np.zeros(shape)
    filled[pad:pad + ny, pad:pad + nx] = np.where(valid, data, 0.0)
    weight[pad:pad + ny, pad:pad + nx] = valid
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    # Fourier transform of a unit-sum Gaussian of covariance Sigma: exp(-2 pi^2 k^T Sigma k)
    quadratic = covariance_px[0, 0] * kx**2 + 2.0 * covariance_px[0, 1] * kx * ky + covariance_px[1, 1] * ky**2
    transfer = np.exp(-2.0 * np.pi**2 * quadratic)
    smoothed = np.fft.irfft2(np.fft.rfft2(filled) * transfer, s=shape)[pad:pad + ny, pad:pad + nx]
    kept = np.fft.irfft2(np.fft.rfft2(weight) * transfer, s=shape)[pad:pad + ny, pad:pad + nx]
    enough = kept >= min_weight
    return np.where(enough, smoothed / np.where(enough, kept, 1.0), np.nan)
