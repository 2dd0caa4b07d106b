"""Figures of the PyBDSF analysis (paper Figs. 8, 9, 15 and 16).

* :func:`example_figure`: images of each set with their Gaussian model below,
  picked at increasing A50% quantiles, the A50% region outlined in white;
* :func:`distribution_figure`: model flux and A50% histograms of several sets
  on shared logarithmic bins with 1-sigma Poisson bands.  The model flux is
  that of the min-max-scaled images, as in the paper's Fig. 15; where every
  set has a peak flux (LoTSS) a third panel shows it in Jy.  The columns come
  from :func:`radiogen.evaluation.pybdsf.model_flux_columns`, the rule the
  summary tables use too.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from radiogen.evaluation.imagesets import open_image_set
from radiogen.evaluation.pybdsf import MODEL_FLUX_UNITS, a50_mask
from radiogen.evaluation.pybdsf_shards import model_flux_columns, read_models
from radiogen.evaluation.stats import histogram_with_errors, plot_histograms, shared_bins
from radiogen.io import save_figure, write_json_atomic

__all__ = ["pick_examples", "example_figure", "distribution_figure"]


def pick_examples(table: pd.DataFrame, *, n: int = 6) -> list[int]:
    """Indices of ``n`` successfully modelled images at evenly spaced A50% quantiles."""
    ok = table[table["status"] == "ok"].sort_values(["a50_pixels", "index"])
    if ok.empty:
        return []
    positions = np.unique(np.round(np.linspace(0.05, 0.95, n) * (len(ok) - 1)).astype(int))
    return [int(i) for i in ok["index"].to_numpy()[positions]]


def example_figure(sets: dict[str, dict], output: str | os.PathLike, *, n: int = 6) -> None:
    """Images and PyBDSF models with the A50% contour, one pair of rows per set.

    Parameters
    ----------
    sets : dict
        Label -> {"images": image set HDF5, "table": merged PyBDSF CSV,
        "models": list of shard model HDF5 files}.
    output : path-like
        Figure file.
    n : int
        Examples per set (A50% quantiles 5%..95%).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 * len(sets), n, figsize=(1.9 * n, 4.1 * len(sets)),
                             squeeze=False, constrained_layout=True)
    for row, (label, spec) in enumerate(sets.items()):
        table = pd.read_csv(spec["table"])
        picks = pick_examples(table, n=n)
        models = read_models(spec["models"], picks)
        with open_image_set(spec["images"]) as image_set:
            images = {i: image_set.images(i, i + 1)[0] for i in picks}
        for col in range(n):
            ax_img, ax_mod = axes[2 * row, col], axes[2 * row + 1, col]
            for ax in (ax_img, ax_mod):
                ax.set_xticks([])
                ax.set_yticks([])
            if col >= len(picks):
                ax_img.axis("off")
                ax_mod.axis("off")
                continue
            index = picks[col]
            image, model = images[index], models[index]
            entry = table.set_index("index").loc[index]
            ax_img.imshow(image, origin="lower", cmap="inferno", vmin=0, vmax=1)
            ax_mod.imshow(model, origin="lower", cmap="inferno", vmin=0,
                          vmax=max(float(model.max()), 1e-6))
            ax_mod.contour(a50_mask(model).astype(float), levels=[0.5], colors="white",
                           linewidths=0.8)
            ax_mod.set_xlabel(f"A50={entry['a50_pixels']:.0f} px, {int(entry['n_gaussians'])} G",
                              fontsize="x-small")
            if col == 0:
                ax_img.set_ylabel(f"{label}\nimage", fontsize="small")
                ax_mod.set_ylabel("PyBDSF model", fontsize="small")
    save_figure(fig, output, dpi=150)
    plt.close(fig)


def distribution_figure(tables: dict[str, str | os.PathLike], output: str | os.PathLike, *,
                        output_json: str | os.PathLike | None = None, bins: int = 40) -> dict:
    """Model flux and A50% distributions of several sets (paper Figs. 15 and 16).

    Panels: model flux of the scaled images (Fig. 15), A50% (Fig. 16), and the
    model flux in Jy when every set has it (LoTSS).  Only images with status
    ``ok`` enter; the failure counts are printed in the figure title.  Bins are
    logarithmic and shared between sets.  Returns (and optionally writes as
    JSON) ``flux_columns``, the histograms per column with their Poisson bounds
    and the status counts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    frames = {label: pd.read_csv(path) for label, path in tables.items()}
    flux_columns = model_flux_columns(*frames.values())
    result: dict = {"flux_columns": flux_columns, "status_counts": {}, "histograms": {}}
    ok = {label: t[t["status"] == "ok"] for label, t in frames.items()}
    for label, table in frames.items():
        result["status_counts"][label] = {k: int(v) for k, v in
                                          table["status"].value_counts().items()}
    sns.set_theme(style="ticks", context="paper")
    panels = [("model_flux", f"PyBDSF model flux [{MODEL_FLUX_UNITS['model_flux']}]"),
              ("a50_pixels", "A50% [pixels]")]
    panels += [(c, f"PyBDSF model flux [{MODEL_FLUX_UNITS[c]}]") for c in flux_columns[1:]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), constrained_layout=True)
    for ax, (column, xlabel) in zip(axes, panels):
        edges = shared_bins(*[t[column] for t in ok.values()], bins=bins, log=True)
        hists = {label: histogram_with_errors(t[column][t[column] > 0], edges)
                 for label, t in ok.items()}
        result["histograms"][column] = hists
        ax.set_xscale("log")
        plot_histograms(ax, hists, xlabel=xlabel)
    def _tally(counts: dict) -> str:
        total = max(sum(counts.values()), 1)
        return (f"{counts.get('failed', 0)} failed ({100 * counts.get('failed', 0) / total:.1f}%), "
                f"{counts.get('no_source', 0)} no source")

    failed = ", ".join(f"{label}: {_tally(counts)}" for label, counts in result["status_counts"].items())
    fig.suptitle(failed, fontsize="small")
    save_figure(fig, output, dpi=150)
    plt.close(fig)
    if output_json is not None:
        write_json_atomic(result, output_json)
    return result
