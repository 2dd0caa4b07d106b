"""Class balancing of the FIRST training set for the diffusion model.

Paper Sect. 3.2: random undersampling of every class to the size of the least
populated one over the whole archive (2158 -> 1392 images, 348 per class).
Alternatives: ``none`` (keep everything) and ``weights`` (keep everything and
store a per-image loss weight proportional to the reciprocal class frequency,
the balancing the paper used for the classifier).

Seeds: the undersampling draws from ``SeedSequence([seed, BALANCE_SEED_OFFSET])``
and the 90/10 train/validation split from ``SeedSequence([seed, SPLIT_SEED_OFFSET])``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from radiogen.errors import ConfigError
from radiogen.first.dataset import (
    BEAM_ARCSEC,
    CLASS_NAMES,
    FREQUENCY_HZ,
    PIXEL_SCALE_ARCSEC,
    FirstDataset,
)
from radiogen.seeds import stream

__all__ = [
    "BALANCE_MODES",
    "BALANCE_SEED_OFFSET",
    "SPLIT_SEED_OFFSET",
    "undersample",
    "reciprocal_frequency_weights",
    "train_validation_split",
    "build_training_set",
    "write_training_set",
]

log = logging.getLogger(__name__)

BALANCE_MODES = ("undersample", "none", "weights")
#: Seed stream (second SeedSequence entry, radiogen.seeds) of the undersampling.
BALANCE_SEED_OFFSET = stream("first.balance")
#: Seed stream of the 90/10 train/validation assignment of the training set.
SPLIT_SEED_OFFSET = stream("first.split")


def undersample(
    labels: np.ndarray, *, seed: int, num_classes: int = len(CLASS_NAMES), max_per_class: int | None = None
) -> np.ndarray:
    """Indices of a random class-balanced subset: every class cut to the smallest one.

    Parameters
    ----------
    labels : numpy.ndarray
        (N,) integer labels in 0..num_classes-1.
    seed : int
        Global seed; the draw uses ``SeedSequence([seed, BALANCE_SEED_OFFSET])``.
    max_per_class : int, optional
        Cut every class to at most this many images (smoke tests); None keeps
        ``min_k n_k`` per class.

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices into ``labels``; ``num_classes * min(min_k n_k, max_per_class)`` of them.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        empty = [CLASS_NAMES[k] if k < len(CLASS_NAMES) else str(k) for k in np.flatnonzero(counts == 0)]
        raise ConfigError(f"cannot undersample: no images of class(es) {', '.join(empty)}")
    keep = int(counts.min()) if max_per_class is None else min(int(counts.min()), int(max_per_class))
    if keep < 1:
        raise ConfigError(f"first.max_per_class must be at least 1, got {max_per_class}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, BALANCE_SEED_OFFSET]))
    chosen = [rng.choice(np.flatnonzero(labels == k), size=keep, replace=False) for k in range(num_classes)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def reciprocal_frequency_weights(labels: np.ndarray, *, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Per-image weight w_i = 1 / p_{c_i}, p_c = n_c / N, rescaled to mean 1 over the images.

    With these weights every class carries the same total weight N / K.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    per_class = np.divide(len(labels), counts, out=np.zeros_like(counts), where=counts > 0)
    weights = per_class[labels]
    return (weights / weights.mean()).astype(np.float32)


def train_validation_split(
    labels: np.ndarray, *, validation_fraction: float, seed: int
) -> np.ndarray:
    """Seeded stratified split codes (0 train, 1 validation), per class ``round(f n_c)`` validation.

    Stratifying keeps a balanced set balanced in both parts.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"first.validation_fraction must be in [0, 1), got {validation_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_SEED_OFFSET]))
    split = np.zeros(len(labels), dtype=np.uint8)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        n_valid = int(round(validation_fraction * len(members)))
        split[rng.choice(members, size=n_valid, replace=False)] = 1
    return split


def build_training_set(
    dataset: FirstDataset,
    *,
    balance: str,
    validation_fraction: float,
    seed: int,
    max_per_class: int | None = None,
) -> dict:
    """Arrays of the diffusion-model training set (see :func:`write_training_set`).

    Uses every image of the archive (all three original splits), as the paper did;
    ``max_per_class`` (undersample only) cuts every class further, for smoke tests.
    """
    if balance not in BALANCE_MODES:
        raise ConfigError(f"first.balance must be one of {', '.join(BALANCE_MODES)}, got {balance!r}")
    labels = dataset.table["label"].to_numpy(np.int64)
    if balance == "undersample":
        index = undersample(labels, seed=seed, max_per_class=max_per_class)
    elif max_per_class is not None:
        raise ConfigError(f"first.max_per_class needs first.balance undersample, not {balance!r}")
    else:
        index = np.arange(len(labels), dtype=np.int64)
    labels = labels[index]
    arrays = {
        "images": dataset.images[index].astype(np.float32),
        "label": labels,
        "context": np.eye(len(CLASS_NAMES), dtype=np.float32)[labels],
        "split": train_validation_split(labels, validation_fraction=validation_fraction, seed=seed),
        "source_name": dataset.table["source_name"].to_numpy(object)[index],
        "first_split": dataset.table["first_split"].to_numpy(np.uint8)[index],
        "ra": dataset.table["ra"].to_numpy(np.float64)[index],
        "dec": dataset.table["dec"].to_numpy(np.float64)[index],
        "catalogue": dataset.table["catalogue"].to_numpy(object)[index],
    }
    if balance == "weights":
        arrays["sample_weight"] = reciprocal_frequency_weights(labels)
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    log.info("balance=%s: %d images (%s), %d for validation", balance, len(labels),
             ", ".join(f"{n}={c}" for n, c in zip(CLASS_NAMES, counts)), int(arrays["split"].sum()))
    return arrays


def write_training_set(arrays: dict, path: str | Path, *, seed: int, balance: str, source: str = "") -> None:
    """Write the TRAINING-SET HDF5 contract for FIRST (atomic).

    Datasets: ``/images`` float32 (N, 80, 80) in [0, 1]; ``/split`` uint8
    (0 train, 1 validation); ``/context`` float32 (N, 4) one-hot class;
    ``/label`` int64; ``/source_name`` utf-8; extra ``/first_split`` (archive
    split, 0 train 1 valid 2 test), ``/ra``, ``/dec`` (deg), ``/catalogue`` and,
    for ``balance="weights"``, ``/sample_weight`` float32 (mean 1).
    Attrs: ``dataset="first"``, ``pixel_scale_arcsec=1.8``, ``beam_arcsec=5.4``,
    ``frequency_hz=1.4e9``, ``seed``, ``class_names`` (JSON), ``balance``.
    """
    import h5py

    from radiogen.io import atomic_path

    strings = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        images = arrays["images"]
        h5.create_dataset("images", data=images, chunks=(1, *images.shape[1:]), compression="gzip",
                          compression_opts=4)
        h5.create_dataset("split", data=arrays["split"].astype(np.uint8))
        h5.create_dataset("context", data=arrays["context"].astype(np.float32))
        h5.create_dataset("label", data=arrays["label"].astype(np.int64))
        h5.create_dataset("source_name", data=arrays["source_name"].astype(str).astype(object), dtype=strings)
        h5.create_dataset("first_split", data=arrays["first_split"].astype(np.uint8))
        h5.create_dataset("ra", data=arrays["ra"]).attrs["unit"] = "deg"
        h5.create_dataset("dec", data=arrays["dec"]).attrs["unit"] = "deg"
        h5.create_dataset("catalogue", data=arrays["catalogue"].astype(str).astype(object), dtype=strings)
        if "sample_weight" in arrays:
            h5.create_dataset("sample_weight", data=arrays["sample_weight"].astype(np.float32))
        h5.attrs["dataset"] = "first"
        h5.attrs["pixel_scale_arcsec"] = PIXEL_SCALE_ARCSEC
        h5.attrs["beam_arcsec"] = BEAM_ARCSEC
        h5.attrs["frequency_hz"] = FREQUENCY_HZ
        h5.attrs["seed"] = int(seed)
        h5.attrs["class_names"] = json.dumps(list(CLASS_NAMES))
        h5.attrs["balance"] = balance
        h5.attrs["source"] = str(source)
