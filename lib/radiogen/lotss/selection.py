"""The paper's selection cuts on LoTSS cutouts (Vicanek Martinez et al. 2024, Sect. 3.1, Table 1).

Cuts, applied in this order; each image is removed by the first cut it fails.
The definitions follow the authors' code (tmartinezML/LOFAR-Diffusion), which
produced the paper's counts 1,228 / 201,322 / 5,319 / 286:

1. ``broken``: the cutout holds NaN (blanked) or infinite pixels, lies partly
   off its mosaic (``/flag_partial``; the authors' strict cut-out fails there),
   or is constant, so min-max scaling is undefined;
2. ``low_snr``: S/N_sigma < ``snr_min`` (see :mod:`radiogen.lotss.snr`);
3. ``edge``: the brightest border pixel exceeds ``edge_fraction`` times the image
   maximum (raw Jy/beam), i.e. the source is cropped or off-centre;
4. ``incomplete``: more than ``max_min_pixels`` pixels equal the image minimum,
   the signature of a flat, zero-filled or clipped (incompletely covered)
   region; the authors' "broken cutout" mask.

Inputs are read from the aggregate ``cutouts.h5`` in chunks, so memory stays flat
for the paper's 314,942 cutouts; chunks are spread over worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path, open_hdf5, read_table_hdf5, require_datasets, write_table_hdf5
from radiogen.lotss.snr import fill_nan_with_min, snr_sigma_batch
from radiogen.progress import Progress

__all__ = [
    "STEPS",
    "SelectionSettings",
    "image_statistics",
    "removal_reasons",
    "selection_counts",
    "read_cutout_metadata",
    "run_selection",
]

log = logging.getLogger(__name__)

#: ``lotss.selection`` defaults (the schema is their only source).
_DEFAULTS = section_defaults("lotss.selection")

#: Removal steps in the order they are applied: (key, description for Table 1).
STEPS = (
    ("broken", "Broken images: NaN/blanked or infinite pixels, partly off the mosaic, or constant"),
    ("low_snr", "S/N_sigma below threshold"),
    ("edge", "Bright edge pixels"),
    ("incomplete", "Incomplete coverage: more pixels than allowed equal to the image minimum"),
)


@dataclass(frozen=True)
class SelectionSettings:
    """Settings of the selection step; defaults are the paper's values.

    Every field is documented, and its default written, only in
    ``workflow/schemas/lotss-selection.schema.yaml``.
    """

    snr_min: float = _DEFAULTS["snr_min"]
    tau_start: float = _DEFAULTS["tau_start"]
    tau_step: float = _DEFAULTS["tau_step"]
    clip_sigma: float = _DEFAULTS["clip_sigma"]
    clip_maxiters: int = _DEFAULTS["clip_maxiters"]
    edge_fraction: float = _DEFAULTS["edge_fraction"]
    max_min_pixels: int = _DEFAULTS["max_min_pixels"]
    central_source: float | None = _DEFAULTS["central_source"]
    central_radius_px: float = _DEFAULTS["central_radius_px"]
    chunk_size: int = _DEFAULTS["chunk_size"]
    figure_snr_max: float = _DEFAULTS["figure_snr_max"]
    figure_columns: int = _DEFAULTS["figure_columns"]
    figure_rows: int = _DEFAULTS["figure_rows"]

    @classmethod
    def from_mapping(cls, mapping: dict | None, *, source: str = "settings") -> "SelectionSettings":
        """Build from a (config) mapping; unknown keys or bad values raise ConfigError."""
        return _settings_from_mapping(cls, mapping, source=source)

    def __post_init__(self):
        checks = {
            "tau_step": self.tau_step > 0,
            "clip_sigma": self.clip_sigma > 0,
            "clip_maxiters": self.clip_maxiters >= 1,
            "edge_fraction": 0 < self.edge_fraction <= 1,
            "max_min_pixels": self.max_min_pixels >= 1,
            "central_source": self.central_source is None or self.central_source >= 0,
            "central_radius_px": self.central_radius_px >= 0,
            "chunk_size": self.chunk_size >= 1,
            "figure_snr_max": self.figure_snr_max > 0,
            "figure_columns": self.figure_columns >= 1,
            "figure_rows": self.figure_rows >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"lotss.selection.{key}: invalid value {getattr(self, key)!r}")


def _settings_from_mapping(cls, mapping, *, source):
    mapping = dict(mapping or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
    values = {}
    for field in dataclasses.fields(cls):
        if mapping.get(field.name) is None:
            continue
        value = mapping[field.name]
        try:
            if field.type in ("int", int):
                if isinstance(value, bool) or int(value) != value:
                    raise ValueError
                value = int(value)
            elif field.type in ("float", float):
                value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}.{field.name}: expected {field.type}, got {value!r}") from None
        values[field.name] = value
    return cls(**values)


def image_statistics(
    images: np.ndarray, *, settings: SelectionSettings, flag_partial: np.ndarray | None = None
) -> pd.DataFrame:
    """Per-image quantities the cuts are based on.

    Parameters
    ----------
    images : numpy.ndarray
        (B, H, W) raw cutouts (Jy/beam), NaNs kept.
    settings : SelectionSettings, keyword-only
    flag_partial : numpy.ndarray, optional, keyword-only
        (B,) bool, True where the cutout lies partly off its mosaic.

    Returns
    -------
    pandas.DataFrame
        Columns ``snr_sigma``, ``tau``, ``clip_median``, ``clip_std`` (min-max
        units), ``peak_raw`` (Jy/beam, NaN-ignoring max), ``edge_ratio`` (border
        max / image max), ``n_nan``, ``n_min`` (pixels equal to the minimum after
        NaN filling), ``flag_partial`` and ``broken``.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (B, H, W), got shape {images.shape}")
    n = len(images)
    finite = np.isfinite(images)
    n_nan = (~finite).reshape(n, -1).sum(axis=1)
    # Min, max and equality with the minimum are exact in the input precision.
    filled = fill_nan_with_min(images, dtype=np.float32 if images.dtype == np.float32 else np.float64)
    flat = filled.reshape(n, -1)
    with np.errstate(invalid="ignore"):
        low = flat.min(axis=1)
        high = flat.max(axis=1)
    unusable = ~(np.isfinite(low) & np.isfinite(high) & (high > low))  # min-max undefined
    n_min = (flat == low[:, None]).sum(axis=1)

    # Where the brightest pixel lies: far from the centre, the image (and its peak-flux
    # context) belong to a brighter neighbour rather than the catalogue source.
    height, width = images.shape[1:]
    peak_at = np.nanargmax(np.where(np.isfinite(filled), filled, -np.inf).reshape(n, -1), axis=1) if n else np.zeros(0, int)
    peak_y, peak_x = np.divmod(peak_at, width)
    max_offset = np.hypot(peak_y - height // 2, peak_x - width // 2)  # Cutout2D centre pixel: size // 2

    border = np.concatenate(
        [filled[:, 0, :], filled[:, -1, :], filled[:, 1:-1, 0], filled[:, 1:-1, -1]], axis=1
    )
    edge_max = border.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # A non-positive maximum has no source to be centred; count it as edge-dominated.
        edge_ratio = np.where(high > 0, edge_max.astype(np.float64) / high, 1.0)

    snr = snr_sigma_batch(
        images,
        tau_start=settings.tau_start,
        tau_step=settings.tau_step,
        clip_sigma=settings.clip_sigma,
        clip_maxiters=settings.clip_maxiters,
    )
    partial = np.zeros(n, dtype=bool) if flag_partial is None else np.asarray(flag_partial, bool)
    broken = unusable | (n_nan > 0) | partial
    return pd.DataFrame(
        {
            "snr_sigma": snr.snr_sigma,
            "tau": snr.tau,
            "clip_median": snr.median,
            "clip_std": snr.std,
            "peak_raw": np.where(unusable, np.nan, high.astype(np.float64)),
            "edge_ratio": np.where(unusable, np.nan, edge_ratio),
            "n_nan": n_nan,
            "n_min": n_min,
            "max_offset_px": np.where(unusable, np.nan, max_offset),
            "flag_partial": partial,
            "broken": broken,
        }
    )


def removal_reasons(stats: pd.DataFrame, *, settings: SelectionSettings) -> np.ndarray:
    """Step key that removes each image ("" for kept), cuts applied in :data:`STEPS` order.

    An undefined S/N_sigma (NaN) counts as below the threshold.
    """
    fails = {
        "broken": stats["broken"].to_numpy(bool),
        "low_snr": ~(stats["snr_sigma"].to_numpy(float) >= settings.snr_min),
        "edge": stats["edge_ratio"].to_numpy(float) > settings.edge_fraction,
        "incomplete": stats["n_min"].to_numpy() > settings.max_min_pixels,
    }
    if settings.central_source is not None:
        fails["off_centre"] = ~(stats["max_offset_px"].to_numpy(float) <= settings.central_source)
    reasons = np.full(len(stats), "", dtype=object)
    for key, _ in _steps(settings):
        reasons[(reasons == "") & fails[key]] = key
    return reasons


def _steps(settings: SelectionSettings) -> tuple:
    """The paper's cuts, plus the optional central-source cut when configured."""
    if settings.central_source is None:
        return STEPS
    return (*STEPS, ("off_centre", f"Maximum > {settings.central_source:g} px from the centre"))


def brighter_neighbour(pixel_x, pixel_y, mosaic_id, peak_flux, *, size: int) -> np.ndarray:
    """Whether a brighter catalogue source lies inside each cutout (same mosaic, same sample).

    ``pixel_x``/``pixel_y`` are the cutout centres on their mosaic (px), ``peak_flux``
    the catalogue peak fluxes; a neighbour counts when its centre falls inside the
    ``size`` x ``size`` cutout and its peak flux is higher.
    """
    px, py = np.asarray(pixel_x, float), np.asarray(pixel_y, float)
    peak, mosaic = np.asarray(peak_flux, float), np.asarray(mosaic_id, dtype=object)
    flag = np.zeros(len(px), dtype=bool)
    half = size / 2
    for name in np.unique(mosaic):
        idx = np.flatnonzero(mosaic == name)
        order = idx[np.argsort(px[idx])]
        xs = px[order]
        for k, i in enumerate(order):
            lo, hi = np.searchsorted(xs, px[i] - half), np.searchsorted(xs, px[i] + half)
            near = order[lo:hi]
            near = near[(near != i) & (np.abs(py[near] - py[i]) < half)]
            flag[i] = bool(np.any(peak[near] > peak[i]))
    return flag


def selection_counts(reasons: np.ndarray, *, snr_min: float, edge_fraction: float,
                     n_sources: int | None = None, sample: str | None = None,
                     steps: tuple = STEPS) -> pd.DataFrame:
    """Table 1 of the paper: images removed at each step and remaining after it.

    With ``n_sources`` (the catalogue's source sample, e.g. its resolved
    sources) the table starts from it; the ``cutouts`` row then removes the
    sources that lie on no mosaic.
    """
    reasons = np.asarray(reasons, dtype=object)
    remaining = len(reasons)
    rows = []
    if n_sources is not None:
        label = f"{sample} sources" if sample and sample != "all" else "sources"
        rows.append({"step": "sources", "description": f"Catalogue {label}", "removed": 0,
                     "remaining": int(n_sources)})
    rows.append({"step": "cutouts", "description": "Cutouts on a mosaic" if n_sources is not None else "All cutouts",
                 "removed": int(n_sources) - remaining if n_sources is not None else 0, "remaining": remaining})
    for key, description in steps:
        if key == "low_snr":
            description = f"S/N_sigma < {snr_min:g}"
        elif key == "edge":
            description = f"Edge pixels > {edge_fraction:g} x image max"
        removed = int((reasons == key).sum())
        remaining -= removed
        rows.append({"step": key, "description": description, "removed": removed, "remaining": remaining})
    rows.append({"step": "selected", "description": "Selected images", "removed": 0, "remaining": remaining})
    return pd.DataFrame(rows, columns=["step", "description", "removed", "remaining"])


def read_cutout_metadata(path: str | os.PathLike) -> dict:
    """Check ``cutouts.h5`` and return its per-image metadata (not the images).

    Raises
    ------
    InputFileError
        Missing file or datasets, images not (N, H, W), or lengths that disagree.
    """
    path = Path(path)
    with open_hdf5(path) as h5:
        require_datasets(h5, ["images", "source_name"])
        shape = h5["images"].shape
        if len(shape) != 3 or shape[1] < 3 or shape[2] < 3:
            raise InputFileError(f"{path}: /images must have shape (N, H, W), got {shape}")
        n = shape[0]
        meta = {"n": n, "shape": shape, "attrs": dict(h5.attrs)}
        for name in ("source_name", "mosaic_id", "centre_from"):
            if name in h5:
                meta[name] = np.array(h5[name].asstr()[()], dtype=object)
        for name in ("centre_ra", "centre_dec", "pixel_x", "pixel_y"):
            if name in h5:
                meta[name] = h5[name][()].astype(np.float64)
        for name in ("flag_partial", "flag_nan"):
            if name in h5:
                meta[name] = h5[name][()].astype(bool)
        for name, values in meta.items():
            if isinstance(values, np.ndarray) and values.shape != (n,):
                raise InputFileError(
                    f"{path}: /{name} has shape {values.shape} but /images holds {n} images"
                )
        if "catalogue" in h5:
            catalogue = read_table_hdf5(h5["catalogue"])
            if len(catalogue) != n:
                raise InputFileError(
                    f"{path}: /catalogue has {len(catalogue)} rows but /images holds {n} images"
                )
            meta["catalogue"] = catalogue
    return meta


def _neighbour_flags(meta: dict) -> np.ndarray:
    """Whether a brighter catalogue source lies inside each cutout.

    From ``n_brighter_neighbours`` of the catalogue table, counted by
    ``lotss assign`` against the whole catalogue (unresolved neighbours
    included); for cutout files without that column, :func:`brighter_neighbour`
    among the cut-out sources.  All False without positions or fluxes.
    """
    n = meta["n"]
    catalogue = meta.get("catalogue")
    if catalogue is not None and "n_brighter_neighbours" in catalogue:
        return catalogue["n_brighter_neighbours"].to_numpy() > 0
    if catalogue is None or "Peak_flux" not in catalogue or not {"pixel_x", "pixel_y"} <= set(meta):
        return np.zeros(n, dtype=bool)
    mosaic = meta.get("mosaic_id", np.full(n, "", dtype=object))
    return brighter_neighbour(meta["pixel_x"], meta["pixel_y"], mosaic, catalogue["Peak_flux"].to_numpy(float),
                              size=int(meta["shape"][1]))


def _stats_for_chunk(task):
    path, start, stop, settings, partial = task
    try:
        with h5py.File(path, "r") as h5:
            images = h5["images"][start:stop]
    except OSError as err:
        raise InputFileError(f"{path}: cannot read /images[{start}:{stop}] ({err})") from None
    return start, image_statistics(images, settings=settings, flag_partial=partial)


def _compute_all_statistics(path, meta, settings, threads):
    n = meta["n"]
    partial = meta.get("flag_partial", np.zeros(n, dtype=bool))
    tasks = [
        (str(path), s, min(s + settings.chunk_size, n), settings, partial[s : s + settings.chunk_size])
        for s in range(0, n, settings.chunk_size)
    ]
    parts = {}
    bar = Progress(n, "S/N_sigma images", logger=log)

    def _progress(start, frame):
        parts[start] = frame
        bar.update(len(frame))

    with bar:
        if threads > 1 and len(tasks) > 1:
            with multiprocessing.get_context("fork").Pool(min(threads, len(tasks))) as pool:
                for start, frame in pool.imap_unordered(_stats_for_chunk, tasks):
                    _progress(start, frame)
        else:
            for task in tasks:
                _progress(*_stats_for_chunk(task))
    if not parts:
        return image_statistics(np.zeros((0, *meta["shape"][1:]), np.float32), settings=settings)
    return pd.concat([parts[k] for k in sorted(parts)], ignore_index=True)


def run_selection(
    cutouts: str | os.PathLike,
    *,
    table_path: str | os.PathLike,
    per_image_path: str | os.PathLike,
    selected_path: str | os.PathLike,
    figure_path: str | os.PathLike | None = None,
    examples_path: str | os.PathLike | None = None,
    settings: SelectionSettings | None = None,
    threads: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Apply the cuts to ``cutouts.h5`` and write every selection output.

    Parameters
    ----------
    cutouts : path
        Aggregate cutout file (``/images`` (N, H, W) Jy/beam with NaNs,
        ``/source_name``, optional ``/flag_partial``, ``/catalogue`` ...).
    table_path : path, keyword-only
        CSV with columns step, description, removed, remaining (paper Table 1).
    per_image_path : path, keyword-only
        CSV with one row per cutout: name, statistics, ``removed_at`` step.
    selected_path : path, keyword-only
        HDF5 with the kept raw images and their metadata.
    figure_path, examples_path : path, optional, keyword-only
        PNG of the S/N_sigma histogram with examples (paper Fig. 1) and of
        examples removed at each step (paper Fig. 2).
    settings : SelectionSettings, optional, keyword-only
    threads : int, keyword-only
        Worker processes for the S/N_sigma pass.
    seed : int, keyword-only
        Seed for picking the example cutouts shown in the figures.

    Returns
    -------
    pandas.DataFrame
        The selection table.
    """
    settings = settings or SelectionSettings()
    cutouts = Path(cutouts)
    meta = read_cutout_metadata(cutouts)
    n = meta["n"]
    log.info("%s: %d cutouts of %dx%d px", cutouts, n, *meta["shape"][1:])
    t0 = time.perf_counter()
    stats = _compute_all_statistics(cutouts, meta, settings, max(int(threads), 1))
    reasons = removal_reasons(stats, settings=settings)
    log.info("statistics for %d images in %.1f s", n, time.perf_counter() - t0)

    attrs = meta["attrs"]
    table = selection_counts(
        reasons, snr_min=settings.snr_min, edge_fraction=settings.edge_fraction,
        n_sources=int(attrs["n_catalogue"]) if "n_catalogue" in attrs else None,
        sample=str(attrs.get("sample", "all")), steps=_steps(settings),
    )
    neighbour = _neighbour_flags(meta)
    stats["brighter_neighbour"] = neighbour
    kept = reasons == ""
    off = kept & (stats["max_offset_px"].to_numpy(float) > settings.central_radius_px)
    counts = pd.DataFrame([
        {"step": "count_max_off_centre", "removed": 0, "remaining": int(off.sum()),
         "description": f"of the selected: maximum > {settings.central_radius_px:g} px from the centre "
                        "(a count, not a cut; lotss.selection.central_source cuts)"},
        {"step": "count_brighter_neighbour", "removed": 0, "remaining": int((kept & neighbour).sum()),
         "description": "of the selected: a brighter catalogue source inside the cutout (a count, not a cut)"},
    ])
    # the counts go just before the final "selected" row
    table = pd.concat([table.iloc[:-1], counts, table.iloc[-1:]], ignore_index=True)
    for row in table.itertuples():
        log.info("%-10s removed %8d remaining %8d", row.step, row.removed, row.remaining)

    per_image = pd.DataFrame({"source_name": meta["source_name"]})
    for name in ("mosaic_id", "centre_ra", "centre_dec", "centre_from"):
        if name in meta:
            per_image[name] = meta[name]
    per_image = pd.concat([per_image, stats], axis=1)
    per_image["removed_at"] = reasons
    per_image["kept"] = reasons == ""

    with atomic_path(per_image_path) as tmp:
        per_image.to_csv(tmp, index=False)
    _write_selected(cutouts, meta, per_image, selected_path, settings)
    if figure_path is not None or examples_path is not None:
        from radiogen.lotss import selection_plots

        if figure_path is not None:
            selection_plots.plot_snr_histogram(
                cutouts, per_image, figure_path, settings=settings, seed=seed
            )
        if examples_path is not None:
            selection_plots.plot_removed_examples(
                cutouts, per_image, examples_path, settings=settings, seed=seed
            )
    with atomic_path(table_path) as tmp:
        table.to_csv(tmp, index=False)
    return table


def _write_selected(cutouts, meta, per_image, selected_path, settings):
    keep = np.nonzero(per_image["kept"].to_numpy(bool))[0]
    shape = meta["shape"]
    with atomic_path(selected_path) as tmp, h5py.File(tmp, "w") as out, h5py.File(cutouts, "r") as src:
        images = out.create_dataset(
            "images",
            shape=(len(keep), shape[1], shape[2]),
            dtype=np.float32,
            chunks=(min(max(len(keep), 1), 256), shape[1], shape[2]) if len(keep) else None,
        )
        written = 0
        for start in range(0, shape[0], settings.chunk_size):
            stop = min(start + settings.chunk_size, shape[0])
            local = keep[(keep >= start) & (keep < stop)] - start
            if len(local):
                block = src["images"][start:stop][local]
                images[written : written + len(local)] = block
                written += len(local)
        images.attrs["units"] = "Jy/beam"
        text = h5py.string_dtype("utf-8")
        out.create_dataset("source_name", data=per_image["source_name"].to_numpy(object)[keep], dtype=text)
        for name in ("mosaic_id", "centre_from"):
            if name in per_image:
                out.create_dataset(name, data=per_image[name].astype(str).to_numpy(object)[keep], dtype=text)
        for name in ("centre_ra", "centre_dec", "snr_sigma", "tau", "peak_raw", "edge_ratio"):
            if name in per_image:
                out.create_dataset(name, data=per_image[name].to_numpy(np.float64)[keep])
        out.create_dataset("cutout_index", data=keep.astype(np.int64))
        if "catalogue" in meta:
            write_table_hdf5(out, "catalogue", meta["catalogue"].iloc[keep].reset_index(drop=True))
        for key, value in meta["attrs"].items():
            out.attrs[key] = value
        out.attrs["selection_settings"] = json.dumps(dataclasses.asdict(settings), sort_keys=True)
        out.attrs["source_file"] = str(cutouts)
        out.attrs["n_input"] = shape[0]
    log.info("%s: %d selected images written", selected_path, len(keep))
