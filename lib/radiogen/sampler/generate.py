"""Sharded generation of sample sets and their aggregation into one HDF5 file.

Reproducibility contract: image ``i`` of a sample set (global index over the
whole set) is a function of (global seed, i, model, sampler settings, w) only.
Its initial noise comes from a torch generator seeded with
SeedSequence([seed, NOISE_STREAM, i]) and its conditioning from
SeedSequence([seed, CONTEXT_STREAM, i]); shard ``s`` holds indices
[s * images_per_shard, (s + 1) * images_per_shard), so a shard's seeds follow
from the global seed and the shard index and any shard can be rerun alone.
The noise does not depend on w, so a guidance sweep compares the same latents.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import h5py
import numpy as np
import torch

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError, RadiogenError
from radiogen.io import atomic_path, open_hdf5, require_datasets, file_digest
from radiogen.progress import Progress
from radiogen.sampler import conditioning as cond
from radiogen.sampler.solvers import SOLVERS, solve
from radiogen.seeds import stream
from radiogen.surveys import SURVEYS, survey_attrs

__all__ = [
    "NOISE_STREAM",
    "SURVEY_ATTRS",
    "SAMPLER_DEFAULTS",
    "model_id",
    "load_sampling_model",
    "n_images",
    "n_shards",
    "shard_indices",
    "image_shape",
    "image_noise",
    "conditioning",
    "resolve_device",
    "resolve_autocast",
    "generate_images",
    "write_shard",
    "aggregate_shards",
]

log = logging.getLogger(__name__)

#: Seed stream of the initial noise of each image (radiogen.seeds).
NOISE_STREAM = stream("sample.noise")

#: Survey properties written as sample-set attributes (overridden by model metadata).
SURVEY_ATTRS = {name: survey_attrs(name) for name in SURVEYS}

#: Sampler settings: the ``sample.sampler`` schema defaults (paper Sect. 4.3 / Alg. 1; churn off).
SAMPLER_DEFAULTS = section_defaults("sample.sampler")


def model_id(path: str | Path) -> str:
    """SHA-256 hex digest of the model file: identifies the weights a set came from."""
    return file_digest(path)


def load_sampling_model(path: str | Path, *, device: str | torch.device = "cpu"):
    """Load ``model.pt`` with :func:`radiogen.model.load_model`, in eval mode.

    Any failure to rebuild the network from the file (e.g. weights of another
    architecture) becomes an :class:`InputFileError` naming the file.
    """
    from radiogen.model import load_model

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: model file does not exist")
    try:
        net, meta = load_model(path, device=device)
    except RadiogenError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise InputFileError(f"{path}: cannot rebuild the network from this file ({err})") from err
    net.eval()
    return net, meta


def check_model_kind(meta: Mapping, source: str, *, dataset: str | None = None,
                     image_size: int | None = None, context: str | None = None) -> None:
    """Raise :class:`InputFileError` unless the model file is of the expected kind.

    Parameters
    ----------
    meta : mapping
        Model metadata from :func:`load_sampling_model`.
    source : str
        The model file, named in the message.
    dataset : {"lotss", "first"}, optional
        The dataset the caller samples; its context must match too (LoTSS one
        peak-flux value, FIRST one-hot over the model's classes).
    image_size : int, optional
        Expected image side in pixels.
    context : {"peak_flux", "peak_flux+size"}, optional
        Expected LoTSS conditioning (config ``lotss.preprocess.context``).
    """
    found = _dataset(meta, source)
    if dataset is not None and found != dataset:
        raise InputFileError(f"{source}: this is a {found} model, but {dataset} images were asked for")
    context_dim = int(meta.get("model_config", {}).get("context_dim", 0))
    expected_context = (len(cond.context_names(meta)) if found == "lotss"
                        else len(meta.get("class_names") or []))
    if context_dim != expected_context:
        raise InputFileError(
            f"{source}: {found} model takes a context of {context_dim} value(s), expected {expected_context}"
        )
    if found == "lotss" and context is not None and "+".join(cond.context_names(meta)) != context:
        raise InputFileError(
            f"{source}: model is conditioned on {'+'.join(cond.context_names(meta))}, but the config asks for "
            f"{context} (lotss.preprocess.context); retrain or change the config")
    size = [int(v) for v in meta.get("image_size", [])]
    if image_size is not None and size != [image_size, image_size]:
        raise InputFileError(f"{source}: model makes {size} px images, expected {image_size}x{image_size}")


def _dataset(meta: Mapping, source: str) -> str:
    dataset = meta.get("dataset")
    if dataset not in SURVEY_ATTRS:
        raise InputFileError(f"{source}: model dataset {dataset!r} is not one of {sorted(SURVEY_ATTRS)}")
    return dataset


def _labels(meta: Mapping, settings: Mapping, source: str) -> np.ndarray:
    names = meta.get("class_names")
    if not names:
        raise InputFileError(f"{source}: FIRST model has no class_names")
    return cond.first_labels(settings.get("n_per_class", 2000), len(names))


def n_images(meta: Mapping, settings: Mapping, *, source: str = "model") -> int:
    """Size of the whole sample set for a dataset block of the config."""
    if _dataset(meta, source) == "first":
        return int(_labels(meta, settings, source).size)
    return int(settings.get("n_images", 50000))


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


def image_shape(meta: Mapping) -> tuple[int, int, int]:
    """(C, H, W) of the model's images; ``image_size`` may be an int or [H, W]."""
    size = meta["image_size"]
    height, width = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    return int(meta.get("channels", 1)), height, width


def _image_seed(seed: int, stream: int, index: int) -> int:
    state = np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(2, np.uint32)
    return int(state[0]) | (int(state[1]) << 32)


def image_noise(
    seed: int, indices: Sequence[int], shape: Sequence[int]
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Standard normal latents (n, *shape) float32, one generator per image.

    The generators are returned positioned after the latent draw; the sampler
    uses them for churn noise so that stochastic sampling stays per image.
    """
    generators, latents = [], []
    for index in indices:
        gen = torch.Generator().manual_seed(_image_seed(seed, NOISE_STREAM, index))
        latents.append(torch.randn(tuple(shape), generator=gen, dtype=torch.float32))
        generators.append(gen)
    return torch.stack(latents), generators


def conditioning(
    meta: Mapping, settings: Mapping, indices: Sequence[int], *, seed: int, source: str = "model"
) -> dict[str, np.ndarray]:
    """Conditioning arrays for global ``indices``.

    Returns ``context`` (n, K) float32 and, for LoTSS, ``peak_flux`` (n,)
    float32 in Jy/beam (inverse standardisation and Box-Cox of the context)
    and, for a size-conditioned model, ``size`` (n,) float32 in arcsec; for
    FIRST, ``label`` (n,) int64.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if _dataset(meta, source) == "lotss":
        context = cond.lotss_context(
            meta,
            indices,
            seed=seed,
            mode=settings.get("conditioning", "histogram"),
            peak_flux=settings.get("peak_flux"),
            peak_flux_range=settings.get("peak_flux_range"),
            range_space=settings.get("range_space", "boxcox"),
            size=settings.get("size"),
            size_range=settings.get("size_range"),
            source=source,
        )
        peak = cond.context_to_peak_flux(context[:, 0], meta, source=source)
        arrays = {"context": context, "peak_flux": peak.astype(np.float32)}
        if context.shape[1] > 1:
            arrays["size"] = cond.context_to_size(context[:, 1], meta, source=source).astype(np.float32)
        return arrays
    labels = _labels(meta, settings, source)[indices]
    return {"context": cond.one_hot(labels, len(meta["class_names"])), "label": labels}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the GPU when one is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"sample.device: {name!r} is not a torch device") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"sample.device: {name!r} requested but no GPU is visible")
    return device


def resolve_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 autocast on GPUs with native bf16, else fp32; ``bf16``/``fp32`` force it."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"sample.precision: unknown {precision!r} (auto, fp32, bf16)")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto" and torch.cuda.get_device_capability(device)[0] < 8:
        # Before Ampere bf16 is only emulated (torch.cuda.is_bf16_supported() says
        # True there all the same): far slower than fp32.
        return None
    return torch.bfloat16


def sampler_settings(settings: Mapping | None) -> dict:
    """Sampler block with defaults filled in; unknown keys are a ConfigError."""
    out = dict(SAMPLER_DEFAULTS)
    for key, value in (settings or {}).items():
        if key not in out:
            raise ConfigError(f"sample.sampler.{key}: unknown sampler setting")
        if key == "solver":
            if value not in SOLVERS:
                raise ConfigError(f"sample.sampler.solver must be one of {SOLVERS}, got {value!r}")
            out[key] = str(value)
        else:
            out[key] = float(value) if key != "num_steps" else int(value)
    return out


def generate_images(
    net,
    meta: Mapping,
    indices: Sequence[int],
    *,
    seed: int,
    guidance: float,
    sampler: Mapping | None = None,
    settings: Mapping | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    source: str = "model",
    context: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Sample the images with global ``indices``; post-processed to [0, 1].

    Returns a dict with ``images`` (n, H, W) float32 in [0, 1] (clamped to
    [-1, 1] then mapped by (x + 1) / 2), ``index`` and the conditioning arrays
    of :func:`conditioning`.  ``context`` (n, K), when given, replaces the
    conditioning drawn from ``settings`` (simulated maps ask for given fluxes).
    """
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ConfigError(f"guidance w must be a finite number >= 0, got {guidance!r}")
    sampler = sampler_settings(sampler)
    settings = settings or {}
    device = torch.device(device)
    indices = np.asarray(indices, dtype=np.int64)
    shape = image_shape(meta)
    if context is None:
        arrays = conditioning(meta, settings, indices, seed=seed, source=source)
    else:
        arrays = {"context": np.asarray(context, dtype=np.float32).reshape(indices.size, -1)}
    images = np.empty((indices.size,) + shape, dtype=np.float32)
    conditional = getattr(net, "context_dim", None) != 0
    done = 0
    for start in range(0, indices.size, batch_size):
        stop = min(start + batch_size, indices.size)
        noise, generators = image_noise(seed, indices[start:stop], shape)
        context = torch.from_numpy(arrays["context"][start:stop]).to(device) if conditional else None
        with torch.no_grad():
            x = solve(
                net,
                noise.to(device),
                context=context,
                guidance=float(guidance),
                autocast_dtype=autocast_dtype,
                generators=generators,
                **sampler,
            )
        images[start:stop] = ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).cpu().numpy()
        done = stop
        if progress is not None:
            progress(done, indices.size)
    arrays["images"] = images[:, 0] if shape[0] == 1 else images
    arrays["index"] = indices
    return arrays


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
    device: str = "auto",
    precision: str = "auto",
    expect_dataset: str | None = None,
    expect_image_size: int | None = None,
    expect_context: str | None = None,
) -> Path:
    """Generate shard ``shard`` of a sample set from ``model.pt`` into ``output`` (HDF5).

    ``settings`` is the dataset block of the sample config (LoTSS: n_images,
    conditioning, peak_flux, peak_flux_range, range_space; FIRST: n_per_class).
    ``expect_dataset`` / ``expect_image_size`` check the model file before any
    work (:func:`check_model_kind`).
    """
    model_path = Path(model_path)
    torch_device = resolve_device(device)
    autocast_dtype = resolve_autocast(precision, torch_device)
    net, meta = load_sampling_model(model_path, device=torch_device)
    source = str(model_path)
    check_model_kind(meta, source, dataset=expect_dataset, image_size=expect_image_size,
                     context=expect_context)
    total = n_images(meta, settings, source=source)
    indices = shard_indices(shard, total=total, images_per_shard=images_per_shard)
    sampler = sampler_settings(sampler)
    log.info(
        "%s shard %d: images %d..%d of %d, w=%g, %s %d steps, batch %d on %s (%s)",
        meta["dataset"], shard, indices[0], indices[-1], total, guidance, sampler["solver"], sampler["num_steps"],
        batch_size, torch_device, autocast_dtype or "fp32",
    )
    t0 = time.perf_counter()
    bar = Progress(indices.size, f"{meta['dataset']} shard {shard} images", logger=log)

    def progress(done: int, n: int) -> None:
        bar.update(done - bar.done)

    arrays = generate_images(
        net, meta, indices, seed=seed, guidance=guidance, sampler=sampler, settings=settings,
        batch_size=batch_size, device=torch_device, autocast_dtype=autocast_dtype,
        progress=progress, source=source,
    )
    bar.close()
    attrs = _attrs(meta, model_hash=model_id(model_path), seed=seed, guidance=guidance,
                   sampler=sampler, settings=settings)
    attrs.update(shard=int(shard), n_shards=n_shards(total, images_per_shard), n_images_total=total,
                 images_per_shard=int(images_per_shard))
    output = Path(output)
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as h5:
        _write_arrays(h5, arrays)
        h5.attrs.update(attrs)
    log.info("wrote %s (%d images, %.1f s)", output, indices.size, time.perf_counter() - t0)
    return output


#: Attributes that must agree between the shards of one sample set.
_SET_ATTRS = ("dataset", "guidance", "seed", "model_id", "sampler", "conditioning", "n_shards",
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
