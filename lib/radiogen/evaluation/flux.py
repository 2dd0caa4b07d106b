"""Flux conditioning: positive residual against peak flux (paper Sect. 5.2, Fig. 17).

Low-peak-flux images show more background relative to the source once scaled
to [0, 1], so their positive residual against the PyBDSF source model,
``Delta+ = sum_i (x_i - m_i) Theta(x_i - m_i)``, is larger: a negative
correlation that a peak-flux-conditioned model must reproduce.  Numbers:

* Spearman rank correlation ``rho`` between peak flux and ``Delta+`` per set
  (rank-based, so the same for the peak flux, its logarithm or its
  standardised Box-Cox transform);
* the squared energy distance between the real and a generated point cloud in
  the plane ``(log10 peak flux, Delta+)``, each axis standardised by the real
  set's mean and standard deviation (Szekely & Rizzo 2013),
  ``D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|``, estimated by its unbiased
  U-statistic (:func:`energy_distance_sq`): its expectation is 0 for equal
  distributions at any set sizes, so a value can be negative.  Next to it,
  the same statistic between two parts of the real set of the comparison's
  sizes (the size-matched floor of :func:`radiogen.evaluation.distances.size_matched`)
  and the z-score of the comparison against that floor's spread.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import scipy.stats
from scipy.spatial.distance import cdist

from radiogen.errors import InputFileError, RadiogenError
from radiogen.evaluation.distances import size_matched
from radiogen.io import save_figure, write_json_atomic

__all__ = ["flux_points", "energy_distance_sq", "flux_conditioning", "scatter_figure"]

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


def energy_distance_sq(a, b) -> float:
    """Unbiased U-statistic of the squared energy distance between samples (n, d) and (m, d).

    ``D_u^2 = 2 sum_{i,j} |x_i - y_j| / (n m) - sum_{i!=j} |x_i - x_j| / (n (n-1))
    - sum_{i!=j} |y_i - y_j| / (m (m-1))`` with Euclidean norms (Szekely &
    Rizzo 2013, Sect. 3.1, with the within-sample means over distinct pairs).
    Leaving out the zero diagonal makes each mean unbiased for ``E|X - X'|``,
    so the expectation is exactly 0 when both samples come from one
    distribution; the value can be negative.  (The plug-in V-statistic keeps
    the diagonal and is biased upwards by about ``E|X - X'| (1/n + 1/m)``.)

    Raises
    ------
    RadiogenError
        A sample has fewer than 2 points, or the dimensions differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise RadiogenError(f"energy distance needs two (n>=2, d) samples of one dimension, "
                            f"got {a.shape} and {b.shape}")
    n, m = len(a), len(b)
    between = cdist(a, b).mean()
    # Means over i != j: the diagonal |x_i - x_i| = 0 adds nothing to the sum.
    within_a = cdist(a, a).sum() / (n * (n - 1))
    within_b = cdist(b, b).sum() / (m * (m - 1))
    return float(2.0 * between - within_a - within_b)


def flux_conditioning(tables: dict[str, str | os.PathLike], *, reference: str,
                      output_json: str | os.PathLike, seed: int,
                      max_points: int = 2000, floor_repeats: int = 10) -> dict:
    """Spearman correlations and size-matched 2-D energy distances for merged PyBDSF tables.

    The real set's points are split, in ``floor_repeats`` seeded partitions,
    into a reference part A and a held-out part B of m points, m the size
    of the smallest compared set (at most half the real set; see
    :func:`radiogen.evaluation.distances.size_matched_splits`).  Each
    compared set (m points of it) is compared with A; the floor is the same
    statistic between A and B, so both are measured at the same sizes.
    Parts larger than ``max_points`` are subsampled without replacement
    (which keeps the U-statistic unbiased).

    Parameters
    ----------
    tables : dict
        Set name -> merged PyBDSF CSV (``merge_shards`` output).
    reference : str
        Name of the real set in ``tables``; distances are to this set.
    output_json : path-like
        Result file (see the README for its keys).
    seed : int
        Seed of the partitions and of the subsampling.
    max_points : int, keyword-only
        Largest number of points of one side of a comparison.
    floor_repeats : int, keyword-only
        Number R of seeded partitions.
    """
    points = {name: flux_points(pd.read_csv(path), source=str(path))
              for name, path in tables.items()}
    if reference not in points:
        raise InputFileError(f"reference set {reference!r} not among {sorted(points)}")
    ref = points[reference][["log_peak", "delta_plus"]].to_numpy()
    centre, scale = ref.mean(axis=0), ref.std(axis=0)
    scale[scale == 0] = 1.0
    subsample_rng = np.random.default_rng([int(seed), 17])

    def capped(cloud: np.ndarray) -> np.ndarray:
        if len(cloud) <= max_points:
            return cloud
        return cloud[subsample_rng.choice(len(cloud), max_points, replace=False)]

    def metric(a, b) -> dict:
        return {"energy": energy_distance_sq(capped(a), capped(b))}

    clouds = {name: (frame[["log_peak", "delta_plus"]].to_numpy() - centre) / scale
              for name, frame in points.items()}
    compared = [name for name in points if name != reference]
    result: dict = {"reference": reference, "max_points": max_points, "seed": int(seed),
                    "axes": ["log10 peak flux (Jy/beam)", "Delta+ (scaled image units)"],
                    "standardisation": {"mean": centre, "std": scale}, "sets": {}}
    matched = None
    if compared:
        matched = size_matched(metric, clouds[reference], [clouds[name] for name in compared],
                               repeats=floor_repeats, seed=seed)
        floor = matched["floor"]["energy"]
        floor_median = float(np.median(floor))
        floor_sd = float(np.std(floor, ddof=1)) if len(floor) > 1 else float("nan")
        result["floor"] = {
            "energy_distance_sq": floor_median,
            "energy_distance_sq_sd": floor_sd,
            "n_reference": matched["n_reference"],
            "n_compared": matched["n_compared"],
            "repeats": matched["repeats"],
        }
    for name, frame in points.items():
        table = pd.read_csv(tables[name])
        rho, p_value = scipy.stats.spearmanr(frame["log_peak"], frame["delta_plus"])
        entry = {
            "n_images": int(len(table)),
            "n_used": int(len(frame)),
            "n_failed": int((table["status"] == "failed").sum()),
            "n_no_source": int((table["status"] == "no_source").sum()),
            "spearman_rho": float(rho),
            "spearman_p": float(p_value),
        }
        if name != reference:
            value = float(np.median(matched["others"][compared.index(name)]["energy"]))
            entry["energy_distance_sq"] = value
            entry["energy_distance_sq_floor"] = floor_median
            entry["energy_distance_sq_floor_sd"] = floor_sd
            # z = (generated - floor) / floor spread: within about +-2 is sampling noise.
            entry["energy_z"] = (value - floor_median) / floor_sd if floor_sd > 0 else float("nan")
            entry["n_reference"] = matched["n_reference"]
            entry["n_compared"] = matched["n_compared"]
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
            if "energy_distance_sq" in entry:
                title += (f"\nenergy D^2={entry['energy_distance_sq']:.3g}, z={entry['energy_z']:.1f}"
                          f" (m={entry['n_compared']})")
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("log10 peak flux [Jy/beam]")
    axes[0][0].set_ylabel(r"$\Delta_+$ (sum of positive residual, scaled units)")
    axes[0][0].set_yscale("log")
    save_figure(fig, output, dpi=150)
    plt.close(fig)
