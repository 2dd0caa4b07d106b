"""DPM-Solver++(3M) for the EDM probability-flow ODE (Lu et al. 2022, arXiv:2211.01095, Sect. 4-5).

A third-order multistep solver in data-prediction form: one (guided) denoiser
evaluation per step, the two previous steps' denoised images giving the first
and second derivative of D in the half log-SNR lambda = -ln(sigma) (EDM:
alpha = 1).  The exact solution of the data-prediction ODE from sigma_s to
sigma_t (Lu et al. 2022, Eq. 8 with alpha = 1),

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda D(lambda) dlambda,

is evaluated with D replaced by its quadratic Taylor polynomial in lambda about
lambda_s; with h = lambda_t - lambda_s the integrals are

    x_t = e^-h x_s + (1 - e^-h) D + (h - 1 + e^-h) D' + (h^2/2 - h + 1 - e^-h) D'',

D' and D'' being the backward divided differences of the last three denoised
images (the derivative at lambda_s of their interpolating parabola, and twice
its leading coefficient), which is the multistep third-order update of Lu et
al. (2022, Alg. 3 / Appendix B).  The first step is first order (DDIM), the
second second order; so are, in reverse, the last two steps to a nonzero
sigma (the step to sigma_min first order), as in Lu et al.'s few-step
setting, because the rho-schedule's steps in lambda are longest there
(measured on the demo FIRST model at 10 steps: RMS to a 200-step Heun
solution 0.012 instead of 0.018).  The step to sigma_N = 0 returns the last
denoised image (lambda_N = +inf, where the expansion has no meaning), as
:mod:`~radiogen.sampler.dpmpp` does.  N steps cost N evaluations.  Its
derivative terms use the exact integrals (Lu et al.'s "taylor" form); their
DPM-Solver++(2M) (:mod:`~radiogen.sampler.dpmpp`) uses a cheaper second-order
coefficient instead, so (3M) is not (2M) at its first steps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from radiogen.sampler.heun import StepInfo, guided_denoiser, sigma_schedule

__all__ = ["sample_dpmpp_3m"]


def sample_dpmpp_3m(
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
    """Solve the probability-flow ODE from noise to images with DPM-Solver++(3M).

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
    history: list[tuple[float, torch.Tensor]] = []  # (lambda_j, D_j), newest last, at most 3
    for i in range(num_steps):
        sigma_cur, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = guided_denoiser(net, x, sigma_cur, context=context, guidance=guidance,
                                   autocast_dtype=autocast_dtype, guide=guide)
        lam = -math.log(sigma_cur)  # lambda = log(alpha / sigma), alpha = 1 (EDM)
        history = (history + [(lam, denoised)])[-3:]
        if sigma_next == 0:
            x_next = denoised  # lambda_N = +inf: e^-h = 0 and the data prediction is the image
        else:
            h = math.log(sigma_cur / sigma_next)  # h = lambda_t - lambda_s
            decay = math.exp(-h)  # sigma_t / sigma_s
            x_next = decay * x + (-math.expm1(-h)) * denoised  # order 1: DDIM (Lu et al. 2022, Eq. 9)
            # orders 1, 2, 3 while the history fills; 2 then 1 on the last two steps to nonzero sigma,
            # where rho-schedules take their longest steps in lambda (Lu et al. 2022, "lower_order_final")
            order = min(len(history), max(1, num_steps - 1 - i))
            if order >= 2:
                (lam_1, d_1), (lam_0, d_0) = history[-2], history[-1]
                slope_0 = (d_0 - d_1) / (lam_0 - lam_1)  # divided difference D[lambda_{-1}, lambda_0]
                first = slope_0  # D' (order 2)
                if order == 3:
                    lam_2, d_2 = history[-3]
                    slope_1 = (d_1 - d_2) / (lam_1 - lam_2)  # D[lambda_{-2}, lambda_{-1}]
                    curvature = (slope_0 - slope_1) / (lam_0 - lam_2)  # D[lambda_{-2}, lambda_{-1}, lambda_0]
                    first = slope_0 + (lam_0 - lam_1) * curvature  # parabola's slope at lambda_0
                    c_2 = h * h / 2 - (h + math.expm1(-h))  # int_0^h tau^2/2 e^(tau-h) dtau
                    x_next = x_next + c_2 * (2.0 * curvature)  # D'' = 2 D[., ., .]
                c_1 = h + math.expm1(-h)  # int_0^h tau e^(tau-h) dtau = h - 1 + e^-h
                x_next = x_next + c_1 * first
        if callback is not None:
            callback(StepInfo(i, num_steps, sigma_cur, sigma_next, x, denoised, x_next))
        x = x_next
    return x.to(device=device, dtype=torch.float32)
