"""Exponential moving average of network weights (paper Sect. 4.2, decay 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Keeps theta_ema <- beta theta_ema + (1 - beta) theta after every optimiser step.

    The average lives in float32 on the model's device, as a full copy of the
    module (so buffers follow and it can be evaluated directly).

    Parameters
    ----------
    model : nn.Module
        The trained network (unwrapped, not the DDP wrapper).
    decay : float
        beta in [0, 1).
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards the current weights of ``model``."""
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
