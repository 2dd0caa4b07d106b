"""EDM diffusion model: U-Net, preconditioning, loss, training and the model file.

The model file ``model.pt`` (a :func:`torch.save` dict, written by
:func:`save_model`) carries everything sampling needs:

``model_config``
    keyword arguments of :func:`build_network` (``architecture``, network
    shape, image size, channels, context length, sigma_data; for the
    ``lofar-diffusion`` architecture also ``context_kind``);
``state_dict``
    the EMA weights of the preconditioned denoiser;
``normalisation``
    LoTSS: ``{boxcox_lambda, boxcox_mean, boxcox_std}`` of the peak-flux context;
``class_names``
    FIRST: the class names of the one-hot context;
``context_histogram``
    LoTSS: ``{edges, counts}``, 100-bin histogram of the training split's context;
``context_names``
    LoTSS: the conditioning variables in context order, ``["peak_flux"]`` or
    ``["peak_flux", "size"]`` (None in files from before size conditioning:
    peak flux only);
``size_normalisation``
    LoTSS with size: ``{boxcox_lambda, boxcox_mean, boxcox_std}`` of the size
    context (the training set's size in arcsec: Feret size or catalogue LAS);
``context_histogram_2d``
    LoTSS with size: ``{edges: [peak-flux edges, size edges], counts}``, the
    joint histogram of the training split's context, for joint draws;
``dataset``, ``image_size`` (H, W), ``channels``, ``train_config``, ``step``,
``history`` (loss curves).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path
from radiogen.model.lofar_diffusion import LofarDiffusionUNet
from radiogen.model.networks import UNet
from radiogen.model.precond import EDMPrecond

__all__ = ["build_network", "EDMPrecond", "UNet", "load_model", "save_model", "MODEL_DEFAULTS"]

#: Network settings: the ``model`` schema's defaults, the authors' released
#: configuration (30.85 M parameters in their code; 31.1 M here with the learned
#: null token and the linear layer after the sinusoidal noise encoding).
MODEL_DEFAULTS: dict[str, Any] = section_defaults("model")

#: Keys that describe the data rather than the network; taken from the training set.
DATA_KEYS = ("image_channels", "image_size", "context_dim", "context_kind")

#: ``model.architecture`` values and what builds them.
ARCHITECTURES = ("radiogen", "lofar-diffusion")

_FILE_KEYS = ("model_config", "state_dict", "dataset", "image_size", "channels", "step")


def model_config_from(settings: dict | None, *, image_channels: int, image_size, context_dim: int,
                      dataset: str | None = None) -> dict:
    """Complete a ``model`` config section with defaults and the data's shape.

    For ``architecture: lofar-diffusion`` the dataset decides how the context
    enters (``context_kind``: FIRST one-hot ``labels``, LoTSS ``values``).
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(MODEL_DEFAULTS) - set(DATA_KEYS))
    if unknown:
        raise ConfigError(f"model: unknown setting(s) {', '.join(unknown)}")
    config = {**MODEL_DEFAULTS, **settings}
    config["channel_mults"] = [int(m) for m in config["channel_mults"]]
    config.update(
        image_channels=int(image_channels),
        image_size=[int(s) for s in image_size],
        context_dim=int(context_dim),
    )
    if config.get("architecture") == "lofar-diffusion":
        config["context_kind"] = "labels" if dataset == "first" else "values"
    return config


def build_network(model_config: dict) -> EDMPrecond:
    """Build the preconditioned denoiser D(x; sigma) from a model config dict.

    Parameters
    ----------
    model_config : dict
        Keys of :data:`MODEL_DEFAULTS` (missing ones take the default) plus
        ``image_channels``, ``image_size`` ([H, W] pixels), ``context_dim`` and,
        for ``architecture: lofar-diffusion``, ``context_kind``.

    Raises
    ------
    ConfigError
        Unknown keys, or an image size / channel count the U-Net cannot take.
    """
    config = {**MODEL_DEFAULTS, **model_config}
    unknown = sorted(set(config) - set(MODEL_DEFAULTS) - set(DATA_KEYS))
    if unknown:
        raise ConfigError(f"model config: unknown key(s) {', '.join(unknown)}")
    if int(config.get("image_channels", 1)) < 1:
        raise ConfigError("model config: image_channels must be >= 1")
    architecture = config["architecture"]
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"model.architecture must be one of {', '.join(ARCHITECTURES)}, not {architecture!r}")
    if architecture == "lofar-diffusion":
        return EDMPrecond(_lofar_diffusion_unet(config), sigma_data=float(config["sigma_data"]),
                          image_size=config.get("image_size"))
    unet = UNet(
        image_channels=int(config.get("image_channels", 1)),
        base_channels=int(config["base_channels"]),
        channel_mults=[int(m) for m in config["channel_mults"]],
        enc_blocks=int(config["enc_blocks"]),
        dec_blocks=int(config["dec_blocks"]),
        attention_levels=int(config["attention_levels"]),
        attention_heads=int(config["attention_heads"]),
        attention_head_channels=int(config["attention_head_channels"]),
        attention_kernel_size=int(config["attention_kernel_size"]),
        norm_groups=int(config["norm_groups"]),
        dropout=float(config["dropout"]),
        context_dim=int(config.get("context_dim", 0)),
        context_dropout=float(config["context_dropout"]),
        emb_mult=int(config["emb_mult"]),
    )
    image_size = config.get("image_size")
    return EDMPrecond(unet, sigma_data=float(config["sigma_data"]), image_size=image_size)


def _lofar_diffusion_unet(config: dict) -> LofarDiffusionUNet:
    if int(config["dec_blocks"]) != int(config["enc_blocks"]) + 1:
        raise ConfigError(
            f"model.dec_blocks must equal enc_blocks + 1 (got enc_blocks={config['enc_blocks']}, "
            f"dec_blocks={config['dec_blocks']})")
    return LofarDiffusionUNet(
        image_channels=int(config.get("image_channels", 1)),
        base_channels=int(config["base_channels"]),
        channel_mults=[int(m) for m in config["channel_mults"]],
        enc_blocks=int(config["enc_blocks"]),
        attention_levels=int(config["attention_levels"]),
        attention_heads=int(config["attention_heads"]),
        attention_head_channels=int(config["attention_head_channels"]),
        norm_groups=int(config["norm_groups"]),
        dropout=float(config["dropout"]),
        context_dim=int(config.get("context_dim", 0)),
        context_kind=str(config.get("context_kind", "values")),
        context_dropout=float(config["context_dropout"]),
        emb_mult=int(config["emb_mult"]),
    )


def save_model(
    path: str | os.PathLike,
    *,
    model_config: dict,
    state_dict: dict,
    dataset: str,
    train_config: dict,
    step: int,
    normalisation: dict | None = None,
    class_names: list[str] | None = None,
    context_histogram: dict | None = None,
    history: dict | None = None,
    context_names: list[str] | None = None,
    size_normalisation: dict | None = None,
    context_histogram_2d: dict | None = None,
) -> None:
    """Write the model file atomically (see the module docstring for its keys)."""
    payload = {
        "format": "radiogen-model-1",
        "model_config": dict(model_config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "dataset": str(dataset),
        "image_size": [int(s) for s in model_config["image_size"]],
        "channels": int(model_config["image_channels"]),
        "train_config": dict(train_config),
        "step": int(step),
        "normalisation": None if normalisation is None else {k: float(v) for k, v in normalisation.items()},
        "class_names": None if class_names is None else [str(c) for c in class_names],
        "context_histogram": None
        if context_histogram is None
        else {
            "edges": [float(e) for e in np.asarray(context_histogram["edges"])],
            "counts": [int(c) for c in np.asarray(context_histogram["counts"])],
        },
        "history": history or {},
        "context_names": None if context_names is None else [str(c) for c in context_names],
        "size_normalisation": None if size_normalisation is None
        else {k: float(v) for k, v in size_normalisation.items()},
        "context_histogram_2d": None if context_histogram_2d is None else {
            "edges": [[float(e) for e in np.asarray(axis)] for axis in context_histogram_2d["edges"]],
            "counts": np.asarray(context_histogram_2d["counts"]).astype(int).tolist(),
        },
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[EDMPrecond, dict]:
    """Load a model file written by :func:`save_model`.

    Returns
    -------
    net : EDMPrecond
        The denoiser with the EMA weights, on ``device``, in eval mode.
    meta : dict
        Every other key of the file; ``context_histogram`` edges/counts as numpy arrays.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: model file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise InputFileError(f"{path}: not a readable radiogen model file ({err})") from err
    if not isinstance(payload, dict):
        raise InputFileError(f"{path}: not a radiogen model file (no dict inside)")
    missing = [k for k in _FILE_KEYS if k not in payload]
    if missing:
        raise InputFileError(f"{path}: model file lacks key(s) {', '.join(missing)}")
    net = build_network(payload["model_config"])
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise InputFileError(f"{path}: weights do not match the stored model_config ({err})") from err
    net.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    hist = meta.get("context_histogram")
    if hist is not None:
        meta["context_histogram"] = {
            "edges": np.asarray(hist["edges"], dtype=np.float64),
            "counts": np.asarray(hist["counts"], dtype=np.int64),
        }
    hist = meta.get("context_histogram_2d")
    if hist is not None:
        meta["context_histogram_2d"] = {
            "edges": [np.asarray(axis, dtype=np.float64) for axis in hist["edges"]],
            "counts": np.asarray(hist["counts"], dtype=np.int64),
        }
    return net, meta
