"""The authors' published LoTSS training set (``LOFAR_Dataset.h5``) as a radiogen training set.

Vicanek Martinez et al. (2024) publish the 106,787 cutouts they trained on.  Their
loader reads ``/images`` (N, H, W), optional ``/names``, an optional pandas
``catalog`` table and optional per-image arrays such as ``/max_values`` (the
image maximum before scaling).  :func:`convert_published_dataset` writes
radiogen's training-set contract (:mod:`radiogen.model.data`) from it, with the
same per-image treatment as :mod:`radiogen.lotss.preprocess` (paper Eqs. 11-12):

* peak flux p = ``/max_values`` where stored, else the image maximum;
* pixels: negative values -> 0, then min-max scaling to [0, 1];
* context: the standardised Box-Cox transform of p, lambda fitted by maximum
  likelihood on all images (as the authors' ``PowerTransformer`` fit);
* split: radiogen's seeded train/validation split.

The images are processed in blocks, so memory stays at a few hundred MB for the
2.7 GB file.  The peak flux keeps the unit of the file's images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from radiogen.errors import InputFileError
from radiogen.io import atomic_path
from radiogen.lotss.preprocess import boxcox_forward, fit_boxcox, split_train_validation
from radiogen.surveys import survey_attrs

__all__ = ["convert_published_dataset", "BLOCK"]

#: Images read per block.
BLOCK = 4096


def _scale(block: np.ndarray) -> np.ndarray:
    """Negative pixels -> 0, then (x - min) / (max - min) per image; flat images become 0."""
    x = np.clip(block.astype(np.float64), 0.0, None)
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def convert_published_dataset(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    seed: int,
    validation_fraction: float = 0.1,
) -> dict:
    """Write ``output`` (radiogen training set) from the authors' ``LOFAR_Dataset.h5``.

    Parameters
    ----------
    source : path
        ``LOFAR_Dataset.h5``.
    output : path
        Training-set HDF5 to write (atomically).
    seed : int
        Global seed (the train/validation split).
    validation_fraction : float
        Share of images in the validation split.

    Returns
    -------
    dict
        ``n_images``, ``boxcox_lambda``, ``boxcox_mean``, ``boxcox_std``, ``peak_source``.

    Raises
    ------
    InputFileError
        Missing file or ``/images``, images not (N, H, W), per-image arrays of the
        wrong length, non-finite pixels or non-positive peaks (named with the row).
    """
    source, output = Path(source), Path(output)
    if not source.exists():
        raise InputFileError(f"{source}: published dataset does not exist")
    try:
        h5 = h5py.File(source, "r")
    except OSError as err:
        raise InputFileError(f"{source}: not a readable HDF5 file ({err})") from err
    with h5:
        if "images" not in h5:
            raise InputFileError(f"{source}: no /images dataset (expected the authors' LOFAR_Dataset.h5)")
        images = h5["images"]
        if images.ndim != 3:
            raise InputFileError(f"{source}: /images has shape {images.shape}, expected (N, H, W)")
        n = images.shape[0]
        peaks = np.empty(n, dtype=np.float64)
        for start in range(0, n, BLOCK):
            block = np.asarray(images[start:start + BLOCK], dtype=np.float64)
            bad = ~np.isfinite(block).all(axis=(1, 2))
            if bad.any():
                raise InputFileError(f"{source}: /images row {start + int(np.flatnonzero(bad)[0])} has NaN/inf pixels")
            peaks[start:start + len(block)] = block.max(axis=(1, 2))
        peak_source = "image maximum"
        if "max_values" in h5:
            stored = np.asarray(h5["max_values"][()], dtype=np.float64).reshape(-1)
            if stored.shape != (n,):
                raise InputFileError(f"{source}: /max_values has {stored.size} values for {n} images")
            peaks, peak_source = stored, "max_values"
        if not (np.isfinite(peaks) & (peaks > 0)).all():
            row = int(np.flatnonzero(~(np.isfinite(peaks) & (peaks > 0)))[0])
            raise InputFileError(f"{source}: peak flux of image {row} is {peaks[row]!r}; Box-Cox needs positive peaks")
        if n > 1 and np.ptp(peaks) == 0:
            raise InputFileError(f"{source}: every image has the same maximum {peaks[0]!r} and there is no "
                                 "/max_values: the images look scaled already, so their peak flux is lost")
        names = None
        if "names" in h5:
            names = h5["names"].asstr()[()] if h5["names"].dtype.kind in "OS" else h5["names"][()].astype(str)
            if len(names) != n:
                raise InputFileError(f"{source}: /names has {len(names)} entries for {n} images")
        lam, mean, std = fit_boxcox(peaks)
        context = boxcox_forward(peaks, lam=lam, mean=mean, std=std).astype(np.float32)[:, None]
        split = split_train_validation(n, validation_fraction=validation_fraction, seed=seed)
        with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
            dest = out.create_dataset("images", shape=images.shape, dtype=np.float32,
                                      chunks=(min(256, n),) + images.shape[1:])
            for start in range(0, n, BLOCK):
                dest[start:start + BLOCK] = _scale(np.asarray(images[start:start + BLOCK]))
            out.create_dataset("split", data=split)
            out.create_dataset("context", data=context)
            out.create_dataset("peak_flux", data=peaks.astype(np.float32))
            out["peak_flux"].attrs["units"] = "unit of the published images"
            if names is not None:
                out.create_dataset("source_name", data=np.asarray(names, dtype=object),
                                   dtype=h5py.string_dtype())
            out.attrs["dataset"] = "lotss"
            for key, value in survey_attrs("lotss").items():
                out.attrs[key] = float(value)
            out.attrs["seed"] = int(seed)
            out.attrs["boxcox_lambda"], out.attrs["boxcox_mean"], out.attrs["boxcox_std"] = lam, mean, std
            out.attrs["boxcox_lambda_fitted"] = True
            out.attrs["context_names"] = json.dumps(["peak_flux"])
            out.attrs["peak_source"] = peak_source
            out.attrs["source_file"] = str(source)
            out.attrs["validation_fraction"] = float(validation_fraction)
    return {"n_images": int(n), "boxcox_lambda": lam, "boxcox_mean": mean, "boxcox_std": std,
            "peak_source": peak_source}
