"""EDM Heun sampler with classifier-free guidance (Karras et al. 2022, Alg. 1 and 2).

The sampler is a pure function of the denoiser network, the initial standard
normal noise, the conditioning and the guidance strength: the same inputs give
the same images on any batch split.  The network follows the radiogen model
API ``net(x, sigma, context=None, context_mask=None) -> D(x; sigma)`` where a
``True`` entry of ``context_mask`` replaces that image's context with the
learned null token.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = ["StepInfo", "sigma_schedule", "guided_denoiser", "sample"]


@dataclass(frozen=True)
class StepInfo:
    """What :func:`sample` hands to its callback after step ``index``.

    ``x`` is the state x_i at noise level ``sigma`` (after churn, i.e. at
    sigma_hat), ``denoised`` the (guided) denoiser output D(x_i; sigma_i) and
    ``x_next`` the state x_{i+1} at ``sigma_next``.
    """

    index: int
    num_steps: int
    sigma: float
    sigma_next: float
    x: torch.Tensor
    denoised: torch.Tensor
    x_next: torch.Tensor


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


def sample(
    net,
    noise: torch.Tensor,
    *,
    context: torch.Tensor | None = None,
    guidance: float = 0.0,
    num_steps: int = 25,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = math.inf,
    S_noise: float = 1.0,
    callback: Callable[[StepInfo], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
    generators: Sequence[torch.Generator] | None = None,
    guide=None,
) -> torch.Tensor:
    """Solve the probability-flow ODE from noise to images with Heun's method.

    Deterministic EDM sampler (Karras et al. 2022, Alg. 1; the paper's Alg. 1)
    with optional stochastic churn (Alg. 2): at each sigma_i in [S_min, S_max]
    noise is raised to sigma_hat = (1 + gamma) sigma_i, gamma =
    min(S_churn / N, sqrt(2) - 1), by adding fresh noise of std
    S_noise sqrt(sigma_hat^2 - sigma_i^2).  The last step (to sigma_N = 0) is
    a plain Euler step.

    Parameters
    ----------
    net
        Denoiser ``net(x, sigma, context=None, context_mask=None)``.
    noise
        Standard normal latents (B, C, H, W); scaled by sigma_0 here.
    context
        Conditioning (B, K), or None for unconditional sampling.
    guidance
        Classifier-free guidance strength w, see :func:`guided_denoiser`.
    num_steps, sigma_min, sigma_max, rho
        Noise schedule, see :func:`sigma_schedule`.
    S_churn, S_min, S_max, S_noise
        Stochastic churn; ``S_churn = 0`` (default) is the deterministic ODE.
    callback
        Called with a :class:`StepInfo` after every step.
    autocast_dtype
        Network autocast dtype (``torch.bfloat16`` on GPU), or None for the
        network's own precision.  The ODE state stays in float64.
    generators
        One ``torch.Generator`` per image for the churn noise, so that a
        stochastic image does not depend on its batch neighbours.  Without
        them churn noise comes from torch's global generator.
    guide
        Guiding network for autoguidance, see :func:`guided_denoiser`.

    Returns
    -------
    torch.Tensor
        Denoised samples x_N (B, C, H, W), float32, unclamped (data range [-1, 1]).
    """
    if generators is not None and len(generators) != noise.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {noise.shape[0]}")
    device = noise.device
    sigmas = sigma_schedule(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    sigmas = sigmas.tolist()
    x_next = noise.to(torch.float64) * sigmas[0]
    gamma_max = min(S_churn / num_steps, math.sqrt(2.0) - 1.0)

    def denoise(x, sigma):
        return guided_denoiser(
            net, x, sigma, context=context, guidance=guidance, autocast_dtype=autocast_dtype, guide=guide
        )

    for i in range(num_steps):
        sigma_cur, sigma_next = sigmas[i], sigmas[i + 1]
        x_cur = x_next
        gamma = gamma_max if S_churn > 0 and S_min <= sigma_cur <= S_max else 0.0
        sigma_hat = sigma_cur * (1.0 + gamma)
        if gamma > 0:
            eps = _churn_noise(x_cur, generators)
            x_cur = x_cur + math.sqrt(sigma_hat**2 - sigma_cur**2) * S_noise * eps
        denoised = denoise(x_cur, sigma_hat)
        slope = (x_cur - denoised) / sigma_hat  # d_i = dx/dsigma (Alg. 1, line 4)
        x_next = x_cur + (sigma_next - sigma_hat) * slope
        if i < num_steps - 1:
            slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x_cur + (sigma_next - sigma_hat) * 0.5 * (slope + slope_next)
        if callback is not None:
            callback(StepInfo(i, num_steps, sigma_hat, sigma_next, x_cur, denoised, x_next))
    return x_next.to(device=device, dtype=torch.float32)


def _churn_noise(x: torch.Tensor, generators) -> torch.Tensor:
    if generators is None:
        return torch.randn_like(x)
    shape = x.shape[1:]
    return torch.stack(
        [torch.randn(shape, generator=g, dtype=torch.float64).to(x.device) for g in generators]
    )
