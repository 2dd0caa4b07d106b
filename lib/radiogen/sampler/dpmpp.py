"""DPM-Solver++(2M) for the EDM probability-flow ODE (Lu et al. 2022, arXiv:2211.01095).

A second-order multistep solver in data-prediction form: every step costs one
(guided) denoiser evaluation, against two for Heun, and reuses the previous
step's denoised image for the second-order correction.  With EDM's scaling
(alpha = 1, x = y + sigma n) the half log-SNR is lambda = -ln(sigma), and the
step from sigma_{i-1} to sigma_i with h_i = lambda_i - lambda_{i-1} reads

    x_i = (sigma_i / sigma_{i-1}) x_{i-1} + (1 - sigma_i / sigma_{i-1}) D_hat_i,

    D_hat_i = (1 + 1/(2 r_i)) D_{i-1} - 1/(2 r_i) D_{i-2},  r_i = h_{i-1} / h_i

(Lu et al. 2022, Alg. 2); the first step uses D_hat = D_0 (first order, DDIM)
and the step to sigma_N = 0 returns D_hat itself.  The noise levels are those
of :func:`~radiogen.sampler.heun.sigma_schedule`, so N steps cost N network
evaluations (Heun: 2N - 1).  Like :func:`~radiogen.sampler.heun.sample` it is a
pure function of (net, noise, conditioning, guidance).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from radiogen.sampler.heun import StepInfo, guided_denoiser, sigma_schedule

__all__ = ["sample_dpmpp_2m"]


def sample_dpmpp_2m(
    net,
    noise: torch.Tensor,
    *,
    context: torch.Tensor | None = None,
    guidance: float = 0.0,
    num_steps: int = 10,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    callback: Callable[[StepInfo], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
    guide=None,
) -> torch.Tensor:
    """Solve the probability-flow ODE from noise to images with DPM-Solver++(2M).

    Parameters
    ----------
    net
        Denoiser ``net(x, sigma, context=None, context_mask=None)``.
    noise
        Standard normal latents (B, C, H, W); scaled by sigma_0 here.
    context
        Conditioning (B, K), or None for unconditional sampling.
    guidance
        Classifier-free guidance strength w, see
        :func:`~radiogen.sampler.heun.guided_denoiser`.
    num_steps, sigma_min, sigma_max, rho
        Noise schedule (N steps, N network evaluations), see
        :func:`~radiogen.sampler.heun.sigma_schedule`.
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
    device = noise.device
    sigmas = sigma_schedule(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).tolist()
    x = noise.to(torch.float64) * sigmas[0]
    denoised_prev = None
    h_prev = None
    for i in range(num_steps):
        sigma_cur, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = guided_denoiser(net, x, sigma_cur, context=context, guidance=guidance,
                                   autocast_dtype=autocast_dtype, guide=guide)
        if sigma_next == 0:
            h = math.inf  # lambda_N = +inf: the step lands on the (corrected) data prediction
        else:
            h = math.log(sigma_cur / sigma_next)  # h_i = lambda_i - lambda_{i-1}, lambda = -ln sigma
        if denoised_prev is None or h_prev is None:
            corrected = denoised  # first step: DPM-Solver++(1) = DDIM
        else:
            r = h_prev / h if math.isfinite(h) else 0.0
            if r == 0.0:
                corrected = denoised  # last step: the multistep term vanishes as h -> inf
            else:
                corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * denoised_prev  # Alg. 2
        ratio = sigma_next / sigma_cur
        x_next = ratio * x + (1.0 - ratio) * corrected  # exp(-h) = sigma_i / sigma_{i-1}
        if callback is not None:
            callback(StepInfo(i, num_steps, sigma_cur, sigma_next, x, denoised, x_next))
        x, denoised_prev, h_prev = x_next, denoised, h
    return x.to(device=device, dtype=torch.float32)
