"""Figures of the FIRST dataset: random examples per class (paper Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiogen.first.dataset import CLASS_NAMES, PIXEL_SCALE_ARCSEC
from radiogen.seeds import generator

__all__ = ["plot_examples"]


def plot_examples(
    images: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    *,
    per_class: int = 16,
    seed: int,
    title: str = "FIRST",
) -> None:
    """Grid of ``per_class`` random images per class, one panel per class.

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) in [0, 1].
    labels : numpy.ndarray
        (N,) labels 0..3.
    path : str or Path
        Output PNG (written atomically).
    per_class : int
        Images per class panel (a square number fills the grid).
    seed : int
        Global seed; the examples come from its ``first.examples`` stream.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from radiogen.io import save_figure

    rng = generator(seed, "first.examples")
    side = int(np.ceil(np.sqrt(per_class)))
    fig = plt.figure(figsize=(4 * len(CLASS_NAMES), 4.4), layout="constrained")
    panels = fig.subfigures(1, len(CLASS_NAMES))
    extent_arcsec = images.shape[-1] * PIXEL_SCALE_ARCSEC
    for k, (panel, name) in enumerate(zip(panels, CLASS_NAMES)):
        members = np.flatnonzero(np.asarray(labels) == k)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        axes = panel.subplots(side, side, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, index in zip(axes.flat, chosen):
            ax.imshow(images[index], cmap="inferno", vmin=0.0, vmax=1.0)
        panel.suptitle(f"({'abcd'[k]}) {name}  [{len(members)} images]")
    fig.suptitle(f"{title}: random examples, {images.shape[-1]} px = {extent_arcsec:.0f} arcsec per side")
    save_figure(fig, path, dpi=110)
    plt.close(fig)
