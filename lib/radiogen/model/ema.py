"""Exponential moving average of network weights (paper Sect. 4.2, decay 0.9999).

A fixed decay beta averages over the last ~1/(1 - beta) steps, which in a short
run reaches back to the untrained network and drags the average towards it.
With a ramp-up ratio r the horizon grows with training instead: after t steps
the half-life of the average is r * t steps (Karras et al. 2022, App. F.1,
``ema_rampup_ratio``), i.e. beta_t = min(beta, 0.5 ** (1 / (r * t))).
"""

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
        beta in [0, 1): the decay once the ramp-up has reached it.
    rampup_ratio : float or None
        r > 0: the half-life of the average is at most r times the number of
        steps so far; None keeps beta fixed from the first step (paper).
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.9999, rampup_ratio: float | None = None) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if rampup_ratio is not None and not rampup_ratio > 0:
            raise ValueError(f"EMA ramp-up ratio must be > 0 or None, got {rampup_ratio}")
        self.decay = float(decay)
        self.rampup_ratio = None if rampup_ratio is None else float(rampup_ratio)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """beta used by the update that completes optimiser step ``step`` (1-based)."""
        if self.rampup_ratio is None:
            return self.decay
        # half-life r * t steps -> beta_t = 0.5 ** (1 / (r t))  (EDM App. F.1)
        return min(self.decay, 0.5 ** (1.0 / max(self.rampup_ratio * step, 1e-8)))

    @torch.no_grad()
    def update(self, model: nn.Module, *, step: int | None = None) -> None:
        """One EMA step towards the current weights of ``model``.

        ``step`` (1-based count of optimiser steps so far) sets the ramped-up
        decay; it is required when a ramp-up ratio is set.
        """
        if self.rampup_ratio is not None and step is None:
            raise ValueError("EMA with a ramp-up ratio needs the step count")
        decay = self.decay if step is None else self.decay_at(step)
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)
