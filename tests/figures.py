"""What a saved matplotlib figure shows: panel titles and the arrays drawn in its panels."""

from __future__ import annotations

import numpy as np


def panels(fig) -> list:
    """Axes of ``fig`` that are visible panels (colour bars included)."""
    return [ax for ax in fig.axes if ax.get_visible()]


def shown_arrays(ax) -> list[np.ndarray]:
    """Arrays drawn with ``imshow`` in ``ax``."""
    return [np.ma.filled(image.get_array().astype(np.float64), np.nan) for image in ax.get_images()]


def tiles(mosaic: np.ndarray, size: tuple[int, int], *, pad: int = 2) -> list[np.ndarray]:
    """The images of a :func:`radiogen.sampler.plots.tile` mosaic (blank cells left out)."""
    h, w = size
    out = []
    for top in range(0, mosaic.shape[0], h + pad):
        for left in range(0, mosaic.shape[1], w + pad):
            cell = mosaic[top:top + h, left:left + w]
            if cell.shape == (h, w) and not np.isnan(cell).all():
                out.append(cell)
    return out


def drawn_from(cells: list[np.ndarray], images: np.ndarray, *, atol: float = 1e-6) -> list[int]:
    """Index into ``images`` of each cell; fails when a cell is none of them."""
    found = []
    for cell in cells:
        matches = [k for k, image in enumerate(images) if np.allclose(cell, image, atol=atol)]
        assert matches, "a panel shows an image that is not in the set"
        found.append(matches[0])
    return found
