"""Import the seed paper's published networks as radiogen model files.

The authors of Vicanek Martinez et al. (2024) publish their trained LoTSS and
FIRST denoisers as ``parameters_<name>.pt`` (a ``torch.save`` dict with the
raw weights under ``model``, the EMA weights under ``ema_model`` as a
``torch.optim.swa_utils.AveragedModel`` state dict, keys ``module.`` + the raw
keys plus ``n_averaged``, and ``optimizer``) with a ``config_<name>.json``.
:func:`import_lofar_diffusion` rebuilds them as radiogen's
``lofar-diffusion`` network (:mod:`radiogen.model.lofar_diffusion`), renames
their parameters to radiogen's, and writes an ordinary radiogen model file.

A LoTSS model is conditioned on the standardised Box-Cox transform of the image
maximum (peak flux), fitted by the authors on the training-set maxima; the
import needs that transform, either fitted again from ``LOFAR_Dataset.h5``
(which also gives the 100-bin context histogram that sampling draws from) or
given as (lambda, mean, std).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radiogen.errors import ConfigError, InputFileError
from radiogen.model import build_network, save_model
from radiogen.surveys import FIRST_CLASS_NAMES as FIRST_CLASSES

__all__ = ["authors_model_config", "authors_state_dict", "rename_authors_keys", "published_boxcox",
           "import_lofar_diffusion", "WEIGHT_SETS"]

#: ``--weights`` choices: the EMA weights the authors sample with, or the raw ones.
WEIGHT_SETS = ("ema", "raw")

#: Keys of the authors' config that shape their network (others are training settings).
_NETWORK_KEYS = {"init_channels", "out_channels", "channel_mults", "image_channels", "n_labels", "context",
                 "context_dim", "label_dropout", "context_dropout", "norm_groups", "dropout", "num_res_blocks",
                 "attention_levels", "attention_heads", "attention_head_channels", "sigma_data", "image_size",
                 "model_type", "model_name", "sigma_min", "sigma_max"}

#: Sub-module names: the authors' -> radiogen's, inside a residual block and an attention layer.
_BLOCK_NAMES = {"in_layers.0": "norm_in", "in_layers.2": "conv_in", "h_upd.1": "down_h", "x_upd.1": "down_x",
                "emb_layers.1": "film", "out_layers.0": "norm_out", "out_layers.3": "conv_out", "res_conv": "skip"}
_ATTENTION_NAMES = {"pre_norm": "norm", "to_qkv": "qkv", "to_out.0": "proj", "to_out.1": "norm_out"}
_TOP_NAMES = {"init_conv": "conv_in", "feature_emb.lin1": "embed_mlp.first", "feature_emb.lin2": "embed_mlp.second",
              "context_emb.lin1": "context_embed.first", "context_emb.lin2": "context_embed.second",
              "label_emb": "context_embed", "out.0": "norm_out", "out.2": "conv_out"}


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise InputFileError(f"{path}: config file does not exist")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: not a readable JSON config ({err})") from err
    if not isinstance(config, dict):
        raise InputFileError(f"{path}: expected a JSON object")
    return config


def authors_model_config(config_path: str | os.PathLike) -> tuple[dict, dict]:
    """radiogen ``model_config`` of the network an authors' ``config_<name>.json`` describes.

    Returns
    -------
    model_config : dict
        For :func:`radiogen.model.build_network` (``architecture: lofar-diffusion``).
    authors : dict
        The authors' config as read (kept in the model file's ``train_config``).

    Raises
    ------
    InputFileError
        Not an ``EDMPrecond`` config, a required key missing, or a network option
        the import does not reproduce.
    """
    path = Path(config_path)
    cfg = _read_json(path)
    if cfg.get("model_type", "EDMPrecond") != "EDMPrecond":
        raise InputFileError(f"{path}: model_type {cfg.get('model_type')!r} is not EDMPrecond")
    missing = [k for k in ("init_channels", "channel_mults", "image_size") if k not in cfg]
    if missing:
        raise InputFileError(f"{path}: lacks key(s) {', '.join(missing)}")
    channels = int(cfg.get("image_channels", 1))
    if cfg.get("out_channels") not in (None, channels):
        raise InputFileError(f"{path}: out_channels {cfg['out_channels']} differs from image_channels {channels}")
    if cfg.get("sigma_min", 0) not in (0, None) or cfg.get("sigma_max") not in (None, float("inf")):
        raise InputFileError(f"{path}: sigma_min/sigma_max limits of the preconditioner are not supported")
    n_labels = int(cfg.get("n_labels", 0) or 0)
    # Their Unet takes the context length from the list of context names when present.
    context_dim = len(cfg["context"]) if cfg.get("context") else int(cfg.get("context_dim", 0) or 0)
    if n_labels and context_dim:
        raise InputFileError(f"{path}: both class labels and a continuous context; radiogen takes one context")
    size = int(cfg["image_size"])
    enc_blocks = int(cfg.get("num_res_blocks", 2))
    model_config = {
        "architecture": "lofar-diffusion",
        "base_channels": int(cfg["init_channels"]),
        "channel_mults": [int(m) for m in cfg["channel_mults"]],
        "enc_blocks": enc_blocks,
        "dec_blocks": enc_blocks + 1,
        "attention_levels": int(cfg.get("attention_levels", 3)),
        "attention_heads": int(cfg.get("attention_heads", 4)),
        "attention_head_channels": int(cfg.get("attention_head_channels", 32)),
        "attention_kernel_size": 1,
        "norm_groups": int(cfg.get("norm_groups", 32)),
        "dropout": float(cfg.get("dropout", 0.0)),
        "context_dropout": float(cfg.get("label_dropout" if n_labels else "context_dropout", 0.0) or 0.0),
        "emb_mult": 4,  # their embedding is 4 x init_channels wide
        "sigma_data": float(cfg.get("sigma_data", 0.5)),
        "image_channels": channels,
        "image_size": [size, size],
        "context_dim": n_labels or context_dim,
        "context_kind": "labels" if n_labels else "values",
    }
    return model_config, cfg


def authors_state_dict(parameters_path: str | os.PathLike, *, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The authors' ``EDMPrecond`` weights from ``parameters_<name>.pt``, keys without the wrapper prefixes.

    ``weights="ema"`` reads ``ema_model`` (keys ``module.model.*``; ``n_averaged``
    dropped), ``"raw"`` reads ``model`` (keys ``model.*``).  Keys come back as
    their ``Unet``'s own names (``init_conv.weight`` ...).
    """
    path = Path(parameters_path)
    if weights not in WEIGHT_SETS:
        raise ConfigError(f"--weights must be one of {', '.join(WEIGHT_SETS)}, not {weights!r}")
    if not path.exists():
        raise InputFileError(f"{path}: parameter file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt files
        raise InputFileError(f"{path}: not a readable torch parameter file ({err})") from err
    entry = "ema_model" if weights == "ema" else "model"
    if not isinstance(payload, dict) or entry not in payload:
        raise InputFileError(f"{path}: no '{entry}' entry (expected the authors' parameters_<name>.pt layout)")
    prefix = "module.model." if weights == "ema" else "model."
    state = {}
    for key, value in payload[entry].items():
        if key == "n_averaged":
            continue
        if not key.startswith(prefix):
            raise InputFileError(f"{path}: '{entry}' key {key!r} does not start with {prefix!r}")
        state[key[len(prefix):]] = value
    return state


def _rename_inside(rest: str, table: dict, key: str) -> str:
    for theirs, ours in table.items():
        if rest.startswith(theirs + "."):
            return ours + rest[len(theirs):]
    raise InputFileError(f"authors' parameter {key!r} has no counterpart in the lofar-diffusion network")


def _rename_stage(rest: str, key: str) -> str:
    """``resBlock.X`` / ``attnBlock.Y`` / plain block ``X`` -> ``0.X'`` / ``1.Y'``."""
    if rest.startswith("resBlock."):
        return "0." + _rename_inside(rest[len("resBlock."):], _BLOCK_NAMES, key)
    if rest.startswith("attnBlock."):
        return "1." + _rename_inside(rest[len("attnBlock."):], _ATTENTION_NAMES, key)
    return "0." + _rename_inside(rest, _BLOCK_NAMES, key)


def rename_authors_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the authors' ``Unet`` parameter names onto radiogen's ``EDMPrecond(LofarDiffusionUNet)``."""
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in ("down_blocks", "up_blocks"):
            index, _, rest = rest.partition(".")
            ours = f"{'encoder' if head == 'down_blocks' else 'decoder'}.{index}.{_rename_stage(rest, key)}"
        elif head == "middle_block":
            index, _, rest = rest.partition(".")
            table = _ATTENTION_NAMES if index == "1" else _BLOCK_NAMES
            ours = f"middle.{index}.{_rename_inside(rest, table, key)}"
        else:
            ours = _rename_inside(key, _TOP_NAMES, key)
        renamed["unet." + ours] = value
    return renamed


def published_boxcox(dataset_path: str | os.PathLike) -> tuple[dict, dict]:
    """The authors' peak-flux transform, fitted again on the maxima of ``LOFAR_Dataset.h5``.

    Their training code fits scikit-learn's ``PowerTransformer(method="box-cox")``
    (maximum-likelihood lambda, then standardisation to zero mean and unit
    population variance) on the per-image maxima; this repeats that fit with
    :func:`radiogen.lotss.preprocess.fit_boxcox` (the same maximum-likelihood
    estimate, :func:`scipy.stats.boxcox`).  The maxima are the file's stored
    ``max_values`` where present, else the image maxima.

    Returns
    -------
    normalisation : dict
        ``{boxcox_lambda, boxcox_mean, boxcox_std}``.
    histogram : dict
        ``{edges, counts}``: the 100-bin histogram of the transformed maxima
        (what their sampler draws contexts from).
    """
    import h5py

    from radiogen.lotss.preprocess import boxcox_forward, fit_boxcox

    path = Path(dataset_path)
    if not path.exists():
        raise InputFileError(f"{path}: dataset file does not exist")
    try:
        with h5py.File(path, "r") as h5:
            if "max_values" in h5:
                maxima = np.asarray(h5["max_values"][:], dtype=np.float64).reshape(-1)
            elif "images" in h5:
                images = h5["images"]
                maxima = np.concatenate([np.asarray(images[i:i + 4096], dtype=np.float64).reshape(
                    min(4096, len(images) - i), -1).max(axis=1) for i in range(0, len(images), 4096)])
            else:
                raise InputFileError(f"{path}: no 'images' (or 'max_values') dataset")
    except OSError as err:
        raise InputFileError(f"{path}: not a readable HDF5 file ({err})") from err
    try:
        lam, mean, std = fit_boxcox(maxima)
    except ValueError as err:
        raise InputFileError(f"{path}: cannot fit the peak-flux transform ({err})") from err
    z = boxcox_forward(maxima, lam=lam, mean=mean, std=std)
    counts, edges = np.histogram(z, bins=100)
    return {"boxcox_lambda": lam, "boxcox_mean": mean, "boxcox_std": std}, {"edges": edges, "counts": counts}


def import_lofar_diffusion(
    *,
    parameters: str | os.PathLike,
    config: str | os.PathLike,
    out: str | os.PathLike,
    weights: str = "ema",
    dataset: str | os.PathLike | None = None,
    boxcox: tuple[float, float, float] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Write a radiogen model file with the authors' published network and weights.

    Parameters
    ----------
    parameters, config : path
        The authors' ``parameters_<name>.pt`` and ``config_<name>.json``.
    out : path
        The radiogen model file to write (``model.pt``).
    weights : {"ema", "raw"}
        The EMA weights (what the authors sample with; default) or the raw ones.
    dataset : path, optional
        LoTSS: ``LOFAR_Dataset.h5``; the peak-flux transform and its histogram
        are fitted on its maxima (see :func:`published_boxcox`).
    boxcox : (lambda, mean, std), optional
        LoTSS: the fitted transform given explicitly instead (no context histogram
        then: sample with ``sample.lotss.peak_flux`` lists or ranges).
    class_names : list of str, optional
        FIRST: names of the class labels 0..K-1 (default: FRI, FRII, Compact, Bent,
        the order of the labels of Griese et al. 2023 the authors trained on).

    Returns
    -------
    dict
        ``{"out", "dataset", "parameters", "weights"}``: what was written.

    Raises
    ------
    InputFileError
        Unreadable or mismatching inputs (named), checked before anything is written.
    ConfigError
        A LoTSS model without a context transform, or both ``dataset`` and ``boxcox``.
    """
    model_config, authors = authors_model_config(config)
    is_first = model_config["context_kind"] == "labels"
    conditional = model_config["context_dim"] > 0
    normalisation = histogram = None
    if is_first:
        if dataset is not None or boxcox is not None:
            raise ConfigError(f"{config}: a class-conditional (FIRST) model takes no peak-flux transform "
                              "(--dataset / --boxcox are for LoTSS models)")
        names = list(class_names or FIRST_CLASSES)
        if len(names) != model_config["context_dim"]:
            raise ConfigError(f"{config}: {model_config['context_dim']} class labels, but {len(names)} class names")
    elif conditional:
        if model_config["context_dim"] != 1:
            raise InputFileError(f"{config}: context {authors.get('context')} has {model_config['context_dim']} "
                                 "values; radiogen imports the peak-flux (max_values_tr) context only")
        if dataset is None and boxcox is None:
            raise ConfigError(
                f"{config}: a LoTSS model is conditioned on the Box-Cox-transformed peak flux fitted on its "
                "training set; give --dataset LOFAR_Dataset.h5 or --boxcox LAMBDA MEAN STD")
        if dataset is not None and boxcox is not None:
            raise ConfigError("give either --dataset or --boxcox, not both")
        if boxcox is not None:
            lam, mean, std = (float(v) for v in boxcox)
            if not (np.isfinite([lam, mean, std]).all() and std > 0):
                raise ConfigError(f"--boxcox needs finite LAMBDA MEAN and STD > 0, got {boxcox}")
            normalisation = {"boxcox_lambda": lam, "boxcox_mean": mean, "boxcox_std": std}
    state = rename_authors_keys(authors_state_dict(parameters, weights=weights))
    net = build_network(model_config)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise InputFileError(
            f"{parameters}: weights do not fit the network of {config}: "
            f"missing {missing[:5]}, unexpected {extra[:5]}, wrong shape {wrong[:5]}")
    net.load_state_dict(state)
    if normalisation is None and not is_first and conditional:
        normalisation, histogram = published_boxcox(dataset)
    save_model(
        out,
        model_config=model_config,
        state_dict=net.state_dict(),
        dataset="first" if is_first else "lotss",
        train_config={"imported_from": "lofar-diffusion", "weights": weights,
                      "parameters": str(Path(parameters).name), "authors_config": authors},
        step=0,
        normalisation=normalisation,
        class_names=names if is_first else None,
        context_histogram=histogram,
        context_names=["peak_flux"] if (conditional and not is_first) else None,
    )
    return {"out": str(out), "dataset": "first" if is_first else "lotss", "parameters": str(parameters),
            "weights": weights}
