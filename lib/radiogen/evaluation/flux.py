"""Flux conditioning: positive residual against peak flux (paper Sect. 5.2, Fig. 17).

Low-peak-flux images show more background relative to the source once scaled
to [0, 1], so their positive residual against the PyBDSF source model,
``Delta+ = sum_i (x_i - m_i) Theta(x_i - m_i)``, is larger: a negative
correlation that a peak-flux-conditioned model must reproduce.  Numbers:

* Spearman rank correlation ``rho`` between peak flux and ``Delta+`` per set
  (rank-based, so the same for the peak flux, its logarithm or its
  standardised Box-Cox transform);
* the energy distance between the real and a generated point cloud in the
  plane ``(log10 peak flux, Delta+)``, each axis standardised by the real
  set's mean and standard deviation (Szekely & Rizzo 2013):
  ``D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|``, reported as ``D``, next to the
  same distance between two disjoint seeded halves of the real set (noise floor).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import scipy.stats
from scipy.spatial.distance import cdist

from radiogen.errors import InputFileError
from radiogen.io import save_figure, write_json_atomic

__all__ = ["flux_points", "energy_distance_2d", "flux_conditioning", "scatter_figure"]

log = logging.getLogger(__name__)


def flux_points(table: pd.DataFrame, *, source: str = "") -> pd.DataFrame:
    """``(log10 peak flux, Delta+)`` of the successfully modelled images of a PyBDSF table.

    Raises
    ------
    InputFileError
        The table lacks ``peak_flux_jy``/``delta_plus`` or has no usable row
        (the image set had no ``/peak_flux``).
    """
    for column in ("peak_flux_jy", "delta_plus", "status"):
        if column not in table.columns:
            raise InputFileError(f"{source}: PyBDSF table lacks column {column!r}")
    ok = table[(table["status"] == "ok") & (table["peak_flux_jy"] > 0)
               & np.isfinite(table["delta_plus"])]
    if ok.empty:
        raise InputFileError(
            f"{source}: no image with a PyBDSF model and a positive peak flux "
            "(flux conditioning needs sets with /peak_flux)"
        )
    return pd.DataFrame({
        "index": ok["index"].to_numpy(),
        "log_peak": np.log10(ok["peak_flux_jy"].to_numpy(dtype=np.float64)),
        "delta_plus": ok["delta_plus"].to_numpy(dtype=np.float64),
    })


def energy_distance_2d(a: np.ndarray, b: np.ndarray, *, max_points: int = 2000,
                       rng: np.random.Generator | None = None) -> float:
    """Energy distance ``D`` between two point clouds (n, d) and (m, d).

    ``D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with Euclidean norms
    (V-statistic).  Clouds larger than ``max_points`` are subsampled without
    replacement with ``rng`` to bound the O(n m) cost.
    """
    rng = rng or np.random.default_rng(0)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) > max_points:
        a = a[rng.choice(len(a), max_points, replace=False)]
    if len(b) > max_points:
        b = b[rng.choice(len(b), max_points, replace=False)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    d2 = 2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean()
    return float(np.sqrt(max(d2, 0.0)))


def flux_conditioning(tables: dict[str, str | os.PathLike], *, reference: str,
                      output_json: str | os.PathLike, seed: int,
                      max_points: int = 2000) -> dict:
    """Spearman correlations and 2-D energy distances for merged PyBDSF tables.

    Parameters
    ----------
    tables : dict
        Set name -> merged PyBDSF CSV (``merge_shards`` output).
    reference : str
        Name of the real set in ``tables``; distances are to this set.
    output_json : path-like
        Result file (see the README for its keys).
    seed : int
        Seed of the subsampling and of the split into halves.
    """
    points = {name: flux_points(pd.read_csv(path), source=str(path))
              for name, path in tables.items()}
    if reference not in points:
        raise InputFileError(f"reference set {reference!r} not among {sorted(points)}")
    ref = points[reference][["log_peak", "delta_plus"]].to_numpy()
    centre, scale = ref.mean(axis=0), ref.std(axis=0)
    scale[scale == 0] = 1.0
    rng = np.random.default_rng([int(seed), 17])
    result: dict = {"reference": reference, "max_points": max_points, "seed": int(seed),
                    "axes": ["log10 peak flux (Jy/beam)", "Delta+ (scaled image units)"],
                    "standardisation": {"mean": centre, "std": scale}, "sets": {}}
    perm = rng.permutation(len(ref))
    half_a, half_b = ref[perm[: len(ref) // 2]], ref[perm[len(ref) // 2:]]
    noise_floor = energy_distance_2d((half_a - centre) / scale, (half_b - centre) / scale,
                                     max_points=max_points, rng=rng)
    for name, frame in points.items():
        table = pd.read_csv(tables[name])
        rho, p_value = scipy.stats.spearmanr(frame["log_peak"], frame["delta_plus"])
        cloud = (frame[["log_peak", "delta_plus"]].to_numpy() - centre) / scale
        entry = {
            "n_images": int(len(table)),
            "n_used": int(len(frame)),
            "n_failed": int((table["status"] == "failed").sum()),
            "n_no_source": int((table["status"] == "no_source").sum()),
            "spearman_rho": float(rho),
            "spearman_p": float(p_value),
        }
        if name != reference:
            entry["energy_distance"] = energy_distance_2d(
                (ref - centre) / scale, cloud, max_points=max_points, rng=rng)
            entry["energy_distance_noise_floor"] = noise_floor
        result["sets"][name] = entry
    write_json_atomic(result, output_json)
    return result


def scatter_figure(tables: dict[str, str | os.PathLike], output: str | os.PathLike, *,
                   summary: dict | None = None, max_points: int = 5000, seed: int = 0) -> None:
    """Scatter of Delta+ against log10 peak flux, one panel per set (paper Fig. 17).

    At most ``max_points`` seeded random points per set are drawn to keep the
    figure readable; axes are shared so the panels compare directly.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="ticks", context="paper")
    colours = sns.color_palette("colorblind", len(tables))
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.8), sharex=True,
                             sharey=True, constrained_layout=True, squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, colour, (name, path) in zip(axes[0], colours, tables.items()):
        frame = flux_points(pd.read_csv(path), source=str(path))
        if len(frame) > max_points:
            frame = frame.iloc[rng.choice(len(frame), max_points, replace=False)]
        ax.scatter(frame["log_peak"], frame["delta_plus"], s=8, alpha=0.6, color=colour,
                   linewidths=0, rasterized=True)
        title = f"{name} (n={len(frame)})"
        if summary and name in summary.get("sets", {}):
            entry = summary["sets"][name]
            title += f"\nSpearman rho={entry['spearman_rho']:.3f}"
            if "energy_distance" in entry:
                title += (f", energy dist.={entry['energy_distance']:.3f}"
                          f" (floor {entry['energy_distance_noise_floor']:.3f})")
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("log10 peak flux [Jy/beam]")
    axes[0][0].set_ylabel(r"$\Delta_+$ (sum of positive residual, scaled units)")
    axes[0][0].set_yscale("log")
    save_figure(fig, output, dpi=150)
    plt.close(fig)
