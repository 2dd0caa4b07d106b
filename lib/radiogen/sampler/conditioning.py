"""Conditioning values for generated images (paper Sect. 6.1).

LoTSS images are conditioned on the standardised Box-Cox transform of their
peak flux, z = (BoxCox_lambda(S_peak) - mean) / std, and, for a model trained
with ``lotss.preprocess.context: peak_flux+size``, of their size in arcsec as
a second value (the training set's ``size_source``: by default the maximum
Feret diameter of the smoothed source mask, :mod:`radiogen.lotss.sizes`, the
size that ``evaluate size`` measures on the generated images; or the catalogue
LAS); FIRST images on a one-hot morphology class.  Every draw is made per image from a generator seeded by
(global seed, stream, image index), so image i gets the same conditioning
whatever shard or batch it falls into.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from radiogen.errors import ConfigError, InputFileError
from radiogen.lotss import preprocess
from radiogen.seeds import stream

__all__ = [
    "CONTEXT_STREAM",
    "image_rng",
    "boxcox_forward",
    "boxcox_inverse",
    "peak_flux_to_context",
    "context_to_peak_flux",
    "histogram_draws",
    "lotss_context",
    "context_names",
    "size_to_context",
    "context_to_size",
    "joint_histogram_draws",
    "joint_histogram",
    "conditional_size_draws",
    "conditional_draws",
    "training_peak_flux_range",
    "training_size_range",
    "class_indices",
    "first_labels",
    "one_hot",
]

#: Seed stream of the conditioning draws (radiogen.seeds; noise: NOISE_STREAM in generate).
CONTEXT_STREAM = stream("sample.context")
#: Seed stream of the size draws of a ``range`` (independent of the flux draws).
SIZE_STREAM = stream("sample.size")


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


def _boxcox_params(meta: Mapping, source: str, *, key: str = "normalisation", what: str = "peak-flux") -> dict:
    """Box-Cox parameters stored in model metadata ``key`` as keyword arguments of boxcox_forward."""
    norm = meta.get(key) or {}
    missing = [k for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std") if norm.get(k) is None]
    if missing:
        raise InputFileError(f"{source}: model has no {what} normalisation ({', '.join(missing)})")
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
    return boxcox_forward(peak, **_boxcox_params(meta, source))


def context_to_peak_flux(context, meta: Mapping, *, source: str = "model") -> np.ndarray:
    """Peak flux in Jy/beam for model conditioning values z (inverse of the above)."""
    peak = boxcox_inverse(np.asarray(context, dtype=np.float64), **_boxcox_params(meta, source))
    if not np.all(np.isfinite(peak)):
        raise ConfigError(
            f"{source}: conditioning values outside the invertible Box-Cox range "
            f"(lambda={_boxcox_params(meta, source)['lam']})"
        )
    return peak


def context_names(meta: Mapping) -> list[str]:
    """A LoTSS model's conditioning variables: ``["peak_flux"]`` or ``["peak_flux", "size"]``."""
    return list(meta.get("context_names") or ["peak_flux"])


def _size_params(meta: Mapping, source: str) -> dict:
    return _boxcox_params(meta, source, key="size_normalisation", what="size")


def size_to_context(size_arcsec, meta: Mapping, *, source: str = "model") -> np.ndarray:
    """Model conditioning z for angular sizes in arcsec (all must be > 0)."""
    size = np.asarray(size_arcsec, dtype=np.float64)
    bad = ~(np.isfinite(size) & (size > 0))
    if bad.any():
        raise ConfigError(f"sample: sizes must be positive finite arcsec values; got {size[bad][:5].tolist()}")
    return boxcox_forward(size, **_size_params(meta, source))


def context_to_size(context, meta: Mapping, *, source: str = "model") -> np.ndarray:
    """Angular size in arcsec for size conditioning values z (inverse of the above)."""
    size = boxcox_inverse(np.asarray(context, dtype=np.float64), **_size_params(meta, source))
    if not np.all(np.isfinite(size)):
        raise ConfigError(f"{source}: size conditioning values outside the invertible Box-Cox range")
    return size


def joint_histogram_draws(edges, counts, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """(n, 2) values, one per generator: a 2-D bin with probability ∝ count, then uniform in it.

    Drawing both values from their joint histogram keeps their correlation
    (bright LoTSS sources are larger).
    """
    ex, ey = (np.asarray(e, dtype=np.float64) for e in edges)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (ex.size - 1, ey.size - 1) or counts.sum() <= 0 or (counts < 0).any():
        raise InputFileError(f"joint context histogram: counts {counts.shape} do not match edges "
                             f"({ex.size}, {ey.size}) or are not positive")
    prob = counts.ravel() / counts.sum()
    out = np.empty((len(rngs), 2))
    for k, rng in enumerate(rngs):
        i, j = np.unravel_index(rng.choice(prob.size, p=prob), counts.shape)
        out[k] = rng.uniform(ex[i], ex[i + 1]), rng.uniform(ey[j], ey[j + 1])
    return out


def joint_histogram(meta: Mapping, *, source: str = "model") -> tuple[list[np.ndarray], np.ndarray]:
    """(edges [flux, size], counts) of a size-conditioned model's joint context histogram."""
    hist = meta.get("context_histogram_2d") or {}
    if hist.get("edges") is None or hist.get("counts") is None:
        raise InputFileError(f"{source}: size-conditioned model has no context_histogram_2d")
    return [np.asarray(e, dtype=np.float64) for e in hist["edges"]], np.asarray(hist["counts"], dtype=np.float64)


def conditional_size_draws(meta: Mapping, z_flux, rngs: Sequence[np.random.Generator], *,
                           source: str = "model") -> np.ndarray:
    """Size context for given flux context: the joint training histogram's row at each flux.

    For fluxes that do not come from the histogram (a power law); a flux bin
    without training images falls back to the marginal size distribution.
    """
    return conditional_draws(meta, z_flux, rngs, given="peak_flux", source=source)


def conditional_draws(meta: Mapping, z_given, rngs: Sequence[np.random.Generator], *, given: str,
                      source: str = "model") -> np.ndarray:
    """The other context value of a size-conditioned model, drawn from the joint training histogram.

    ``given`` names the known variable (``"peak_flux"`` or ``"size"``), ``z_given``
    its context values; each draw picks a bin of the other variable with
    probability proportional to the training count in the given value's row
    (column), then a value uniform in that bin.  A row without training images
    falls back to the marginal distribution.
    """
    if given not in ("peak_flux", "size"):
        raise ValueError(f"given must be 'peak_flux' or 'size', not {given!r}")
    edges, counts = joint_histogram(meta, source=source)
    axis = 0 if given == "peak_flux" else 1
    counts = counts if axis == 0 else counts.T
    edges_given, edges_other = edges[axis], edges[1 - axis]
    rows = np.clip(np.searchsorted(edges_given, np.asarray(z_given, float), side="right") - 1, 0,
                   counts.shape[0] - 1)
    out = np.empty(len(rows))
    for k, (row, rng) in enumerate(zip(rows, rngs)):
        weights = counts[row] if counts[row].sum() > 0 else counts.sum(axis=0)
        j = rng.choice(weights.size, p=weights / weights.sum())
        out[k] = rng.uniform(edges_other[j], edges_other[j + 1])
    return out


def training_peak_flux_range(meta: Mapping, *, source: str = "model") -> tuple[float, float]:
    """Lowest and highest peak flux of the model's training split, Jy/beam.

    The outer edges of the context histogram that training stores in the model
    file (``numpy.histogram`` spans the minimum to the maximum of the training
    context), mapped back through the inverse Box-Cox transform.
    """
    hist = meta.get("context_histogram") or {}
    if hist.get("edges") is None:
        raise InputFileError(
            f"{source}: the model file stores no training range of its peak-flux context (no "
            "context_histogram; radiogen training writes one into every LoTSS model), so requested "
            "fluxes cannot be checked against what the model has seen")
    edges = np.asarray(hist["edges"], dtype=np.float64)
    low, high = context_to_peak_flux(edges[[0, -1]], meta, source=source)
    return float(low), float(high)


def training_size_range(meta: Mapping, *, source: str = "model") -> tuple[float, float]:
    """Smallest and largest size of a size-conditioned model's training split, arcsec (2-D histogram edges)."""
    (_edges_flux, edges_size), _counts = joint_histogram(meta, source=source)
    low, high = context_to_size(edges_size[[0, -1]], meta, source=source)
    return float(low), float(high)


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
    size: Sequence[float] | None = None,
    size_range: Sequence[float] | None = None,
    size_mode: str | None = None,
    source: str = "model",
) -> np.ndarray:
    """Standardised Box-Cox conditioning z for the given global image indices.

    The first column is the peak flux; a model with size conditioning
    (:func:`context_names`) gets a second, the size: drawn jointly with the
    flux from the model's 2-D training histogram (``histogram``), from
    ``size`` (arcsec, entry i mod len, ``list``) or flat in log size on
    ``size_range`` = [low, high] arcsec (``range``).  Sizes given to a
    peak-flux-only model are a ConfigError.

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
    size_mode
        Size-conditioned models only: how sizes are drawn when it differs from
        ``mode`` (None: as ``mode``).  ``"list"`` / ``"range"`` as for the flux;
        ``"histogram"`` with a flux ``mode`` of ``list`` or ``range``: each
        size from the joint training histogram at the image's flux; a size
        ``list`` / ``range`` with flux ``mode`` ``histogram``: each flux from the
        joint training histogram at the image's size.

    Returns
    -------
    numpy.ndarray
        (n, K) float32 conditioning, K = 1 or 2.
    """
    indices = np.asarray(indices, dtype=np.int64)
    with_size = "size" in context_names(meta)
    if not with_size and (size or size_range):
        raise ConfigError(f"sample.lotss.size/size_range given, but {source} is conditioned on peak flux only "
                          "(train with lotss.preprocess.context: peak_flux+size)")
    if with_size:
        return _lotss_context_with_size(meta, indices, seed=seed, mode=mode, peak_flux=peak_flux,
                                        peak_flux_range=peak_flux_range, range_space=range_space, size=size,
                                        size_range=size_range, size_mode=size_mode, source=source)
    if size_mode is not None:
        raise ConfigError(f"sample: size_mode {size_mode!r} given, but {source} is conditioned on peak flux only")
    return _peak_flux_context(meta, indices, seed=seed, mode=mode, peak_flux=peak_flux,
                              peak_flux_range=peak_flux_range, range_space=range_space,
                              source=source).astype(np.float32).reshape(-1, 1)


def _peak_flux_context(meta, indices, *, seed, mode, peak_flux, peak_flux_range, range_space, source
                       ) -> np.ndarray:
    """(n,) peak-flux conditioning z of one draw mode (histogram, list, range)."""
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
    return z


def _lotss_context_with_size(meta, indices, *, seed, mode, peak_flux, peak_flux_range, range_space, size,
                             size_range, size_mode, source) -> np.ndarray:
    size_mode = mode if size_mode is None else size_mode
    if size_mode not in ("histogram", "list", "range"):
        raise ConfigError(f"sample: unknown size_mode {size_mode!r} (histogram, list, range)")
    if mode == "histogram" and size_mode == "histogram":
        edges, counts = joint_histogram(meta, source=source)
        rngs = [image_rng(seed, CONTEXT_STREAM, i) for i in indices]
        return joint_histogram_draws(edges, counts, rngs).astype(np.float32)
    if mode == "histogram":
        z_size = _size_context(meta, indices, seed=seed, mode=size_mode, size=size, size_range=size_range,
                               source=source)
        rngs = [image_rng(seed, CONTEXT_STREAM, i) for i in indices]
        z_flux = conditional_draws(meta, z_size, rngs, given="size", source=source)
        return np.column_stack([z_flux, z_size]).astype(np.float32)
    z_flux = _peak_flux_context(meta, indices, seed=seed, mode=mode, peak_flux=peak_flux,
                                peak_flux_range=peak_flux_range, range_space=range_space, source=source)
    if size_mode == "histogram":
        rngs = [image_rng(seed, SIZE_STREAM, i) for i in indices]
        z_size = conditional_draws(meta, z_flux, rngs, given="peak_flux", source=source)
    else:
        z_size = _size_context(meta, indices, seed=seed, mode=size_mode, size=size, size_range=size_range,
                               source=source)
    return np.column_stack([z_flux, z_size]).astype(np.float32)


def _size_context(meta, indices, *, seed, mode, size, size_range, source) -> np.ndarray:
    """(n,) size conditioning z from a ``list`` of sizes or flat in log size on a ``range`` (arcsec)."""
    if mode == "list":
        if not size:
            raise ConfigError("sample.lotss.size: a size-conditioned model in mode 'list' needs a list (arcsec)")
        values = np.asarray(size, dtype=np.float64)
        return size_to_context(values, meta, source=source)[indices % values.size]
    if size_range is None or len(size_range) != 2:
        raise ConfigError("sample.lotss.size_range: a size-conditioned model in mode 'range' needs "
                          "[low, high] arcsec")
    low, high = (float(v) for v in size_range)
    if not 0 < low <= high:
        raise ConfigError(f"sample.lotss.size_range: need 0 < low <= high arcsec, got [{low}, {high}]")
    u = np.array([image_rng(seed, SIZE_STREAM, i).uniform() for i in indices])
    return size_to_context(np.exp(np.log(low) + u * np.log(high / low)), meta, source=source)


def first_labels(n_per_class: int | Sequence[int], n_classes: int) -> np.ndarray:
    """Global label array: class 0 images first, then class 1, ... (int64)."""
    counts = [int(n_per_class)] * n_classes if np.isscalar(n_per_class) else [int(c) for c in n_per_class]
    if len(counts) != n_classes or any(c < 0 for c in counts):
        raise ConfigError(
            f"sample.first.n_per_class: need one non-negative count per class ({n_classes}), got {counts}"
        )
    return np.repeat(np.arange(n_classes, dtype=np.int64), counts)


def class_indices(requested: Sequence[str], class_names: Sequence[str], *, source: str = "model") -> np.ndarray:
    """Indices of the ``requested`` class names in the model's ``class_names`` (case-insensitive).

    An unknown name is a ConfigError that lists the classes the model knows.
    """
    lookup = {str(name).lower(): k for k, name in enumerate(class_names)}
    unknown = [name for name in requested if str(name).lower() not in lookup]
    if unknown:
        raise ConfigError(f"class {', '.join(map(repr, unknown))} unknown to {source}: it knows "
                          f"{', '.join(class_names)}")
    return np.array([lookup[str(name).lower()] for name in requested], dtype=np.int64)


def one_hot(labels, n_classes: int) -> np.ndarray:
    """(n, n_classes) float32 one-hot rows."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.zeros((labels.size, n_classes), dtype=np.float32)
    out[np.arange(labels.size), labels] = 1.0
    return out
