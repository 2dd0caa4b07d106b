"""iPNDM for the EDM probability-flow ODE (improved pseudo linear multistep; Zhang & Chen 2023,
DEIS, arXiv:2204.13902, Sect. 4 / App.; Zhou et al. 2024, arXiv:2312.00094, as run on EDM).

Adams-Bashforth steps on the EDM ODE in sigma (Karras et al. 2022, Eq. 4 with
sigma(t) = t, s(t) = 1),

    dx/dsigma = d(x; sigma) = (x - D(x; sigma)) / sigma,

    x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j b_j d_{i-j},

with the constant-step Adams-Bashforth weights b of order k = min(i + 1, 4):
(1), (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24 (the "pseudo" multistep:
fixed weights on the non-uniform sigma grid; the lower orders at the first
steps replace PNDM's Runge-Kutta warm-up, which is what makes it "improved" and
keeps one network evaluation per step).  N steps on
:func:`~radiogen.sampler.heun.sigma_schedule` cost N evaluations; the step to
sigma_N = 0 is an ordinary step of the same formula.
"""

from __future__ import annotations

from typing import Callable

import torch

from radiogen.sampler.heun import StepInfo, guided_denoiser, sigma_schedule

__all__ = ["ADAMS_BASHFORTH", "sample_ipndm"]

#: Constant-step Adams-Bashforth weights of order 1-4, newest derivative first (Hairer et al., Table III.1.1).
ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


def sample_ipndm(
    net,
    noise: torch.Tensor,
    *,
    context: torch.Tensor | None = None,
    guidance: float = 0.0,
    num_steps: int = 10,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    max_order: int = 4,
    callback: Callable[[StepInfo], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
    guide=None,
) -> torch.Tensor:
    """Solve the probability-flow ODE from noise to images with iPNDM.

    Parameters
    ----------
    net
        Denoiser ``net(x, sigma, context=None, context_mask=None)``.
    noise
        Standard normal latents (B, C, H, W); scaled by sigma_0 here.
    context
        Conditioning (B, K), or None for unconditional sampling.
    guidance
        Guidance strength w, see :func:`~radiogen.sampler.heun.guided_denoiser`.
    num_steps, sigma_min, sigma_max, rho
        Noise schedule (N steps, N network evaluations), see
        :func:`~radiogen.sampler.heun.sigma_schedule`.
    max_order
        Highest Adams-Bashforth order, 1-4 (4: the published iPNDM).
    callback
        Called with a :class:`~radiogen.sampler.heun.StepInfo` after every step.
    autocast_dtype
        Network autocast dtype, or None; the ODE state stays in float64.
    guide
        Guiding network for autoguidance, see
        :func:`~radiogen.sampler.heun.guided_denoiser`.

    Returns
    -------
    torch.Tensor
        Samples (B, C, H, W), float32, unclamped.
    """
    if not 1 <= max_order <= len(ADAMS_BASHFORTH):
        raise ValueError(f"max_order must be 1-{len(ADAMS_BASHFORTH)}, got {max_order}")
    device = noise.device
    sigmas = sigma_schedule(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).tolist()
    x = noise.to(torch.float64) * sigmas[0]
    slopes: list[torch.Tensor] = []  # d_i, d_{i-1}, ... newest first
    for i in range(num_steps):
        sigma_cur, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = guided_denoiser(net, x, sigma_cur, context=context, guidance=guidance,
                                   autocast_dtype=autocast_dtype, guide=guide)
        slopes = [(x - denoised) / sigma_cur] + slopes[: max_order - 1]  # d_i = dx/dsigma (EDM Alg. 1, line 4)
        weights = ADAMS_BASHFORTH[len(slopes) - 1]
        x_next = x + (sigma_next - sigma_cur) * sum(b * d for b, d in zip(weights, slopes))  # AB step
        if callback is not None:
            callback(StepInfo(i, num_steps, sigma_cur, sigma_next, x, denoised, x_next))
        x = x_next
    return x.to(device=device, dtype=torch.float32)
