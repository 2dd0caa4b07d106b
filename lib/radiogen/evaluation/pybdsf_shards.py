"""PyBDSF over a whole image set: resumable shards, their merge, the stored models.

:func:`run_shard` fits the images of one shard (:func:`radiogen.evaluation.pybdsf.measure_image`)
in one process, writing checkpoints of finished images so that a killed job
redoes only what is missing, and belong to their inputs (settings, image set,
seed, range); :func:`merge_shards` joins the shard tables and refuses a set
in which too many fits failed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from radiogen.errors import ConfigError, InputFileError
from radiogen.evaluation import pybdsf as fitting
from radiogen.evaluation.imagesets import ImageSet, open_image_set
from radiogen.evaluation.pybdsf_runtime import gc_frozen, import_bdsf
from radiogen.io import atomic_path
from radiogen.progress import Progress
from radiogen.testhooks import block_point

__all__ = ["shard_range", "run_shard", "check_failure_fraction", "merge_shards", "read_models",
           "model_flux_columns"]

log = logging.getLogger("radiogen.evaluation.pybdsf")

def shard_range(n_images: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Contiguous block ``[start, stop)`` of shard ``shard`` out of ``n_shards``.

    Blocks differ in size by at most one image; shards beyond the number of
    images are empty (their table has no rows).
    """
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ConfigError(f"shard {shard} out of range for {n_shards} shards")
    return (shard * n_images) // n_shards, ((shard + 1) * n_images) // n_shards


def _settings_key(settings: dict, image_set: ImageSet, seed: int, start: int, stop: int) -> str:
    identity = {
        "settings": settings,
        "seed": int(seed),
        "start": start,
        "stop": stop,
        "n_images": image_set.n_images,
        "file_size": image_set.path.stat().st_size,
        "file_mtime_ns": image_set.path.stat().st_mtime_ns,
        "beam_arcsec": image_set.beam_arcsec,
        "pixel_scale_arcsec": image_set.pixel_scale_arcsec,
    }
    return json.dumps(identity, sort_keys=True, default=str)


def _write_chunk(path: Path, rows: list[dict], models: list[np.ndarray | None], key: str,
                 shape: tuple[int, int]) -> None:
    table = pd.DataFrame(rows, columns=fitting.RESULT_COLUMNS)
    stack = np.zeros((len(rows), *shape), dtype=np.float32)
    for i, model in enumerate(models):
        if model is not None:
            stack[i] = model
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["key"] = key
            h5.attrs["rows"] = table.to_json(orient="records")
            h5.create_dataset("index", data=table["index"].to_numpy(np.int64))
            h5.create_dataset("models", data=stack, compression="gzip", compression_opts=4,
                              chunks=(1, *shape) if len(rows) else None)


def _read_chunks(part_dir: Path, key: str) -> tuple[list[dict], dict[int, np.ndarray]]:
    rows: list[dict] = []
    models: dict[int, np.ndarray] = {}
    for chunk in sorted(part_dir.glob("chunk-*.h5")):
        try:
            with h5py.File(chunk, "r") as h5:
                if h5.attrs.get("key") != key:
                    log.info("%s: written with other settings or input, ignored", chunk)
                    continue
                chunk_rows = json.loads(h5.attrs["rows"])
                stack = h5["models"][()]
        except (OSError, KeyError, ValueError) as err:
            log.warning("%s: unreadable checkpoint (%s), recomputing its images", chunk, err)
            continue
        for row, model in zip(chunk_rows, stack):
            rows.append(row)
            models[int(row["index"])] = model
    return rows, models


def run_shard(
    image_set_path: str | os.PathLike,
    *,
    shard: int,
    n_shards: int,
    output_csv: str | os.PathLike,
    output_models: str | os.PathLike,
    settings: dict | None = None,
    seed: int,
    beam_arcsec: float | dict | None = None,
    freeze_gc: bool = True,
) -> pd.DataFrame:
    """Fit every image of one shard of an image set; resumable.

    Parameters
    ----------
    image_set_path : path-like
        Training or sample set (shared HDF5 layout).
    shard, n_shards : int
        This shard's number and the fixed number of shards of the set; the
        shard's images are the contiguous block of :func:`shard_range`.
    output_csv : path-like
        Result table, one row per image (:data:`fitting.RESULT_COLUMNS`).
    output_models : path-like
        HDF5 with ``/index`` (n,) and ``/models`` (n, H, W) float32 Gaussian
        model images (zeros where the fit failed), attrs as the image set's.
    settings : dict
        PyBDSF settings (:data:`fitting.DEFAULT_SETTINGS` keys).
    seed : int
        Seed of the stabilising noise (image ``i`` uses ``default_rng([seed, i])``).
    beam_arcsec : float or dict, optional
        Beam FWHM when the set lacks the attribute (dict: per dataset).
    freeze_gc : bool
        Call ``gc.freeze()`` before the loop (see module docstring).

    Notes
    -----
    Every ``checkpoint_every`` images the finished rows and models are written
    atomically to ``<output_csv stem>.part/chunk-<first index>.h5``; a rerun
    with identical settings and input skips those images.  The checkpoint
    directory is removed once both outputs exist.
    """
    settings = {**fitting.DEFAULT_SETTINGS, **(settings or {})}
    output_csv = Path(output_csv)
    output_models = Path(output_models)
    part_dir = output_csv.with_name(output_csv.stem + ".part")
    part_dir.mkdir(parents=True, exist_ok=True)
    with open_image_set(image_set_path, beam_arcsec=beam_arcsec) as image_set:
        start, stop = shard_range(image_set.n_images, shard, n_shards)
        projection = "SIN" if image_set.dataset == "lotss" else "TAN"
        key = _settings_key(settings, image_set, seed, start, stop)
        rows, models = _read_chunks(part_dir, key)
        done = {int(r["index"]) for r in rows}
        todo = [i for i in range(start, stop) if i not in done]
        log.info("%s shard %d/%d: images [%d, %d), %d already done, %d to fit (beam %.2f\", "
                 "%.2f\"/px, noise fraction %g)", image_set.path, shard, n_shards, start, stop,
                 len(done), len(todo), image_set.beam_arcsec, image_set.pixel_scale_arcsec,
                 settings["noise_fraction"])
        peak_flux = image_set.peak_flux(start, stop)
        context = image_set.context(start, stop)
        labels = image_set.labels(start, stop)
        import_bdsf()
        with tempfile.TemporaryDirectory(prefix="radiogen-bdsf-") as tmpdir, \
                gc_frozen(freeze_gc and bool(todo)):
            workdir = Path(tmpdir)
            batch_rows: list[dict] = []
            batch_models: list[np.ndarray | None] = []
            block = 256
            t0 = time.perf_counter()
            n_done = 0
            n_chunks = 0  # written by this run
            bar = Progress(len(todo), f"PyBDSF shard {shard} images", logger=log)
            for block_start in range(0, len(todo), block):
                indices = todo[block_start:block_start + block]
                lo, hi = indices[0], indices[-1] + 1
                images = image_set.images(lo, hi)
                for index in indices:
                    row, model = fitting.measure_image(
                        images[index - lo], index=index, seed=seed,
                        pixel_scale_arcsec=image_set.pixel_scale_arcsec,
                        beam_arcsec=image_set.beam_arcsec, frequency_hz=image_set.frequency_hz,
                        settings=settings, projection=projection, workdir=workdir,
                    )
                    _add_set_columns(row, index - start, peak_flux, context, labels)
                    batch_rows.append(row)
                    batch_models.append(model)
                    n_done += 1
                    bar.update()
                    if len(batch_rows) >= int(settings["checkpoint_every"]):
                        _write_chunk(part_dir / f"chunk-{batch_rows[0]['index']:09d}.h5",
                                     batch_rows, batch_models, key,
                                     (image_set.height, image_set.width))
                        rows.extend(batch_rows)
                        models.update({r["index"]: m for r, m in zip(batch_rows, batch_models)})
                        batch_rows, batch_models = [], []
                        n_chunks += 1
                        block_point("pybdsf.chunk", n_chunks)
            bar.close()
            if batch_rows:
                rows.extend(batch_rows)
                models.update({r["index"]: m for r, m in zip(batch_rows, batch_models)})
            if n_done:
                log.info("fitted %d images in %.1f s (%.2f images/s)", n_done,
                         time.perf_counter() - t0, n_done / (time.perf_counter() - t0))
        table = pd.DataFrame(rows, columns=fitting.RESULT_COLUMNS).sort_values("index")
        table = table.reset_index(drop=True)
        stack = np.zeros((len(table), image_set.height, image_set.width), dtype=np.float32)
        for i, index in enumerate(table["index"]):
            model = models.get(int(index))
            if model is not None:
                stack[i] = model
        with atomic_path(output_models) as tmp:
            with h5py.File(tmp, "w") as h5:
                h5.create_dataset("index", data=table["index"].to_numpy(np.int64))
                h5.create_dataset("models", data=stack, compression="gzip", compression_opts=4,
                                  chunks=(1, image_set.height, image_set.width) if len(table)
                                  else None)
                h5.attrs["image_set"] = str(image_set.path)
                h5.attrs["settings"] = json.dumps(settings, sort_keys=True)
                h5.attrs["seed"] = int(seed)
                h5.attrs["beam_arcsec"] = image_set.beam_arcsec
                h5.attrs["pixel_scale_arcsec"] = image_set.pixel_scale_arcsec
        with atomic_path(output_csv) as tmp:
            table.to_csv(tmp, index=False)
    shutil.rmtree(part_dir, ignore_errors=True)
    counts = table["status"].value_counts().to_dict()
    log.info("shard %d/%d done: %s", shard, n_shards, counts)
    return table


def _add_set_columns(row: dict, offset: int, peak_flux, context, labels) -> None:
    peak = float(peak_flux[offset])
    row["peak_flux_jy"] = peak
    for name in ("model_flux", "image_sum"):
        row[f"{name}_jy"] = row[name] * peak if np.isfinite(peak) else np.nan
    if context is not None and labels is None and context.shape[1] >= 1:
        row["context_peak"] = float(context[offset, 0])  # LoTSS: peak flux first (then size, if any)
    if labels is not None:
        row["label"] = int(labels[offset])


def check_failure_fraction(table: pd.DataFrame, *, max_fraction: float, name: str) -> float:
    """Fraction of images PyBDSF failed on; an error above ``max_fraction``.

    A set in which many fits fail (e.g. a numpy/PyBDSF incompatibility, a time
    limit too short) would otherwise enter the figures as a biased subsample.
    The message quotes the most common reason.
    """
    n = len(table)
    failed = table[table["status"] == "failed"]
    fraction = len(failed) / n if n else 0.0
    if fraction > max_fraction:
        reasons = failed["error"].fillna("").replace("", "no message").value_counts()
        raise InputFileError(
            f"{name}: PyBDSF failed on {len(failed)} of {n} images ({100 * fraction:.1f}%), more than "
            f"evaluation.pybdsf.max_failed_fraction = {max_fraction:g}; most common reason "
            f"({int(reasons.iloc[0])} images): {reasons.index[0]!r}"
        )
    return fraction


def merge_shards(csv_paths: list[str | os.PathLike], output_csv: str | os.PathLike,
                 *, n_images: int | None = None, max_failed_fraction: float = 1.0) -> pd.DataFrame:
    """Concatenate shard tables into one table sorted by image index.

    Raises
    ------
    InputFileError
        A shard table lacks columns, indices repeat, (when ``n_images`` is
        given) the union does not cover ``0..n_images-1`` exactly, or more than
        ``max_failed_fraction`` of the images failed (:func:`check_failure_fraction`;
        the shard tables are kept, so raising the limit needs no refit).
    """
    tables = []
    for path in csv_paths:
        try:
            table = pd.read_csv(path, keep_default_na=True)
        except (OSError, pd.errors.ParserError) as err:
            raise InputFileError(f"{path}: unreadable shard table ({err})") from err
        except pd.errors.EmptyDataError:
            table = pd.DataFrame(columns=fitting.RESULT_COLUMNS)
        missing = [c for c in fitting.RESULT_COLUMNS if c not in table.columns]
        if missing:
            raise InputFileError(f"{path}: shard table lacks columns {', '.join(missing)}")
        tables.append(table[fitting.RESULT_COLUMNS])
    merged = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=fitting.RESULT_COLUMNS)
    merged["error"] = merged["error"].fillna("")
    merged = merged.sort_values("index").reset_index(drop=True)
    if merged["index"].duplicated().any():
        raise InputFileError(f"{output_csv}: shard tables repeat image indices")
    if n_images is not None and not np.array_equal(merged["index"].to_numpy(),
                                                   np.arange(n_images)):
        raise InputFileError(
            f"{output_csv}: shard tables cover {len(merged)} images, expected 0..{n_images - 1}"
        )
    check_failure_fraction(merged, max_fraction=max_failed_fraction, name=str(output_csv))
    with atomic_path(output_csv) as tmp:
        merged.to_csv(tmp, index=False)
    return merged


def read_models(paths: list[str | os.PathLike], indices) -> dict[int, np.ndarray]:
    """Model images for the given image indices from shard model files."""
    wanted = {int(i) for i in indices}
    found: dict[int, np.ndarray] = {}
    for path in paths:
        with h5py.File(path, "r") as h5:
            index = h5["index"][()]
            for pos in np.flatnonzero(np.isin(index, list(wanted))):
                found[int(index[pos])] = h5["models"][pos]
    return found


def model_flux_columns(*tables: pd.DataFrame) -> list[str]:
    """Model-flux columns to compare between PyBDSF tables (summary tables and figures alike).

    Always ``model_flux`` (scaled images, as the paper compares them), then
    ``model_flux_jy`` when every table has it finite on all its ``ok`` rows
    (LoTSS sets carry a peak flux; FIRST sets do not).

    Parameters
    ----------
    *tables : DataFrame
        Merged PyBDSF tables of the compared sets.

    Returns
    -------
    list of str
        Column names, paper quantity first.
    """
    if not tables:
        return ["model_flux"]
    for table in tables:
        ok = table[table["status"] == "ok"] if "status" in table.columns else table
        if "model_flux_jy" not in table.columns or not np.all(np.isfinite(ok["model_flux_jy"].to_numpy(dtype=float))):
            return ["model_flux"]
    return ["model_flux", "model_flux_jy"]
