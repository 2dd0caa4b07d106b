"""What every ODE solver of :mod:`~radiogen.sampler.solvers` shares: noise levels, guided denoiser, step loop.

A solver is a *step rule*: given the state x_i at sigma_i, the next level
sigma_{i+1} and the guided denoiser, it returns x_{i+1} (keeping whatever
history it needs between calls).  :func:`integrate` does the rest once for all
of them: it builds the noise levels (EDM's rho schedule, Karras et al. 2022,
Eq. 5, or an explicit sequence such as a GITS schedule,
:mod:`~radiogen.sampler.schedules`), starts from x_0 = sigma_0 noise in float64,
calls the rule per step, reports each step to the callback and returns float32
images.  The result is a pure function of (net, noise, conditioning, guidance,
noise levels).  The network follows the radiogen model API
``net(x, sigma, context=None, context_mask=None) -> D(x; sigma)`` where a
``True`` entry of ``context_mask`` replaces that image's context with the learned
null token.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

__all__ = ["StepInfo", "StepResult", "StepRule", "sigma_schedule", "noise_levels", "guided_denoiser", "integrate"]


@dataclass(frozen=True)
class StepInfo:
    """What a sampler hands to its callback after step ``index``.

    ``x`` is the state x_i at noise level ``sigma`` (after churn, i.e. at
    sigma_hat; after the corrector for UniPC), ``denoised`` the (guided)
    denoiser output D(x_i; sigma_i) and ``x_next`` the state x_{i+1} at
    ``sigma_next``.
    """

    index: int
    num_steps: int
    sigma: float
    sigma_next: float
    x: torch.Tensor
    denoised: torch.Tensor
    x_next: torch.Tensor


@dataclass(frozen=True)
class StepResult:
    """A step rule's answer: the new state ``x_next`` and what the callback reports (see :class:`StepInfo`)."""

    x_next: torch.Tensor
    x: torch.Tensor
    sigma: float
    denoised: torch.Tensor


class StepRule(Protocol):
    """One solver's update: ``rule(i, n, x, sigma, sigma_next, denoise) -> StepResult``.

    ``denoise(x, sigma)`` is the guided denoiser; ``n`` the number of steps; the
    rule is called for i = 0..n-1 in order and may keep history between calls.
    """

    def __call__(self, index: int, num_steps: int, x: torch.Tensor, sigma: float, sigma_next: float,
                 denoise: Callable[[torch.Tensor, float], torch.Tensor]) -> StepResult: ...


def sigma_schedule(
    num_steps: int,
    *,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Noise levels sigma_0 > ... > sigma_{N-1} followed by sigma_N = 0.

    sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho
    (Karras et al. 2022, Eq. 5), so sigma_0 = sigma_max and sigma_{N-1} = sigma_min.

    Parameters
    ----------
    num_steps
        N, the number of solver steps (>= 1); one step is plain sigma_max -> 0.
    sigma_min, sigma_max
        Smallest nonzero and largest noise level (image units, data in [-1, 1]).
    rho
        Schedule exponent; larger values spend more steps at low noise.

    Returns
    -------
    torch.Tensor
        Shape (N + 1,).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    if num_steps == 1:
        sigmas = torch.tensor([float(sigma_max)], dtype=torch.float64)
    else:
        i = torch.arange(num_steps, dtype=torch.float64)
        lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
        sigmas = (hi + i / (num_steps - 1) * (lo - hi)) ** rho
    sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])
    return sigmas.to(dtype=dtype, device=device)


def noise_levels(
    sigmas: Sequence[float] | torch.Tensor | None = None,
    *,
    num_steps: int = 25,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
) -> list[float]:
    """The solver's noise levels as floats: ``sigmas`` checked, or the rho schedule.

    Parameters
    ----------
    sigmas
        Explicit levels sigma_0 > sigma_1 > ... > sigma_{N-1} > sigma_N = 0
        (as EDM's), or None for :func:`sigma_schedule` of the other arguments,
        which are then ignored.

    Returns
    -------
    list of float
        N + 1 levels, the last 0.

    Raises
    ------
    ValueError
        ``sigmas`` not finite, not strictly decreasing, not ending in 0 or
        shorter than two levels.
    """
    if sigmas is None:
        return sigma_schedule(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).tolist()
    levels = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    if len(levels) < 2 or levels[-1] != 0.0:
        raise ValueError(f"sigmas must hold at least two noise levels and end in 0, got {levels}")
    if not all(math.isfinite(s) for s in levels) or any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"sigmas must be finite and strictly decreasing, got {levels}")
    return levels


def _net_dtype(net, fallback: torch.dtype) -> torch.dtype:
    if isinstance(net, torch.nn.Module):
        for param in net.parameters():
            if param.is_floating_point():
                return param.dtype
    return fallback


def guided_denoiser(
    net,
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    context: torch.Tensor | None = None,
    guidance: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
    guide=None,
) -> torch.Tensor:
    """Guided denoiser D_w(x; sigma, c): classifier-free guidance or autoguidance.

    Classifier-free: D_w = (1 + w) D(x; sigma, c) - w D(x; sigma, null)
    (Ho & Salimans 2022, Eq. 6).  With a ``guide`` network (autoguidance,
    Karras et al. 2024, Eq. 1 with their w = 1 + w here):
    D_w = (1 + w) D(x; sigma, c) - w D_guide(x; sigma, c), the guide being a
    weaker (smaller or less trained) version of the same model, conditioned alike.

    For ``guidance == 0`` (or no context and no guide) this is a single
    conditional (or unconditional) pass.  Classifier-free guidance runs the
    conditional and unconditional halves as one forward of batch 2B with
    ``context_mask`` True on the second half; autoguidance runs each network once.

    Parameters
    ----------
    net
        Denoiser ``net(x, sigma, context=None, context_mask=None)``.
    x
        Noisy images (B, C, H, W); returned tensor has the same dtype.
    sigma
        Noise level, scalar or (B,).
    context
        Conditioning (B, K) or None for unconditional sampling.
    guidance
        Guidance strength w (0 = purely conditional).
    autocast_dtype
        If given (e.g. ``torch.bfloat16``), run the network under autocast.
    guide
        Guiding denoiser for autoguidance (same call signature as ``net``), or
        None for classifier-free guidance.
    """
    if guide is not None and guidance != 0:
        main = guided_denoiser(net, x, sigma, context=context, autocast_dtype=autocast_dtype)
        weak = guided_denoiser(guide, x, sigma, context=context, autocast_dtype=autocast_dtype)
        return (1.0 + guidance) * main - guidance * weak
    batch = x.shape[0]
    net_dtype = _net_dtype(net, x.dtype)
    sigma = torch.as_tensor(sigma, dtype=net_dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    x_in = x.to(net_dtype)
    amp = (
        torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with amp:
        if context is None:
            out = net(x_in, sigma, context=None, context_mask=None)
        else:
            context = context.to(device=x.device, dtype=net_dtype)
            if guidance == 0:
                keep = torch.zeros(batch, dtype=torch.bool, device=x.device)
                out = net(x_in, sigma, context=context, context_mask=keep)
            else:
                mask = torch.cat(
                    [
                        torch.zeros(batch, dtype=torch.bool, device=x.device),
                        torch.ones(batch, dtype=torch.bool, device=x.device),
                    ]
                )
                both = net(
                    torch.cat([x_in, x_in]),
                    torch.cat([sigma, sigma]),
                    context=torch.cat([context, context]),
                    context_mask=mask,
                )
                cond, uncond = both.to(x.dtype).chunk(2)
                return (1.0 + guidance) * cond - guidance * uncond
    return out.to(x.dtype)


def integrate(
    net,
    noise: torch.Tensor,
    rule: StepRule,
    *,
    context: torch.Tensor | None = None,
    guidance: float = 0.0,
    sigmas: Sequence[float] | torch.Tensor | None = None,
    num_steps: int = 25,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    callback: Callable[[StepInfo], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
    guide=None,
) -> torch.Tensor:
    """Solve the probability-flow ODE from noise to images with the step ``rule``.

    The options below are those of every sampler of :mod:`~radiogen.sampler.solvers`.

    Parameters
    ----------
    net
        Denoiser ``net(x, sigma, context=None, context_mask=None)``.
    noise
        Standard normal latents (B, C, H, W); scaled by sigma_0 here.
    rule
        The solver's update, see :class:`StepRule`.
    context
        Conditioning (B, K), or None for unconditional sampling.
    guidance
        Guidance strength w, see :func:`guided_denoiser`.
    sigmas
        Explicit noise levels, decreasing and ending in 0 (N steps for N + 1
        levels), e.g. a GITS schedule; when given, ``num_steps``, ``sigma_min``,
        ``sigma_max`` and ``rho`` are ignored (:func:`noise_levels`).
    num_steps, sigma_min, sigma_max, rho
        The rho schedule otherwise, see :func:`sigma_schedule`.
    callback
        Called with a :class:`StepInfo` after every step.
    autocast_dtype
        Network autocast dtype (``torch.bfloat16`` on GPU), or None for the
        network's own precision.  The ODE state stays in float64.
    guide
        Guiding network for autoguidance, see :func:`guided_denoiser`.

    Returns
    -------
    torch.Tensor
        Samples x_N (B, C, H, W), float32, unclamped (data range [-1, 1]).
    """
    levels = noise_levels(sigmas, num_steps=num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    steps = len(levels) - 1

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return guided_denoiser(net, x, sigma, context=context, guidance=guidance, autocast_dtype=autocast_dtype,
                               guide=guide)

    device = noise.device
    x = noise.to(torch.float64) * levels[0]
    for i in range(steps):
        step = rule(i, steps, x, levels[i], levels[i + 1], denoise)
        if callback is not None:
            callback(StepInfo(i, steps, step.sigma, levels[i + 1], step.x, step.denoised, step.x_next))
        x = step.x_next
    return x.to(device=device, dtype=torch.float32)
