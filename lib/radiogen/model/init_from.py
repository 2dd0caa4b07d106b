"""Fine-tuning: a training run that starts from a model file (``train.{lotss,first}.init_from``).

The run takes the network from the file: its ``model_config`` (architecture and
shape; the ``model`` config section is ignored for this run, with a log line
naming what differs) and its EMA weights, which become both the raw and the EMA
starting weights.  Before any step the file is checked against the training set
(:func:`match_training_set`): dataset, channels, image size, context length,
FIRST class names in order, LoTSS context names.

LoTSS context transform.  The model's context is the standardised Box-Cox
transform of the peak flux (and size) that *its* training set was fitted on;
the network only knows that scale.  A training set fitted on other images has
other (lambda, mean, std), so its stored ``/context`` would mean other fluxes to
the network.  Fine-tuning therefore keeps the model's transform: the context is
recomputed from the training set's raw ``/peak_flux`` (and ``/size``, floored at
its ``size_floor_arcsec``) with the model's parameters, after checking that the
training set's own transform of those columns gives back its stored
``/context`` (so they are the quantities it was made from).  A training set
without them, or whose columns do not reproduce its context, is refused.  The
fine-tuned model file then carries the model's transform and a histogram of the
recomputed context.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from radiogen.errors import ConfigError, InputFileError
from radiogen.model import load_model
from radiogen.model.data import TrainingData

__all__ = ["InitModel", "read_init_model", "match_training_set", "CONTEXT_TOLERANCE"]

log = logging.getLogger("radiogen.train")

#: Largest |difference| between a training set's stored /context and its own
#: transform of /peak_flux (/size) that still counts as reproduced (float32 storage).
CONTEXT_TOLERANCE = 1.0e-3
#: Relative tolerance within which two Box-Cox parameter sets count as the same transform.
TRANSFORM_RTOL = 1.0e-9


@dataclass
class InitModel:
    """The starting point of a fine-tuning run.

    Attributes
    ----------
    path : Path
        The model file (``train.{dataset}.init_from``).
    state_dict : dict
        Its (EMA) weights: the run's raw and EMA starting weights.
    model_config : dict
        Its network (wins over the ``model`` config section).
    meta : dict
        Every other key of the file (:func:`radiogen.model.load_model`).
    digest : str
        SHA-256 of what the run takes from the file (weights, network, dataset,
        context transform, class names): part of the run's identity.
    """

    path: Path
    state_dict: dict
    model_config: dict
    meta: dict
    digest: str


def _digest(state_dict: dict, meta: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}{tensor.dtype}{tuple(tensor.shape)}".encode())
        h.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    described = {k: meta.get(k) for k in ("model_config", "dataset", "normalisation", "class_names",
                                          "context_names", "size_normalisation")}
    h.update(json.dumps(described, sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_init_model(path: str | os.PathLike) -> InitModel:
    """Load a radiogen model file to fine-tune from; raises :class:`InputFileError` naming it."""
    path = Path(path)
    net, meta = load_model(path, device="cpu")  # InputFileError for missing or unreadable files
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return InitModel(path=path, state_dict=state, model_config=dict(meta["model_config"]), meta=meta,
                     digest=_digest(state, meta))


def _same_transform(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.isclose(float(a[k]), float(b[k]), rtol=TRANSFORM_RTOL, atol=0.0)
               for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std"))


def _describe(transform: dict | None) -> str:
    if transform is None:
        return "none"
    return (f"lambda {transform['boxcox_lambda']:.6g}, mean {transform['boxcox_mean']:.6g}, "
            f"std {transform['boxcox_std']:.6g}")


def _read_column(data: TrainingData, name: str) -> np.ndarray | None:
    with h5py.File(data.path, "r") as h5:
        if name not in h5:
            return None
        values = np.asarray(h5[name][()], dtype=np.float64).reshape(-1)
    if values.shape != (data.images.shape[0],):
        raise InputFileError(f"{data.path}: /{name} has {values.size} values for {data.images.shape[0]} images")
    return values


def _recompute_column(data: TrainingData, init: InitModel, column: int, *, name: str, raw: np.ndarray | None,
                      own: dict, model: dict) -> np.ndarray:
    """Context column ``column`` in the model's transform, from the raw values behind it."""
    from radiogen.lotss.preprocess import boxcox_forward

    what = f"{init.path}: the model's {name} transform ({_describe(model)}) differs from the training set's " \
           f"({_describe(own)}) in {data.path}"
    if raw is None:
        raise ConfigError(f"{what}, and the training set has no raw /{name} column to recompute the context in "
                          "the model's transform; fine-tune on a training set made with radiogen "
                          "(radiogen lotss preprocess or radiogen lotss published)")
    reproduced = boxcox_forward(raw, lam=own["boxcox_lambda"], mean=own["boxcox_mean"], std=own["boxcox_std"])
    error = np.abs(reproduced - data.context[:, column])
    if not np.all(np.isfinite(error)) or float(error.max()) > CONTEXT_TOLERANCE:
        row = int(np.argmax(np.where(np.isfinite(error), error, np.inf)))
        raise InputFileError(
            f"{what}, and its /{name} does not reproduce its /context column {column} under its own "
            f"transform (row {row}: {reproduced[row]!r} vs {float(data.context[row, column])!r}), so the "
            f"context cannot be recomputed in the model's transform")
    recomputed = boxcox_forward(raw, lam=model["boxcox_lambda"], mean=model["boxcox_mean"], std=model["boxcox_std"])
    if not np.all(np.isfinite(recomputed)):
        row = int(np.flatnonzero(~np.isfinite(recomputed))[0])
        raise InputFileError(f"{data.path}: /{name} row {row} ({raw[row]!r}) has no value in the model's "
                             f"transform ({init.path})")
    return recomputed


def _in_model_transform(data: TrainingData, init: InitModel) -> TrainingData:
    """The LoTSS training set with its context in the model's transform (see the module docstring)."""
    context = data.context.copy()
    attrs = dict(data.attrs)
    model_norm, own_norm = init.meta.get("normalisation"), data.normalisation()
    if model_norm is None:
        raise InputFileError(f"{init.path}: LoTSS model without a peak-flux transform (normalisation); "
                             "it cannot be fine-tuned on a conditioned training set")
    changed = []
    if not _same_transform(model_norm, own_norm):
        if own_norm is None:
            raise InputFileError(f"{data.path}: LoTSS training set without boxcox_lambda/mean/std attributes")
        context[:, 0] = _recompute_column(data, init, 0, name="peak_flux", raw=_read_column(data, "peak_flux"),
                                          own=own_norm, model=model_norm)
        attrs.update({k: float(model_norm[k]) for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std")})
        changed.append("peak flux")
    if data.context_dim > 1:
        model_size, own_size = init.meta.get("size_normalisation"), data.size_normalisation()
        if model_size is None:
            raise InputFileError(f"{init.path}: size-conditioned model without a size transform "
                                 "(size_normalisation)")
        if not _same_transform(model_size, own_size):
            if own_size is None:
                raise InputFileError(f"{data.path}: size context without size_boxcox_lambda/mean/std attributes")
            if "size_floor_arcsec" not in data.attrs:
                raise InputFileError(f"{data.path}: size context without the size_floor_arcsec attribute, so "
                                     "the size context cannot be recomputed in the model's transform")
            raw = _read_column(data, "size")
            floored = None if raw is None else np.maximum(raw, float(data.attrs["size_floor_arcsec"]))
            context[:, 1] = _recompute_column(data, init, 1, name="size", raw=floored, own=own_size,
                                              model=model_size)
            attrs.update({f"size_{k}": float(model_size[k]) for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std")})
            changed.append("size")
    if not changed:
        return data
    out = replace(data, context=context.astype(np.float32), attrs=attrs)
    hist = init.meta.get("context_histogram")
    train = out.context[out.train_index, 0]
    note = ""
    if hist is not None:
        lo, hi = float(hist["edges"][0]), float(hist["edges"][-1])
        outside = float(np.mean((train < lo) | (train > hi)))
        note = (f"; {100 * outside:.1f}% of the training split lie outside the model's context range "
                f"[{lo:.3g}, {hi:.3g}]")
        if outside > 0.01:
            log.warning("%s: %.1f%% of the recomputed peak-flux context lies outside the range the model was "
                        "trained on (%s): check that /peak_flux has the unit of the model's training set",
                        data.path, 100 * outside, init.path)
    log.info("fine-tuning keeps the context transform of %s: the %s context of %s recomputed in it "
             "(training split: median %.3g, 1-99%% %.3g to %.3g%s)", init.path, " and ".join(changed), data.path,
             float(np.median(train)), *np.percentile(train, [1, 99]), note)
    return out


def match_training_set(init: InitModel, data: TrainingData) -> TrainingData:
    """Check the model file against the training set; the set with its context in the model's transform.

    Raises
    ------
    ConfigError
        A model of the other dataset, another image shape, context length,
        class list or context variables; or a LoTSS training set without the raw
        columns to put its context into the model's transform.
    InputFileError
        A LoTSS training set whose raw columns do not reproduce its own context,
        or a model file without the transform its context needs.  Every message
        names the model file.
    """
    meta, cfg = init.meta, init.model_config
    where = f"train.{data.dataset}.init_from = {init.path}"
    if meta["dataset"] != data.dataset:
        raise ConfigError(f"{where}: a {meta['dataset']} model cannot be fine-tuned on the {data.dataset} "
                          f"training set {data.path}")
    if int(cfg["image_channels"]) != data.channels or [int(s) for s in cfg["image_size"]] != data.image_size:
        raise ConfigError(
            f"{where}: the model takes {cfg['image_channels']} x {cfg['image_size'][0]} x {cfg['image_size'][1]} "
            f"images, the training set {data.path} has {data.channels} x {data.image_size[0]} x "
            f"{data.image_size[1]}")
    if int(cfg.get("context_dim", 0)) != data.context_dim:
        raise ConfigError(f"{where}: the model takes a context of {cfg.get('context_dim', 0)} value(s), the "
                          f"training set {data.path} has {data.context_dim}")
    if data.dataset == "first":
        if meta.get("class_names") != data.class_names():
            raise ConfigError(f"{where}: the model's classes {meta.get('class_names')} differ from the training "
                              f"set's {data.class_names()} ({data.path}); the one-hot context must mean the same "
                              "classes in the same order")
        return data
    if data.context_dim == 0:
        return data
    model_names = meta.get("context_names") or ["peak_flux"]
    if list(model_names) != data.context_names():
        raise ConfigError(f"{where}: the model is conditioned on {model_names}, the training set {data.path} "
                          f"on {data.context_names()}")
    return _in_model_transform(data, init)
