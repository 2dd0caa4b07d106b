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


def save_tiny_model(path, dataset, *, seed=0, **overrides):
    """Save an untrained tiny LoTSS (peak-flux context) or FIRST (4 classes) model file."""
    config = {**TINY, "context_dim": 1 if dataset == "lotss" else 4, **overrides}
    torch.manual_seed(seed)
    net = build_network(config)
    extra = (
        {"normalisation": NORM,
         "context_histogram": {"edges": np.linspace(-2.5, 2.5, 101),
                               "counts": np.random.default_rng(0).integers(0, 50, 100)}}
        if dataset == "lotss"
        else {"class_names": ["FRI", "FRII", "Compact", "Bent"]}
    )
    save_model(path, model_config=config, state_dict=net.state_dict(), dataset=dataset,
               train_config={}, step=0, **extra)
    return path
