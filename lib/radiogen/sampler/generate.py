"""Generation of sample images from a trained model: noise, conditioning, sampling.

Reproducibility contract: image ``i`` of a sample set (global index over the
whole set) is a function of (global seed, i, model, sampler settings, w) only.
Its initial noise comes from a torch generator seeded with
SeedSequence([seed, NOISE_STREAM, i]) and its conditioning from
SeedSequence([seed, CONTEXT_STREAM, i]); shard ``s`` holds indices
[s * images_per_shard, (s + 1) * images_per_shard), so a shard's seeds follow
from the global seed and the shard index and any shard can be rerun alone.
The noise does not depend on w, so a guidance sweep compares the same latents.
Shard files and their merge: :mod:`radiogen.sampler.shards`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError, RadiogenError
from radiogen.io import file_digest
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
    "image_shape",
    "image_noise",
    "conditioning",
    "resolve_device",
    "resolve_autocast",
    "batch_size_on",
    "schedule_levels",
    "generate_images",
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

    On a CUDA device cuDNN's autotuner is switched on (``cudnn.benchmark``):
    a sampling run calls the network at one or two fixed shapes thousands of
    times, so timing the convolution algorithms once pays back at once.
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
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
    return net, meta


def batch_size_on(device: torch.device, *, batch_size: int, cuda_batch_size: int | None = None) -> int:
    """Images per sampler batch on ``device``: ``sample.cuda_batch_size`` on a GPU, else ``sample.batch_size``."""
    if device.type == "cuda" and cuda_batch_size is not None:
        return int(cuda_batch_size)
    return int(batch_size)


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
    """Global label array: by ``n_per_class`` (class-ordered), or ``classes`` taken in turn
    (image i gets ``classes[i mod len]``, ``n_images`` in all; ``radiogen generate``)."""
    names = meta.get("class_names")
    if not names:
        raise InputFileError(f"{source}: FIRST model has no class_names")
    if settings.get("classes"):
        wanted = cond.class_indices(settings["classes"], names, source=source)
        return wanted[np.arange(int(settings["n_images"])) % wanted.size]
    return cond.first_labels(settings.get("n_per_class", 2000), len(names))


def n_images(meta: Mapping, settings: Mapping, *, source: str = "model") -> int:
    """Size of the whole sample set for a dataset block of the config (or a ``radiogen generate`` request)."""
    if _dataset(meta, source) == "first":
        return int(_labels(meta, settings, source).size)
    return int(settings.get("n_images", 50000))


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
            size_mode=settings.get("size_mode"),
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
        elif key == "schedule":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"sample.sampler.schedule must be 'karras' or a schedule file, got {value!r}")
            out[key] = value
        else:
            out[key] = float(value) if key != "num_steps" else int(value)
    return out


def schedule_levels(sampler: Mapping, *, model_digest: str | None) -> list[float] | None:
    """The noise levels of ``sampler["schedule"]``: None for ``karras`` (the rho schedule), else the file's.

    A file is checked against ``model_digest`` (:func:`radiogen.sampler.schedules.read_schedule`).
    """
    schedule = sampler.get("schedule", "karras")
    if schedule == "karras":
        return None
    from radiogen.sampler.schedules import read_schedule

    return read_schedule(schedule, model_digest=model_digest, solver=sampler.get("solver"))


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
    guide=None,
    model_digest: str | None = None,
    sigmas: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Sample the images with global ``indices``; post-processed to [0, 1].

    Returns a dict with ``images`` (n, H, W) float32 in [0, 1] (clamped to
    [-1, 1] then mapped by (x + 1) / 2), ``index`` and the conditioning arrays
    of :func:`conditioning`.  ``context`` (n, K), when given, replaces the
    conditioning drawn from ``settings`` (simulated maps ask for given fluxes).
    ``guide``, a network loaded like ``net``, turns the guidance into
    autoguidance (:func:`~radiogen.sampler.heun.guided_denoiser`).
    ``model_digest`` (:func:`model_id` of the model file) is needed when
    ``sampler["schedule"]`` is a schedule file, to refuse one made for another model;
    ``sigmas``, the levels :func:`schedule_levels` already read from that file (a
    shard calls this once per batch), skips reading it again.
    """
    if not (math.isfinite(guidance) and guidance >= 0):
        raise ConfigError(f"guidance w must be a finite number >= 0, got {guidance!r}")
    sampler = sampler_settings(sampler)
    if sigmas is None:
        sigmas = schedule_levels(sampler, model_digest=model_digest)
    del sampler["schedule"]
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
                guide=guide,
                autocast_dtype=autocast_dtype,
                generators=generators,
                sigmas=sigmas,
                **sampler,
            )
        images[start:stop] = ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).cpu().numpy()
        done = stop
        if progress is not None:
            progress(done, indices.size)
    arrays["images"] = images[:, 0] if shape[0] == 1 else images
    arrays["index"] = indices
    return arrays
