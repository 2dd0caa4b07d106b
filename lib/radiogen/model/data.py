"""Reading and checking a training-set HDF5 file; batches and augmentation.

Training-set contract (shared by the LoTSS and FIRST preparation steps):
``/images`` float32 (N, H, W) or (N, C, H, W) in [0, 1]; ``/split`` uint8 (N,)
with 0 = train, 1 = validation; ``/context`` float32 (N, K); attributes
``dataset`` ("lotss" | "first"), for LoTSS ``boxcox_lambda/mean/std`` and for
FIRST ``class_names`` (JSON list).  Every check runs before any training step.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radiogen.errors import InputFileError
from radiogen.io import open_hdf5, require_datasets
from radiogen.surveys import FIRST_CLASS_NAMES, survey_attrs

__all__ = [
    "TrainingData",
    "read_training_set",
    "to_model_range",
    "augment",
    "batch_indices",
    "REQUIRED_DATASETS",
]

REQUIRED_DATASETS = ("images", "split", "context")
#: Tolerance for pixel values outside [0, 1] (float32 round-off of the scaling).
RANGE_TOLERANCE = 1.0e-4


@dataclass
class TrainingData:
    """A checked training set held in memory.

    Attributes
    ----------
    images : np.ndarray
        float32 (N, C, H, W), values in [0, 1].
    split : np.ndarray
        uint8 (N,), 0 train / 1 validation.
    context : np.ndarray
        float32 (N, K).
    dataset : str
        "lotss" or "first" (file attribute ``dataset``).
    attrs : dict
        All file attributes.
    """

    path: Path
    images: np.ndarray
    split: np.ndarray
    context: np.ndarray
    dataset: str
    attrs: dict = field(default_factory=dict)

    @property
    def train_index(self) -> np.ndarray:
        return np.flatnonzero(self.split == 0)

    @property
    def val_index(self) -> np.ndarray:
        return np.flatnonzero(self.split == 1)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> list[int]:
        return [int(self.images.shape[2]), int(self.images.shape[3])]

    @property
    def context_dim(self) -> int:
        return int(self.context.shape[1])

    def digest(self) -> str:
        """SHA-256 of everything training reads: pixels, split, context, normalisation, classes."""
        h = hashlib.sha256()
        for arr in (self.images, self.split, self.context):
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).data)
        meta = {"dataset": self.dataset, "normalisation": self.normalisation(), "classes": self.class_names()}
        if self.size_normalisation() is not None:  # files without size context keep their digest
            meta.update(context_names=self.context_names(), size_normalisation=self.size_normalisation())
        h.update(json.dumps(meta, sort_keys=True).encode())
        return h.hexdigest()

    def normalisation(self) -> dict | None:
        """Box-Cox parameters of the peak-flux context (LoTSS), else None."""
        keys = ("boxcox_lambda", "boxcox_mean", "boxcox_std")
        if all(k in self.attrs for k in keys):
            return {k: float(self.attrs[k]) for k in keys}
        return None

    def context_names(self) -> list[str] | None:
        """LoTSS conditioning variables in context order (``["peak_flux"]`` or with ``"size"``)."""
        if self.dataset != "lotss":
            return None
        names = self.attrs.get("context_names")
        names = json.loads(names) if isinstance(names, str) else ["peak_flux"]
        if len(names) != self.context_dim:
            raise InputFileError(f"{self.path}: attribute context_names {names} does not match /context "
                                 f"with {self.context_dim} column(s)")
        return [str(n) for n in names]

    def size_normalisation(self) -> dict | None:
        """Box-Cox parameters of the size context (LoTSS with size conditioning), else None."""
        keys = ("size_boxcox_lambda", "size_boxcox_mean", "size_boxcox_std")
        if all(k in self.attrs for k in keys):
            return {k.removeprefix("size_"): float(self.attrs[k]) for k in keys}
        return None

    def context_histogram_2d(self, bins: int = 30) -> dict | None:
        """Joint ``bins`` x ``bins`` histogram of the training split's (peak flux, size) context."""
        if self.dataset != "lotss" or self.context_dim < 2:
            return None
        counts, edges_flux, edges_size = np.histogram2d(
            self.context[self.train_index, 0], self.context[self.train_index, 1], bins=bins)
        return {"edges": [edges_flux, edges_size], "counts": counts.astype(np.int64)}

    def class_names(self) -> list[str] | None:
        """Class names of the one-hot context (FIRST), else None."""
        names = self.attrs.get("class_names")
        if names is None:
            return None
        if isinstance(names, bytes):
            names = names.decode()
        if isinstance(names, str):
            try:
                names = json.loads(names)
            except json.JSONDecodeError as err:
                raise InputFileError(f"{self.path}: attribute class_names is not a JSON list ({err})") from err
        return [str(n) for n in names]

    def context_histogram(self, bins: int = 100) -> dict | None:
        """``bins``-bin histogram of the training split's first context value (LoTSS)."""
        if self.dataset != "lotss":
            return None
        counts, edges = np.histogram(self.context[self.train_index, 0], bins=bins)
        return {"edges": edges, "counts": counts}


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_training_set(path: str | os.PathLike) -> TrainingData:
    """Read and check a training-set file.

    Raises
    ------
    InputFileError
        Missing file or datasets, inconsistent lengths, NaN/inf values, pixels
        outside [0, 1], split values other than 0/1, an empty training split or
        a missing ``dataset`` attribute; the message names the file and the problem.
    """
    path = Path(path)
    with open_hdf5(path) as h5:
        require_datasets(h5, REQUIRED_DATASETS)
        images = np.asarray(h5["images"][()], dtype=np.float32)
        split = np.asarray(h5["split"][()])
        context = np.asarray(h5["context"][()], dtype=np.float32)
        attrs = {k: _attr(v) for k, v in h5.attrs.items()}
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise InputFileError(f"{path}: /images must have shape (N, H, W) or (N, C, H, W), got {images.shape}")
    n = images.shape[0]
    if n == 0:
        raise InputFileError(f"{path}: /images is empty")
    if context.ndim == 1:
        context = context[:, None]
    if split.shape != (n,):
        raise InputFileError(f"{path}: /split has shape {split.shape}, expected ({n},) to match /images")
    if context.ndim != 2 or context.shape[0] != n:
        raise InputFileError(f"{path}: /context has shape {context.shape}, expected ({n}, K) to match /images")
    for name, arr in (("images", images), ("context", context)):
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])
            raise InputFileError(
                f"{path}: /{name} contains {int(bad.sum())} NaN/inf value(s) in {rows.size} row(s), "
                f"first at row {int(rows[0])}"
            )
    lo, hi = float(images.min()), float(images.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise InputFileError(f"{path}: /images must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]")
    np.clip(images, 0.0, 1.0, out=images)
    values = set(np.unique(split).tolist())
    if not values <= {0, 1}:
        raise InputFileError(f"{path}: /split may only hold 0 (train) and 1 (validation), found {sorted(values)}")
    split = split.astype(np.uint8)
    if not (split == 0).any():
        raise InputFileError(f"{path}: /split marks no training images (no zeros)")
    dataset = attrs.get("dataset")
    if dataset not in ("lotss", "first"):
        raise InputFileError(f"{path}: attribute 'dataset' must be 'lotss' or 'first', got {dataset!r}")
    return TrainingData(path=path, images=images, split=split, context=context, dataset=dataset, attrs=attrs)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] pixel values to the network's [-1, 1] (paper Sect. 4.2)."""
    return images * 2.0 - 1.0


def augment(images: torch.Tensor, *, share: slice | None = None, global_batch: int | None = None) -> torch.Tensor:
    """Random horizontal and vertical flips, then a random multiple of 90 degrees, per image.

    Uses the global torch RNG (seeded per step by the trainer).  Non-square
    images are only rotated by 0 or 180 degrees so their shape is kept.  In
    data-parallel training ``images`` is the ``share`` of a batch of
    ``global_batch`` images: the draws are made for the whole batch (the same on
    every rank) and this share's are used.
    """
    b = images.shape[0] if global_batch is None else int(global_batch)
    share = slice(0, b) if share is None else share
    dev = images.device
    flip_h = (torch.rand(b, device=dev) < 0.5)[share]
    flip_v = (torch.rand(b, device=dev) < 0.5)[share]
    square = images.shape[-1] == images.shape[-2]
    turns = (torch.randint(0, 4, (b,), device=dev) if square else 2 * torch.randint(0, 2, (b,), device=dev))[share]
    out = torch.where(flip_h[:, None, None, None], images.flip(-1), images)
    out = torch.where(flip_v[:, None, None, None], out.flip(-2), out)
    rotated = out
    for k in (1, 2, 3):
        if square or k == 2:
            rotated = torch.where((turns == k)[:, None, None, None], torch.rot90(out, k, dims=(-2, -1)), rotated)
    return rotated


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, epoch]))
    return rng.permutation(n)


def batch_indices(n: int, *, step: int, global_batch: int, seed: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Indices (into the training split) of this rank's share of the batch of ``step``.

    The training split is traversed in epochs of fresh random permutations; a
    step's batch depends only on (seed, step), so a resumed run draws exactly the
    batches an uninterrupted one would.
    """
    start = step * global_batch
    stop = start + global_batch
    out = []
    pos = start
    while pos < stop:
        epoch, offset = divmod(pos, n)
        take = min(n - offset, stop - pos)
        out.append(_epoch_permutation(n, seed, epoch)[offset : offset + take])
        pos += take
    idx = np.concatenate(out)
    local = global_batch // world
    return idx[rank * local : (rank + 1) * local]


def write_synthetic_training_set(
    path: str | os.PathLike,
    *,
    n: int = 64,
    size: int = 16,
    channels: int = 1,
    dataset: str = "first",
    val_fraction: float = 0.25,
    seed: int = 0,
) -> Path:
    """Write a small training set of elliptical Gaussian "sources" on noise.

    Follows the training-set contract exactly (LoTSS: K=1 standardised
    log-peak context and Box-Cox attributes; FIRST: K=4 one-hot classes, where
    the class sets the number of components).  Meant for tests and benchmarks
    of the training code, not as science data.
    """
    import h5py

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, channels, size, size) if channels > 1 else (n, size, size), np.float32)
    labels = rng.integers(0, 4, n)
    peaks = np.exp(rng.normal(-5.0, 1.0, n)).astype(np.float32)
    for i in range(n):
        img = np.zeros((size, size), np.float32)
        for _ in range(int(labels[i]) + 1):
            cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
            sx, sy = rng.uniform(size * 0.05, size * 0.15, 2)
            img += rng.uniform(0.5, 1.0) * np.exp(-((xx - cx) ** 2 / (2 * sx**2) + (yy - cy) ** 2 / (2 * sy**2)))
        img += rng.normal(0, 0.02, img.shape).astype(np.float32)
        img = (img - img.min()) / (img.max() - img.min())
        images[i] = img if channels == 1 else np.repeat(img[None], channels, axis=0)
    split = (rng.random(n) < val_fraction).astype(np.uint8)
    split[0] = 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["images"] = images
        h5["split"] = split
        h5["source_name"] = np.array([f"toy{i:05d}" for i in range(n)], dtype=object)
        h5.attrs["dataset"] = dataset
        h5.attrs["seed"] = seed
        if dataset == "lotss":
            logp = np.log(peaks)
            mean, std = float(logp.mean()), float(logp.std())
            h5["context"] = ((logp - mean) / std).astype(np.float32)[:, None]
            h5["peak_flux"] = peaks
            h5.attrs.update(boxcox_lambda=0.0, boxcox_mean=mean, boxcox_std=std,
                            **survey_attrs("lotss"))
        else:
            h5["context"] = np.eye(4, dtype=np.float32)[labels]
            h5["label"] = labels.astype(np.int64)
            h5.attrs.update(class_names=json.dumps(list(FIRST_CLASS_NAMES)), **survey_attrs("first"))
    return path
