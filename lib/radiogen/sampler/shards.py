"""Sample sets in shards: which images a shard holds, its HDF5 file, the merge of all shards.

Image ``i`` of a set depends only on the seed, ``i``, the model, the sampler
settings and the guidance (:func:`radiogen.sampler.generate.generate_images`),
so shard ``s`` holds indices ``[s * images_per_shard, (s + 1) * images_per_shard)``
and can be generated, or redone, alone; :func:`aggregate_shards` checks that the
shards belong to one set and merges them in index order.

A shard checkpoints: each finished batch is written atomically to
``<output stem>.part/batch-<first index>.h5`` with a key of everything its images
depend on (model file digest, seed, guidance, sampler and conditioning settings,
shard, batch size, device type and precision).  A rerun of a killed shard reads
the batches whose key matches and samples only the rest; the folder is removed
once the shard file exists.  Each image depends only on its own seeds, so the
resumed shard equals an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import numpy as np
import torch

from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path, open_hdf5, require_datasets
from radiogen.progress import Progress
from radiogen.sampler import conditioning as cond
from radiogen.sampler.generate import (
    SURVEY_ATTRS,
    check_model_kind,
    generate_images,
    image_shape,
    load_sampling_model,
    model_id,
    n_images,
    resolve_autocast,
    batch_size_on,
    resolve_device,
    sampler_settings,
    schedule_levels,
)
from radiogen.testhooks import block_point

__all__ = ["UNCONDITIONAL", "n_shards", "shard_indices", "checkpoint_key", "guide_mismatch", "load_guide",
           "write_shard", "aggregate_shards"]

#: The ``guide`` attribute of sets made with classifier-free guidance.
UNCONDITIONAL = "unconditional"

log = logging.getLogger("radiogen.sampler.generate")


def n_shards(total: int, images_per_shard: int) -> int:
    """Number of shards needed for ``total`` images."""
    if images_per_shard < 1:
        raise ConfigError(f"sample: images_per_shard must be >= 1, got {images_per_shard}")
    return max(1, math.ceil(total / images_per_shard))


def shard_indices(shard: int, *, total: int, images_per_shard: int) -> np.ndarray:
    """Global image indices of ``shard``; an out-of-range shard is a ConfigError."""
    if images_per_shard is None:
        raise ConfigError("images_per_shard is not given: it fixes which image indices each shard holds")
    images_per_shard = int(images_per_shard)
    count = n_shards(total, images_per_shard)
    if not 0 <= shard < count:
        raise ConfigError(
            f"shard index {shard} out of range: {total} images at {images_per_shard} per shard "
            f"make {count} shard(s), 0..{count - 1}"
        )
    start = shard * images_per_shard
    return np.arange(start, min(start + images_per_shard, total), dtype=np.int64)


def _attrs(meta: Mapping, *, model_hash: str, seed: int, guidance: float, sampler: Mapping,
           settings: Mapping) -> dict:
    dataset = meta["dataset"]
    attrs = dict(SURVEY_ATTRS[dataset])
    for key in attrs:
        if meta.get(key) is not None:
            attrs[key] = float(meta[key])
    attrs.update(
        dataset=dataset,
        guidance=float(guidance),
        seed=int(seed),
        model_id=model_hash,
        sampler=json.dumps(dict(sampler), sort_keys=True),
        conditioning=json.dumps(dict(settings), sort_keys=True, default=str),
        image_size=list(image_shape(meta)[1:]),
    )
    if dataset == "first":
        attrs["class_names"] = json.dumps(list(meta["class_names"]))
    else:
        norm = meta["normalisation"]
        attrs.update(
            boxcox_lambda=float(norm["boxcox_lambda"]),
            boxcox_mean=float(norm["boxcox_mean"]),
            boxcox_std=float(norm["boxcox_std"]),
            context_names=json.dumps(cond.context_names(meta)),
        )
        if meta.get("size_normalisation"):
            size_norm = meta["size_normalisation"]
            attrs.update({f"size_{k}": float(size_norm[k]) for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std")})
    return attrs


def _write_arrays(h5: h5py.File, arrays: Mapping[str, np.ndarray]) -> None:
    images = arrays["images"]
    chunk = (max(1, min(64, images.shape[0])),) + images.shape[1:]
    h5.create_dataset("images", data=images.astype(np.float32), chunks=chunk)
    h5.create_dataset("context", data=arrays["context"].astype(np.float32))
    h5.create_dataset("index", data=arrays["index"].astype(np.int64))
    if "peak_flux" in arrays:
        h5.create_dataset("peak_flux", data=arrays["peak_flux"].astype(np.float32))
    if "size" in arrays:
        h5.create_dataset("size", data=arrays["size"].astype(np.float32))
    if "label" in arrays:
        h5.create_dataset("label", data=arrays["label"].astype(np.int64))


def checkpoint_key(model_digest: str, *, seed: int, guidance: float, sampler: Mapping, settings: Mapping,
                   shard: int, images_per_shard: int, batch_size: int, device, autocast_dtype,
                   guide: str = UNCONDITIONAL, sigmas: list[float] | None = None) -> str:
    """What a shard's images depend on, as JSON: a checkpointed batch is reused only under the same key.

    ``model_digest``: :func:`~radiogen.sampler.generate.model_id` of the model file.
    ``sigmas``: the levels of a schedule file (``sample.sampler.schedule``), so that a changed file is noticed.
    """
    key = {
        "model_id": model_digest, "seed": int(seed), "guidance": float(guidance), "guide": guide,
        "sampler": sampler_settings(sampler), "settings": dict(settings), "shard": int(shard),
        "images_per_shard": int(images_per_shard), "batch_size": int(batch_size),
        "device": torch.device(device).type, "autocast": str(autocast_dtype),
    }
    if sigmas is not None:
        key["sigmas"] = list(sigmas)
    return json.dumps(key, sort_keys=True, default=str)


def _write_batch(path: Path, arrays: Mapping[str, np.ndarray], key: str) -> None:
    """One finished batch of a shard (images and conditioning), written atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["key"] = key
        for name, values in arrays.items():
            h5.create_dataset(name, data=values)


def _read_batches(part_dir: Path, key: str) -> dict[int, dict[str, np.ndarray]]:
    """Batches of an interrupted run of the same shard, by first image index.

    Batches with another key (other model, seed, settings ...) and unreadable
    files are left out, and their images sampled again.
    """
    batches = {}
    for path in sorted(part_dir.glob("batch-*.h5")):
        try:
            with h5py.File(path, "r") as h5:
                if h5.attrs.get("key") != key:
                    log.info("%s: written for other inputs or settings, ignored", path)
                    continue
                arrays = {name: h5[name][()] for name in h5}
        except (OSError, KeyError, ValueError) as err:
            log.warning("%s: unreadable checkpoint (%s), sampling its images again", path, err)
            continue
        if "index" in arrays and arrays["index"].size:
            batches[int(arrays["index"][0])] = arrays
    return batches


def _guide_kind(meta: Mapping) -> dict:
    """What a guide shares with the model it guides: images, and the meaning of every context value."""
    kind = {"dataset": meta.get("dataset"), "image shape": list(image_shape(meta)),
            "context size": int(meta["model_config"].get("context_dim", 0))}
    if meta.get("dataset") == "first":
        kind["classes"] = list(meta.get("class_names") or [])
    else:
        kind["context"] = cond.context_names(meta)
        for key in ("normalisation", "size_normalisation"):  # the Box-Cox fits: z means the same flux, size
            norm = meta.get(key) or {}
            kind[key] = {k: float(norm[k]) for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std")
                         if norm.get(k) is not None}
    return kind


def guide_mismatch(meta: Mapping, guide_meta: Mapping) -> list[str]:
    """How a guide's metadata differs from its model's (empty when it may guide it)."""
    mine, theirs = _guide_kind(meta), _guide_kind(guide_meta)
    return [f"{key} {theirs.get(key)!r} (the model's: {mine.get(key)!r})"
            for key in {**mine, **theirs} if theirs.get(key) != mine.get(key)]


def load_guide(guide_path: str | Path | None, meta: Mapping, *, source: str, device):
    """The guiding network for autoguidance and its name (:data:`UNCONDITIONAL` without one).

    The guide must make the same images from the same conditioning as the main
    model (dataset, image shape, context size and meaning: FIRST classes, LoTSS
    context variables and their Box-Cox normalisation); otherwise it is an
    :class:`~radiogen.errors.InputFileError` naming both files and what differs.
    """
    if guide_path is None:
        return None, UNCONDITIONAL
    guide_net, guide_meta = load_sampling_model(guide_path, device=device)
    differ = guide_mismatch(meta, guide_meta)
    if differ:
        raise InputFileError(
            f"{guide_path}: a guide must be a model of the same kind as {source} "
            f"(dataset, image shape, context), but its {'; '.join(differ)}")
    return guide_net, f"model {model_id(guide_path)}"


def write_shard(
    model_path: str | Path,
    output: str | Path,
    *,
    shard: int,
    seed: int,
    guidance: float,
    settings: Mapping,
    sampler: Mapping | None = None,
    images_per_shard: int,
    batch_size: int = 32,
    cuda_batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    expect_dataset: str | None = None,
    expect_image_size: int | None = None,
    expect_context: str | None = None,
    guide_path: str | Path | None = None,
) -> Path:
    """Generate shard ``shard`` of a sample set from ``model.pt`` into ``output`` (HDF5).

    ``settings`` is the dataset block of the sample config (LoTSS: n_images,
    conditioning, peak_flux, peak_flux_range, range_space; FIRST: n_per_class).
    ``expect_dataset`` / ``expect_image_size`` check the model file before any
    work (:func:`check_model_kind`).  ``cuda_batch_size``, when given, replaces
    ``batch_size`` on a GPU (:func:`~radiogen.sampler.generate.batch_size_on`).
    ``guide_path``, a weaker model of the same kind (e.g. an early snapshot of
    the same run), replaces the unconditional pass of classifier-free guidance
    by that model's conditional one (autoguidance); the set's ``guide``
    attribute names it.
    """
    model_path = Path(model_path)
    torch_device = resolve_device(device)
    autocast_dtype = resolve_autocast(precision, torch_device)
    batch_size = batch_size_on(torch_device, batch_size=batch_size, cuda_batch_size=cuda_batch_size)
    net, meta = load_sampling_model(model_path, device=torch_device)
    source = str(model_path)
    check_model_kind(meta, source, dataset=expect_dataset, image_size=expect_image_size,
                     context=expect_context)
    guide_net, guide = load_guide(guide_path, meta, source=source, device=torch_device)
    total = n_images(meta, settings, source=source)
    indices = shard_indices(shard, total=total, images_per_shard=images_per_shard)
    sampler = sampler_settings(sampler)
    # a schedule file is checked against the model before any work; its levels are recorded with the set
    digest = model_id(model_path)  # hashed once: the model file is read whole
    levels = schedule_levels(sampler, model_digest=digest)
    recorded = sampler if levels is None else {**sampler, "sigmas": levels}
    log.info(
        "%s shard %d: images %d..%d of %d, guidance %g, %s %d steps, batch %d on %s (%s)",
        meta["dataset"], shard, indices[0], indices[-1], total, guidance, sampler["solver"], sampler["num_steps"],
        batch_size, torch_device, autocast_dtype or "fp32",
    )
    t0 = time.perf_counter()
    output = Path(output)
    part_dir = output.with_name(output.stem + ".part")
    key = checkpoint_key(digest, seed=seed, guidance=guidance, sampler=sampler, settings=settings,
                         shard=shard, images_per_shard=images_per_shard, batch_size=batch_size,
                         device=torch_device, autocast_dtype=autocast_dtype, guide=guide, sigmas=levels)
    saved = _read_batches(part_dir, key)
    todo = sum(1 for start in range(0, indices.size, batch_size) if int(indices[start]) not in saved)
    if saved:
        log.info("shard %d: %d batch(es) already sampled in %s, %d to sample", shard, len(saved), part_dir, todo)
    bar = Progress(indices.size, f"{meta['dataset']} shard {shard} images", logger=log)
    parts = []
    for n_batch, start in enumerate(range(0, indices.size, batch_size), start=1):
        batch = indices[start:start + batch_size]
        arrays = saved.get(int(batch[0]))
        if arrays is None or not np.array_equal(arrays["index"], batch):
            arrays = generate_images(
                net, meta, batch, seed=seed, guidance=guidance, sampler=sampler, settings=settings,
                batch_size=batch_size, device=torch_device, autocast_dtype=autocast_dtype, source=source,
                guide=guide_net, model_digest=digest, sigmas=levels,
            )
            _write_batch(part_dir / f"batch-{int(batch[0]):09d}.h5", arrays, key)
            block_point("sample.batch", n_batch)
        parts.append(arrays)
        bar.update(batch.size)
    bar.close()
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    attrs = _attrs(meta, model_hash=digest, seed=seed, guidance=guidance,
                   sampler=recorded, settings=settings)
    attrs.update(shard=int(shard), n_shards=n_shards(total, images_per_shard), n_images_total=total,
                 images_per_shard=int(images_per_shard), guide=guide)
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
        _write_arrays(h5, arrays)
        h5.attrs.update(attrs)
    shutil.rmtree(part_dir, ignore_errors=True)
    log.info("wrote %s (%d images, %.1f s)", output, indices.size, time.perf_counter() - t0)
    return output


#: Attributes that must agree between the shards of one sample set.
_SET_ATTRS = ("dataset", "guidance", "guide", "seed", "model_id", "sampler", "conditioning", "n_shards",
              "n_images_total", "images_per_shard")


def aggregate_shards(shard_paths: Sequence[str | Path], output: str | Path) -> Path:
    """Merge all shards of one sample set into ``output`` in global index order.

    Checks that every shard 0..n_shards-1 is present exactly once and that the
    shards share model, seed, sampler and conditioning settings.
    """
    shards = {}
    reference = None
    for path in shard_paths:
        with open_hdf5(path) as h5:
            require_datasets(h5, ["images", "context", "index"])
            attrs = dict(h5.attrs)
            attrs.setdefault("guide", UNCONDITIONAL)  # shards from before autoguidance
            if reference is None:
                reference = (path, attrs)
            for key in _SET_ATTRS:
                if key not in attrs:
                    raise InputFileError(f"{path}: not a sample shard (attribute {key!r} missing)")
                if str(attrs[key]) != str(reference[1][key]):
                    raise InputFileError(
                        f"{path}: {key}={attrs[key]!r} differs from {reference[0]} ({reference[1][key]!r});"
                        " shards of different runs cannot be merged"
                    )
            shard = int(attrs["shard"])
            if shard in shards:
                raise InputFileError(f"{path}: shard {shard} given twice (also {shards[shard]})")
            shards[shard] = Path(path)
    if reference is None:
        raise InputFileError(f"{output}: no shard files to aggregate")
    expected = int(reference[1]["n_shards"])
    missing = sorted(set(range(expected)) - set(shards))
    if missing:
        raise InputFileError(f"{output}: shard(s) {missing} of {expected} missing from the inputs")
    total = int(reference[1]["n_images_total"])
    output = Path(output)
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as out:
        offset = 0
        for shard in range(expected):
            with open_hdf5(shards[shard]) as h5:
                n = h5["images"].shape[0]
                if shard == 0:
                    for name in h5:
                        shape = (total,) + h5[name].shape[1:]
                        chunks = (max(1, min(64, total)),) + h5[name].shape[1:] if name == "images" else None
                        out.create_dataset(name, shape=shape, dtype=h5[name].dtype, chunks=chunks)
                    attrs = {k: v for k, v in h5.attrs.items()
                             if k not in ("shard", "images_per_shard")}
                    out.attrs.update(attrs)
                    out.attrs["n_images"] = total
                if int(h5["index"][0]) != offset:
                    raise InputFileError(
                        f"{shards[shard]}: first image index {h5['index'][0]}, expected {offset}"
                    )
                for name in out:
                    out[name][offset:offset + n] = h5[name][()]
                offset += n
        if offset != total:
            raise InputFileError(f"{output}: shards hold {offset} images, expected {total}")
    log.info("aggregated %d shard(s), %d images into %s", expected, total, output)
    return output
