"""Elliptical Gaussians in PyBDSF's convention, evaluated without PyBDSF.

The map draws the Gaussians that PyBDSF fits to generated sources (the tiles'
source models) and deconvolves them for the intrinsic sky (the assembly).  One
function serves both, so the two cannot disagree on the orientation convention;
it is written here rather than imported from ``bdsf`` because the assembly runs
in the data environment, which has no PyBDSF (whose import also changes numpy's
error state).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pybdsf_gaussian"]


def pybdsf_gaussian(params, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A Gaussian [peak, x0, y0, FWHM major, FWHM minor (px), theta (deg)] in PyBDSF's convention.

    The same function as ``bdsf.functions.gaussian_fcn`` (theta + 90 deg from the x axis; x, y
    as PyBDSF's (x, y)-ordered grids; tested against it).
    """
    peak, x0, y0, major, minor, theta = (float(v) for v in params)
    fwhm_per_sigma = 2.0 * np.sqrt(2.0 * np.log(2.0))
    angle = np.radians(theta + 90.0)
    along = ((x - x0) * np.cos(angle) + (y - y0) * np.sin(angle)) / (major / fwhm_per_sigma)
    across = (-(x - x0) * np.sin(angle) + (y - y0) * np.cos(angle)) / (minor / fwhm_per_sigma)
    return peak * np.exp(-(along * along + across * across) / 2.0)
