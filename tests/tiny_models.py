"""Tiny untrained networks saved as model files, for tests of the code around a model."""

from __future__ import annotations

import numpy as np
import torch

from radiogen.model import build_network, save_model

TINY = {
    "base_channels": 8,
    "channel_mults": [1, 2],
    "enc_blocks": 1,
    "dec_blocks": 2,
    "attention_levels": 1,
    "attention_heads": 1,
    "attention_head_channels": 8,
    "norm_groups": 4,
    "image_channels": 1,
    "image_size": [16, 16],
}
#: Peak-flux normalisation of the tiny LoTSS model (Box-Cox lambda, mean, std).
NORM = {"boxcox_lambda": -0.23, "boxcox_mean": 1.7, "boxcox_std": 0.9}
#: Size normalisation of the size-conditioned tiny model: log LAS, 10" at z = 0, 1 dex at z = 2.3/1.15.
SIZE_NORM = {"boxcox_lambda": 0.0, "boxcox_mean": float(np.log(10.0)), "boxcox_std": 1.15}


def save_tiny_model(path, dataset, *, seed=0, with_size=False, weights_std=None, **overrides):
    """Save an untrained tiny LoTSS (peak-flux context, optionally + size) or FIRST (4 classes) model.

    ``weights_std``: draw every weight from N(0, weights_std^2) instead, so that the
    network's output depends on its weights (an untrained EDM network's output
    layer is zero, which makes every such network the same denoiser D = c_skip x).
    """
    context_dim = (2 if with_size else 1) if dataset == "lotss" else 4
    config = {**TINY, "context_dim": context_dim, **overrides}
    torch.manual_seed(seed)
    net = build_network(config)
    if weights_std is not None:
        with torch.no_grad():
            for param in net.parameters():
                param.normal_(0.0, weights_std)
    extra = (
        {"normalisation": NORM,
         "context_histogram": {"edges": np.linspace(-2.5, 2.5, 101),
                               "counts": np.random.default_rng(0).integers(0, 50, 100)}}
        if dataset == "lotss"
        else {"class_names": ["FRI", "FRII", "Compact", "Bent"]}
    )
    if with_size:
        # flux and size correlated, as for real sources: counts on the diagonal
        centres = np.arange(10)
        counts = np.exp(-0.5 * ((centres[:, None] - centres[None, :]) / 1.5) ** 2) * 100
        extra.update(context_names=["peak_flux", "size"], size_normalisation=SIZE_NORM,
                     context_histogram_2d={"edges": [np.linspace(-2.5, 2.5, 11), np.linspace(-2.5, 2.5, 11)],
                                           "counts": counts.astype(int)})
    save_model(path, model_config=config, state_dict=net.state_dict(), dataset=dataset,
               train_config={}, step=0, **extra)
    return path
