"""Figure of example cutouts per group (clean, NaN-containing, partly off the mosaic)."""

from __future__ import annotations

import os

import numpy as np

from radiogen.io import open_hdf5, read_table_hdf5, require_datasets, save_figure
from radiogen.seeds import generator

__all__ = ["plot_cutout_examples"]


def plot_cutout_examples(
    cutouts_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    per_row: int = 8,
    seed: int = 0,
) -> None:
    """Figure of random cutouts per group, for the workflow report.

    Rows are the true ``Morphology`` when the catalogue has it (simulated
    survey), else the flag state (complete / contains NaN / partial).  Each
    panel is shown with its own asinh stretch between the 1st percentile and
    the maximum; NaN pixels are grey.  Titles give the catalogue
    ``Total_flux`` (mJy) and ``LAS`` (arcsec).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = generator(seed, "lotss.cutout_examples")
    with open_hdf5(cutouts_path) as h5:
        require_datasets(h5, ["images", "flag_nan", "flag_partial", "catalogue"])
        catalogue = read_table_hdf5(h5["catalogue"])
        flag_nan, flag_partial = h5["flag_nan"][()], h5["flag_partial"][()]
        if "Morphology" in catalogue.columns:
            groups = {m: np.flatnonzero(catalogue["Morphology"].to_numpy() == m)
                      for m in sorted(set(catalogue["Morphology"]))}
        else:
            groups = {"complete": np.flatnonzero(~flag_nan),
                      "contains NaN": np.flatnonzero(flag_nan & ~flag_partial),
                      "partial (off mosaic)": np.flatnonzero(flag_partial)}
        groups = {k: np.sort(rng.permutation(v)[:per_row]) for k, v in groups.items() if len(v)}
        images = {k: h5["images"][v] if len(v) else np.zeros((0, 1, 1)) for k, v in groups.items()}
    nrows = max(len(groups), 1)
    fig, axes = plt.subplots(nrows, per_row, figsize=(1.6 * per_row, 1.8 * nrows), squeeze=False)
    cmap = matplotlib.colormaps["inferno"].copy()
    cmap.set_bad("0.6")
    for ax in axes.ravel():
        ax.axis("off")
    for r, (name, idx) in enumerate(groups.items()):
        axes[r, 0].set_title(name, loc="left", fontsize=9, fontweight="bold", pad=14)
        for c, (i, image) in enumerate(zip(idx, images[name])):
            finite = image[np.isfinite(image)]
            if finite.size:
                lo, hi = np.percentile(finite, 1), finite.max()
                shown = np.arcsinh((image - lo) / max(hi - lo, 1e-12) * 10) / np.arcsinh(10)
            else:
                shown = image
            axes[r, c].imshow(shown, origin="lower", cmap=cmap, vmin=0, vmax=1)
            label = f"{catalogue['Total_flux'][i]:.1f} mJy"
            if "LAS" in catalogue.columns and np.isfinite(catalogue["LAS"][i]):
                label += f', {catalogue["LAS"][i]:.0f}"'
            axes[r, c].text(0.02, 0.98, label, transform=axes[r, c].transAxes, va="top",
                            fontsize=6, color="white")
    fig.tight_layout()
    save_figure(fig, out_path, dpi=110)
    plt.close(fig)
