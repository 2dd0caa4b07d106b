"""Image noise correlated like a restoring beam, and the measurement that checks it.

In a restored radio image the noise autocorrelation has the shape of the
restoring beam.  White noise n convolved with a kernel k has the
autocorrelation k ⋆ k, whose Fourier transform is |K|^2.  For the
autocorrelation to be the beam B we need |K|^2 = B-hat, i.e. K = sqrt(B-hat):
for a Gaussian beam of covariance C (pixels^2) the beam's transfer function
is exp(-2 pi^2 f^T C f), its square root exp(-pi^2 f^T C f) is a Gaussian of
covariance C / 2 (per axis sigma_b / sqrt(2)).  Convolving with the beam
itself (sigma_b) gives an autocorrelation of sigma_b sqrt(2), sqrt(2) too wide.

Both noise makers of radiogen use :func:`beam_correlated_noise`: the classical
simulated survey (:mod:`radiogen.simulate`) and the map's image-plane
observation (:mod:`radiogen.skymap.assemble`).
"""

from __future__ import annotations

import numpy as np
from scipy import fft

__all__ = ["FWHM_PER_SIGMA", "beam_covariance_px", "beam_correlated_noise", "autocorrelation",
           "autocorrelation_fwhm_px"]

#: FWHM / sigma of a Gaussian, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def beam_covariance_px(bmaj_px: float, bmin_px: float | None = None, bpa_deg: float = 0.0) -> np.ndarray:
    """Covariance matrix (pixels^2, (y, x) order) of a Gaussian beam given by its FWHMs.

    Parameters
    ----------
    bmaj_px, bmin_px : float
        FWHM of the major and minor axes in pixels (``bmin_px`` None: circular).
    bpa_deg : float
        Position angle of the major axis, degrees east of north, for a map
        with north up (+y) and east left (-x), as FITS ``BPA``.
    """
    bmin_px = bmaj_px if bmin_px is None else bmin_px
    sigma_major, sigma_minor = bmaj_px / FWHM_PER_SIGMA, bmin_px / FWHM_PER_SIGMA
    pa = np.deg2rad(bpa_deg)
    major = np.array([np.cos(pa), -np.sin(pa)])  # (y, x): north is +y, east is -x
    minor = np.array([np.sin(pa), np.cos(pa)])
    return sigma_major**2 * np.outer(major, major) + sigma_minor**2 * np.outer(minor, minor)


def beam_correlated_noise(rng: np.random.Generator, shape: tuple[int, int], *, bmaj_px: float,
                          bmin_px: float | None = None, bpa_deg: float = 0.0) -> np.ndarray:
    """Gaussian noise of unit rms whose autocorrelation is the beam (float32, periodic).

    White noise filtered in Fourier space by the square root of the beam's
    transfer function, exp(-pi^2 f^T C f) (a Gaussian kernel of covariance
    C / 2, C the beam covariance from :func:`beam_covariance_px`), then scaled
    to unit standard deviation.  The field wraps around (periodic
    convolution), so its statistics are the same everywhere, edges included.
    """
    ny, nx = shape
    cov = beam_covariance_px(bmaj_px, bmin_px, bpa_deg)
    white = rng.standard_normal((ny, nx), dtype=np.float32)
    spectrum = fft.rfft2(white, workers=-1)
    del white
    fy = fft.fftfreq(ny).astype(np.float32)[:, None]
    fx = fft.rfftfreq(nx).astype(np.float32)[None, :]
    # sqrt of the beam's transfer function exp(-2 pi^2 f^T C f)
    spectrum *= np.exp(-np.pi**2 * (cov[0, 0] * fy**2 + 2.0 * cov[0, 1] * fy * fx + cov[1, 1] * fx**2)
                       ).astype(np.float32)
    noise = fft.irfft2(spectrum, s=(ny, nx), workers=-1).astype(np.float32, copy=False)
    noise /= noise.std(dtype=np.float64)
    return noise


def autocorrelation(field: np.ndarray) -> np.ndarray:
    """Normalised circular autocorrelation of a field (mean removed), zero lag at the centre."""
    field = np.asarray(field, dtype=np.float64)
    field = field - field.mean()
    power = np.abs(np.fft.fft2(field)) ** 2
    acf = np.fft.fftshift(np.fft.ifft2(power).real)
    return acf / acf.max()


def autocorrelation_fwhm_px(field: np.ndarray, *, angle_deg: float = 0.0) -> float:
    """FWHM in pixels of a field's autocorrelation along a direction.

    The direction is a position angle like ``BPA`` (degrees east of north:
    0 along +y, 90 along -x).  The half-maximum crossing is found by linear
    interpolation of the autocorrelation sampled along that line.
    """
    acf = autocorrelation(field)
    cy, cx = acf.shape[0] // 2, acf.shape[1] // 2
    pa = np.deg2rad(angle_deg)
    t = np.arange(0.0, min(cy, cx) / 2, 0.05)
    from scipy.ndimage import map_coordinates

    profile = map_coordinates(acf, [cy + t * np.cos(pa), cx - t * np.sin(pa)], order=3)
    below = np.nonzero(profile < 0.5)[0]
    if below.size == 0:
        raise ValueError("autocorrelation does not fall to half its maximum within the field")
    i = below[0]
    half = t[i - 1] + (profile[i - 1] - 0.5) / (profile[i - 1] - profile[i]) * (t[i] - t[i - 1])
    return float(2.0 * half)
