"""Preprocessing of the selected LoTSS cutouts into the training set (paper Sect. 3.1).

Per image x (raw Jy/beam): negative pixels -> 0 (imaging artefacts), then
min-max scaling x' = (x - min x) / (max x - min x) (paper Eq. 11); the original
maximum (the peak flux, Jy/beam) is kept.  Peak fluxes p are mapped to the model's
context c by the Box-Cox transform (paper Eq. 12) followed by standardisation::

    b = (p**lambda - 1) / lambda   (log p for lambda = 0),   c = (b - mean) / std

with lambda fitted by maximum likelihood (:func:`scipy.stats.boxcox`; the paper
finds lambda = -0.23) or fixed in the configuration.  :func:`boxcox_inverse`
undoes it so generated images can be given physical units.

With ``context: peak_flux+size`` a second context column is the standardised
Box-Cox transform of a size in arcsec: by default (``size_source: feret``) the
maximum Feret diameter of each scaled training image's smoothed source mask
(:mod:`radiogen.lotss.sizes`, the measure the size evaluation applies to
generated images), or the catalogue LAS (``size_source: las``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import stats

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path, open_hdf5, read_table_hdf5, require_datasets, write_table_hdf5
from radiogen.lotss.sizes import FeretSettings, feret_sizes
from radiogen.seeds import stream
from radiogen.surveys import survey_attrs

__all__ = [
    "SPLIT_SEED_OFFSET",
    "PreprocessSettings",
    "scale_images",
    "fit_boxcox",
    "boxcox_forward",
    "boxcox_inverse",
    "split_train_validation",
    "run_preprocess",
]

log = logging.getLogger(__name__)

#: Seed stream (radiogen.seeds) of the train/validation split draw.
SPLIT_SEED_OFFSET = stream("lotss.split")
#: Context choices: config value -> conditioning variables in context-vector order.
#: ``lotss.preprocess`` defaults (the schema is their only source).
_DEFAULTS = section_defaults("lotss.preprocess")
CONTEXTS = {"peak_flux": ["peak_flux"], "peak_flux+size": ["peak_flux", "size"]}
#: Size sources of a size context: config value -> meaning (the /size dataset's attribute).
SIZE_SOURCES = {
    "feret": "maximum Feret diameter of the smoothed source mask of the scaled image (radiogen.lotss.sizes)",
    "las": "catalogue largest angular size (DR2 LAS, DR1 DC_Maj, simulated true LAS)",
}


@dataclass(frozen=True)
class PreprocessSettings:
    """Settings of the preprocessing step (see ``lotss preprocess.schema.yaml``)."""

    validation_fraction: float = _DEFAULTS["validation_fraction"]
    boxcox_lambda: float | None = _DEFAULTS["boxcox_lambda"]
    chunk_size: int = _DEFAULTS["chunk_size"]
    context: str = _DEFAULTS["context"]
    size_floor_arcsec: float = _DEFAULTS["size_floor_arcsec"]
    size_source: str = _DEFAULTS["size_source"]
    feret: FeretSettings = dataclasses.field(default_factory=FeretSettings)

    @classmethod
    def from_mapping(cls, mapping: dict | None, *, source: str = "settings") -> "PreprocessSettings":
        """Build from a (config) mapping; unknown keys or bad values raise ConfigError."""
        mapping = dict(mapping or {})
        unknown = sorted(set(mapping) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        values = {}
        try:
            if "validation_fraction" in mapping:
                values["validation_fraction"] = float(mapping["validation_fraction"])
            if mapping.get("boxcox_lambda") is not None:
                values["boxcox_lambda"] = float(mapping["boxcox_lambda"])
            if "chunk_size" in mapping:
                values["chunk_size"] = int(mapping["chunk_size"])
            if "context" in mapping:
                values["context"] = str(mapping["context"])
            if "size_floor_arcsec" in mapping:
                values["size_floor_arcsec"] = float(mapping["size_floor_arcsec"])
            if "size_source" in mapping:
                values["size_source"] = str(mapping["size_source"])
            if "feret" in mapping:
                values["feret"] = FeretSettings.from_mapping(mapping["feret"], source=f"{source}: feret")
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {err}") from None
        return cls(**values)

    def __post_init__(self):
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(
                f"lotss.preprocess.validation_fraction: must be in [0, 1), got {self.validation_fraction}"
            )
        if self.chunk_size < 1:
            raise ConfigError(f"lotss.preprocess.chunk_size: must be >= 1, got {self.chunk_size}")
        if self.boxcox_lambda is not None and not np.isfinite(self.boxcox_lambda):
            raise ConfigError(f"lotss.preprocess.boxcox_lambda: must be finite, got {self.boxcox_lambda}")
        if self.context not in CONTEXTS:
            raise ConfigError(f"lotss.preprocess.context: must be one of {sorted(CONTEXTS)}, got {self.context!r}")
        if not (np.isfinite(self.size_floor_arcsec) and self.size_floor_arcsec > 0):
            raise ConfigError(f"lotss.preprocess.size_floor_arcsec: must be > 0, got {self.size_floor_arcsec}")
        if self.size_source not in SIZE_SOURCES:
            raise ConfigError(f"lotss.preprocess.size_source: must be one of {sorted(SIZE_SOURCES)}, "
                              f"got {self.size_source!r}")

    @property
    def context_names(self) -> list[str]:
        """Conditioning variables in context-vector order."""
        return CONTEXTS[self.context]


def scale_images(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Negatives -> 0, then per-image min-max scaling to [0, 1].

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W) finite raw images, Jy/beam.

    Returns
    -------
    scaled : numpy.ndarray
        (B, H, W) float32 in [0, 1]; all-zero for images without positive pixels.
    peak : numpy.ndarray
        (B,) float64 original per-image maximum, Jy/beam.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"images must be (B, H, W), got shape {images.shape}")
    peak = images.reshape(len(images), -1).max(axis=1) if len(images) else np.zeros(0)
    clipped = np.maximum(images, 0.0)
    flat = clipped.reshape(len(images), -1)
    low = flat.min(axis=1, keepdims=True) if len(images) else np.zeros((0, 1))
    span = (flat.max(axis=1, keepdims=True) if len(images) else np.zeros((0, 1))) - low
    scaled = np.divide(flat - low, span, out=np.zeros_like(flat), where=span > 0)
    return scaled.reshape(images.shape).astype(np.float32), peak


def boxcox_forward(peak, *, lam: float, mean: float, std: float) -> np.ndarray:
    """Standardised Box-Cox transform c = (B_lambda(p) - mean) / std (paper Eq. 12).

    Parameters
    ----------
    peak : array_like
        Peak fluxes p > 0, Jy/beam.
    lam, mean, std : float, keyword-only
        Box-Cox exponent and the mean/std of the transformed training peaks.

    Returns
    -------
    numpy.ndarray
        Context values (dimensionless); NaN for p <= 0.
    """
    p = np.asarray(peak, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(p > 0, p, np.nan)
        b = np.log(p) if lam == 0 else np.expm1(lam * np.log(p)) / lam
    return (b - mean) / std


def boxcox_inverse(z, *, lam: float, mean: float, std: float) -> np.ndarray:
    """Inverse of :func:`boxcox_forward`: p = (lambda (z std + mean) + 1)**(1/lambda).

    Parameters
    ----------
    z : array_like
        Standardised Box-Cox values (the model's context).
    lam, mean, std : float, keyword-only
        As stored in the training set attributes ``boxcox_lambda``,
        ``boxcox_mean`` and ``boxcox_std``.

    Returns
    -------
    numpy.ndarray
        Peak flux, Jy/beam.  NaN where ``lambda (z std + mean) + 1 <= 0``: for
        lambda < 0 the Box-Cox image is bounded above by -1/lambda, and values
        beyond it correspond to no finite flux.
    """
    b = np.asarray(z, dtype=np.float64) * std + mean
    if lam == 0:
        return np.exp(b)
    base = lam * b + 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(base > 0, np.exp(np.log1p(lam * b) / lam), np.nan)


def fit_boxcox(peak, *, lam: float | None = None) -> tuple[float, float, float]:
    """Fit lambda by maximum likelihood (unless given), and the mean/std of B_lambda(p).

    Returns
    -------
    lam, mean, std : float
        ``std`` is the population standard deviation (ddof=0).
    """
    p = np.asarray(peak, dtype=np.float64)
    if len(p) < 2 or not np.all(p > 0) or not np.all(np.isfinite(p)):
        raise ValueError("Box-Cox needs at least two finite, positive peak fluxes")
    if lam is None:
        if np.ptp(p) == 0:
            lam = 1.0
        else:
            _, lam = stats.boxcox(p)
    lam = float(lam)
    b = np.log(p) if lam == 0 else np.expm1(lam * np.log(p)) / lam
    std = float(b.std())
    if not std > 0:
        std = 1.0
    return lam, float(b.mean()), std


def split_train_validation(n: int, *, validation_fraction: float, seed: int) -> np.ndarray:
    """Seeded split: uint8 array, 0 = train, 1 = validation (round(fraction n) of them).

    The draw uses ``numpy.random.default_rng([seed, SPLIT_SEED_OFFSET])``.
    """
    split = np.zeros(n, dtype=np.uint8)
    n_val = int(round(validation_fraction * n))
    if n_val:
        rng = np.random.default_rng([int(seed), SPLIT_SEED_OFFSET])
        split[rng.choice(n, size=n_val, replace=False)] = 1
    return split


def _read_selected(path):
    path = Path(path)
    with open_hdf5(path) as h5:
        require_datasets(h5, ["images", "source_name"])
        shape = h5["images"].shape
        if len(shape) != 3:
            raise InputFileError(f"{path}: /images must have shape (N, H, W), got {shape}")
        names = np.array(h5["source_name"].asstr()[()], dtype=object)
        if names.shape != (shape[0],):
            raise InputFileError(
                f"{path}: /source_name has {names.shape[0] if names.ndim else 0} entries "
                f"but /images holds {shape[0]} images"
            )
        extras = {}
        for name in ("snr_sigma", "centre_ra", "centre_dec"):
            if name in h5 and h5[name].shape == (shape[0],):
                extras[name] = h5[name][()]
        for name in ("mosaic_id",):
            if name in h5 and h5[name].shape == (shape[0],):
                extras[name] = np.array(h5[name].asstr()[()], dtype=object)
        catalogue = read_table_hdf5(h5["catalogue"]) if "catalogue" in h5 else None
        attrs = dict(h5.attrs)
    return shape, names, extras, catalogue, attrs


def _catalogue_sizes(catalogue, n: int, source, *, required: bool) -> np.ndarray:
    """Catalogue LAS per image, arcsec (NaN where unknown); an error if required and absent."""
    if catalogue is not None and len(catalogue) == n and "LAS" in catalogue.columns:
        return pd.to_numeric(catalogue["LAS"], errors="coerce").to_numpy(dtype=np.float64)
    if required:
        raise InputFileError(
            f"{source}: lotss.preprocess.context asks for size, but the file has no catalogue LAS column "
            "(DR2 cross-match LAS, DR1 DC_Maj, or the simulated survey's LAS)")
    return np.full(n, np.nan)


def run_preprocess(
    selected: str | os.PathLike,
    output: str | os.PathLike,
    *,
    settings: PreprocessSettings | None = None,
    seed: int,
    figure_path: str | os.PathLike | None = None,
) -> dict:
    """Write the LoTSS training set from the selection's ``selected.h5``.

    Parameters
    ----------
    selected : path
        ``selected.h5`` from the selection step (raw kept images, Jy/beam).
    output : path
        ``training_set.h5`` (layout in the README: /images, /split, /context,
        /peak_flux, /source_name, ...; attrs incl. boxcox_lambda/mean/std).
    settings : PreprocessSettings, optional, keyword-only
    seed : int, keyword-only
        Global seed; the split uses ``[seed, SPLIT_SEED_OFFSET]``.
    figure_path : path, optional, keyword-only
        PNG of the peak flux before and after Box-Cox (paper Fig. 4).

    Returns
    -------
    dict
        Summary (counts and Box-Cox parameters).
    """
    settings = settings or PreprocessSettings()
    selected = Path(selected)
    shape, names, extras, catalogue, attrs = _read_selected(selected)
    n = shape[0]
    t0 = time.perf_counter()
    with_size = "size" in settings.context_names
    measure_feret = with_size and settings.size_source == "feret"
    pixel_scale = float(attrs.get("pixel_scale_arcsec", survey_attrs("lotss")["pixel_scale_arcsec"]))
    peaks = np.empty(n, dtype=np.float64)
    feret = np.full(n, np.nan)
    with h5py.File(selected, "r") as h5:
        for start in range(0, n, settings.chunk_size):
            block = h5["images"][start : start + settings.chunk_size].astype(np.float64)
            if not np.isfinite(block).all():
                bad = start + int(np.nonzero(~np.isfinite(block).reshape(len(block), -1).all(axis=1))[0][0])
                raise InputFileError(
                    f"{selected}: image {bad} ({names[bad]}) contains NaN/inf; "
                    "the selection should have removed it"
                )
            peaks[start : start + len(block)] = block.reshape(len(block), -1).max(axis=1)
            if measure_feret:  # on the scaled image, as the model and the evaluation see it
                scaled, _ = scale_images(block)
                feret[start : start + len(block)] = feret_sizes(scaled, pixel_scale_arcsec=pixel_scale,
                                                                settings=settings.feret)
    keep = np.nonzero(peaks > 0)[0]
    if len(keep) < n:
        log.warning("%s: %d images without positive pixels dropped", selected, n - len(keep))
    las = _catalogue_sizes(catalogue, n, selected, required=with_size and settings.size_source == "las")
    sizes = feret if measure_feret else las
    if with_size:
        known = keep[np.isfinite(sizes[keep])]
        if len(known) < len(keep):
            what = ("without a source in their Feret mask" if measure_feret else "without a catalogue LAS")
            log.warning("%s: %d image(s) %s dropped (size conditioning)", selected, len(keep) - len(known), what)
        keep = known
    if len(keep) < 2:
        raise InputFileError(f"{selected}: {len(keep)} usable images; need at least 2 for Box-Cox")
    lam, mean, std = fit_boxcox(peaks[keep], lam=settings.boxcox_lambda)
    context = boxcox_forward(peaks[keep], lam=lam, mean=mean, std=std).astype(np.float32)[:, None]
    log.info(
        "Box-Cox lambda=%.4f (%s), mean=%.6g, std=%.6g over %d peaks",
        lam, "fixed" if settings.boxcox_lambda is not None else "maximum likelihood", mean, std, len(keep),
    )
    size_norm = None
    if with_size:
        floored = np.maximum(sizes[keep], settings.size_floor_arcsec)
        log.info("size context (%s): %d of %d sizes below the floor of %g arcsec raised to it; "
                 "median %.3g arcsec, 16-84%% %.3g-%.3g", settings.size_source,
                 int((sizes[keep] < settings.size_floor_arcsec).sum()), len(keep), settings.size_floor_arcsec,
                 *np.percentile(floored, [50, 16, 84]))
        size_norm = fit_boxcox(floored)
        size_context = boxcox_forward(floored, lam=size_norm[0], mean=size_norm[1], std=size_norm[2])
        context = np.column_stack([context[:, 0], size_context]).astype(np.float32)
        log.info("size Box-Cox lambda=%.4f, mean=%.6g, std=%.6g over %d sizes", *size_norm, len(keep))
    split = split_train_validation(len(keep), validation_fraction=settings.validation_fraction, seed=seed)

    text = h5py.string_dtype("utf-8")
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as out, h5py.File(selected, "r") as src:
        images = out.create_dataset(
            "images",
            shape=(len(keep), shape[1], shape[2]),
            dtype=np.float32,
            chunks=(min(len(keep), 256), shape[1], shape[2]),
        )
        written = 0
        for start in range(0, n, settings.chunk_size):
            stop = min(start + settings.chunk_size, n)
            local = keep[(keep >= start) & (keep < stop)] - start
            if len(local):
                scaled, _ = scale_images(src["images"][start:stop][local])
                images[written : written + len(local)] = scaled
                written += len(local)
                rate = written / max(time.perf_counter() - t0, 1e-9)
                log.info("scaled %d/%d images (%.0f images/s)", written, len(keep), rate)
        out.create_dataset("split", data=split)
        out.create_dataset("context", data=context)
        out.create_dataset("peak_flux", data=peaks[keep].astype(np.float32))
        out["peak_flux"].attrs["units"] = "Jy/beam"
        out.create_dataset("source_name", data=names[keep], dtype=text)
        if with_size:  # the size the model is conditioned on (before the floor)
            out.create_dataset("size", data=sizes[keep].astype(np.float32))
            out["size"].attrs["units"] = "arcsec"
            out["size"].attrs["meaning"] = SIZE_SOURCES[settings.size_source]
        if np.isfinite(las[keep]).any():
            out.create_dataset("las", data=las[keep].astype(np.float32))
            out["las"].attrs["units"] = "arcsec"
            out["las"].attrs["meaning"] = SIZE_SOURCES["las"]
        for name, values in extras.items():
            if values.dtype == object:
                out.create_dataset(name, data=values[keep], dtype=text)
            else:
                out.create_dataset(name, data=values[keep])
        if catalogue is not None and len(catalogue) == n:
            write_table_hdf5(out, "catalogue", catalogue.iloc[keep].reset_index(drop=True))
        out.attrs["dataset"] = "lotss"
        for key, default in survey_attrs("lotss").items():
            out.attrs[key] = float(attrs.get(key, default))
        for key in ("beam_source", "frequency_source"):  # header or config, from the cutout jobs
            if key in attrs:
                out.attrs[key] = str(attrs[key])
        out.attrs["seed"] = int(seed)
        out.attrs["boxcox_lambda"] = lam
        out.attrs["boxcox_mean"] = mean
        out.attrs["boxcox_std"] = std
        out.attrs["boxcox_lambda_fitted"] = settings.boxcox_lambda is None
        out.attrs["context_names"] = json.dumps(settings.context_names)
        if size_norm is not None:
            out.attrs["size_boxcox_lambda"], out.attrs["size_boxcox_mean"], out.attrs["size_boxcox_std"] = size_norm
            out.attrs["size_floor_arcsec"] = settings.size_floor_arcsec
            out.attrs["size_source"] = settings.size_source
        # the image size measure, which the size evaluation reads back (also for size_source las)
        out.attrs["size_feret_settings"] = json.dumps(settings.feret.as_dict(), sort_keys=True)
        out.attrs["preprocess_settings"] = json.dumps(dataclasses.asdict(settings), sort_keys=True)
        out.attrs["source_file"] = str(selected)
    if figure_path is not None:
        from radiogen.lotss.selection_plots import plot_peak_flux

        plot_peak_flux(peaks[keep], context[:, 0], figure_path, lam=lam, mean=mean, std=std)
    summary = {
        "n_input": int(n),
        "n_images": int(len(keep)),
        "n_train": int((split == 0).sum()),
        "n_validation": int((split == 1).sum()),
        "boxcox_lambda": lam,
        "boxcox_mean": mean,
        "boxcox_std": std,
    }
    log.info("%s: %s", output, summary)
    return summary
