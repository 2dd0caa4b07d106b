"""Conditioning values for generated images (paper Sect. 6.1).

LoTSS images are conditioned on the standardised Box-Cox transform of their
peak flux, z = (BoxCox_lambda(S_peak) - mean) / std; FIRST images on a one-hot
morphology class.  Every draw is made per image from a generator seeded by
(global seed, stream, image index), so image i gets the same conditioning
whatever shard or batch it falls into.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from radiogen.errors import ConfigError, InputFileError
from radiogen.lotss import preprocess

__all__ = [
    "CONTEXT_STREAM",
    "image_rng",
    "boxcox_forward",
    "boxcox_inverse",
    "peak_flux_to_context",
    "context_to_peak_flux",
    "histogram_draws",
    "lotss_context",
    "first_labels",
    "one_hot",
]

#: Seed-stream offset for conditioning draws (noise uses NOISE_STREAM in generate).
CONTEXT_STREAM = 501


def image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Numpy generator for one image: SeedSequence entropy (seed, stream, index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(index)]))


def boxcox_forward(peak, *, lam: float, mean: float, std: float) -> np.ndarray:
    """Standardised Box-Cox transform z = ((S^lam - 1)/lam - mean) / std (log S for lam = 0).

    The training-set transform of :mod:`radiogen.lotss.preprocess`; NaN for S <= 0.
    """
    return np.asarray(preprocess.boxcox_forward(peak, lam=lam, mean=mean, std=std), dtype=np.float64)


def boxcox_inverse(z, *, lam: float, mean: float, std: float) -> np.ndarray:
    """Inverse of :func:`boxcox_forward`: S = (1 + lam (z std + mean))^(1/lam); NaN if undefined."""
    return np.asarray(preprocess.boxcox_inverse(z, lam=lam, mean=mean, std=std), dtype=np.float64)


def _normalisation(meta: Mapping, source: str) -> dict:
    norm = meta.get("normalisation") or {}
    missing = [k for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std") if norm.get(k) is None]
    if missing:
        raise InputFileError(f"{source}: model has no peak-flux normalisation ({', '.join(missing)})")
    return {
        "lam": float(norm["boxcox_lambda"]),
        "mean": float(norm["boxcox_mean"]),
        "std": float(norm["boxcox_std"]),
    }


def peak_flux_to_context(peak_flux, meta: Mapping, *, source: str = "model") -> np.ndarray:
    """Model conditioning z for peak fluxes in Jy/beam (all must be > 0)."""
    peak = np.asarray(peak_flux, dtype=np.float64)
    bad = ~(np.isfinite(peak) & (peak > 0))
    if bad.any():
        raise ConfigError(
            f"sample: peak fluxes must be positive finite Jy/beam values; "
            f"got {peak[bad][:5].tolist()} (Box-Cox is undefined for them)"
        )
    return boxcox_forward(peak, **_normalisation(meta, source))


def context_to_peak_flux(context, meta: Mapping, *, source: str = "model") -> np.ndarray:
    """Peak flux in Jy/beam for model conditioning values z (inverse of the above)."""
    peak = boxcox_inverse(np.asarray(context, dtype=np.float64), **_normalisation(meta, source))
    if not np.all(np.isfinite(peak)):
        raise ConfigError(
            f"{source}: conditioning values outside the invertible Box-Cox range "
            f"(lambda={_normalisation(meta, source)['lam']})"
        )
    return peak


def histogram_draws(edges, counts, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """One value per generator: a bin with probability ∝ count, then uniform in the bin."""
    edges = np.asarray(edges, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if edges.ndim != 1 or counts.shape != (edges.size - 1,) or counts.sum() <= 0 or (counts < 0).any():
        raise InputFileError(
            f"context histogram needs len(edges) = len(counts) + 1 and positive counts; "
            f"got {edges.size} edges, {counts.size} counts"
        )
    prob = counts / counts.sum()
    out = np.empty(len(rngs))
    for k, rng in enumerate(rngs):
        b = rng.choice(prob.size, p=prob)
        out[k] = rng.uniform(edges[b], edges[b + 1])
    return out


def lotss_context(
    meta: Mapping,
    indices: Sequence[int],
    *,
    seed: int,
    mode: str = "histogram",
    peak_flux: Sequence[float] | None = None,
    peak_flux_range: Sequence[float] | None = None,
    range_space: str = "boxcox",
    source: str = "model",
) -> np.ndarray:
    """Standardised Box-Cox peak-flux conditioning z for the given global image indices.

    Parameters
    ----------
    meta
        Model metadata (``normalisation``, ``context_histogram``).
    indices
        Global image indices (they seed the draws).
    seed
        Global seed.
    mode
        ``"histogram"``: the 100-bin training histogram stored with the model;
        ``"list"``: ``peak_flux`` (Jy/beam), image i takes entry i mod len;
        ``"range"``: flat between ``peak_flux_range`` = [low, high] Jy/beam,
        flat in ``range_space`` (``"boxcox"`` = the model's variable z,
        ``"log"`` = log S, ``"linear"`` = S).

    Returns
    -------
    numpy.ndarray
        (n, 1) float32 conditioning.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if mode == "histogram":
        hist = meta.get("context_histogram") or {}
        if hist.get("edges") is None or hist.get("counts") is None:
            raise InputFileError(f"{source}: model has no context_histogram {{edges, counts}}")
        rngs = [image_rng(seed, CONTEXT_STREAM, i) for i in indices]
        z = histogram_draws(np.asarray(hist["edges"]), np.asarray(hist["counts"]), rngs)
    elif mode == "list":
        if not peak_flux:
            raise ConfigError("sample.lotss.peak_flux: mode 'list' needs a non-empty list (Jy/beam)")
        values = np.asarray(peak_flux, dtype=np.float64)
        z = peak_flux_to_context(values, meta, source=source)[indices % values.size]
    elif mode == "range":
        if peak_flux_range is None or len(peak_flux_range) != 2:
            raise ConfigError("sample.lotss.peak_flux_range: mode 'range' needs [low, high] in Jy/beam")
        low, high = (float(v) for v in peak_flux_range)
        if not 0 < low <= high:
            raise ConfigError(
                f"sample.lotss.peak_flux_range: need 0 < low <= high Jy/beam, got [{low}, {high}]"
            )
        u = np.array([image_rng(seed, CONTEXT_STREAM, i).uniform() for i in indices])
        if range_space == "boxcox":
            z_low, z_high = peak_flux_to_context([low, high], meta, source=source)
            z = z_low + u * (z_high - z_low)
        elif range_space == "log":
            z = peak_flux_to_context(np.exp(np.log(low) + u * np.log(high / low)), meta, source=source)
        elif range_space == "linear":
            z = peak_flux_to_context(low + u * (high - low), meta, source=source)
        else:
            raise ConfigError(f"sample.lotss.range_space: unknown {range_space!r} (boxcox, log, linear)")
    else:
        raise ConfigError(f"sample.lotss.conditioning: unknown mode {mode!r} (histogram, list, range)")
    return z.astype(np.float32).reshape(-1, 1)


def first_labels(n_per_class: int | Sequence[int], n_classes: int) -> np.ndarray:
    """Global label array: class 0 images first, then class 1, ... (int64)."""
    counts = [int(n_per_class)] * n_classes if np.isscalar(n_per_class) else [int(c) for c in n_per_class]
    if len(counts) != n_classes or any(c < 0 for c in counts):
        raise ConfigError(
            f"sample.first.n_per_class: need one non-negative count per class ({n_classes}), got {counts}"
        )
    return np.repeat(np.arange(n_classes, dtype=np.int64), counts)


def one_hot(labels, n_classes: int) -> np.ndarray:
    """(n, n_classes) float32 one-hot rows."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.zeros((labels.size, n_classes), dtype=np.float32)
    out[np.arange(labels.size), labels] = 1.0
    return out
