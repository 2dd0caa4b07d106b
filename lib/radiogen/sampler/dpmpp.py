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
of :func:`~radiogen.sampler.loop.sigma_schedule` (or any ``sigmas``), so N steps cost N network
evaluations (Heun: 2N - 1).  Like :func:`~radiogen.sampler.heun.sample` it is a
pure function of (net, noise, conditioning, guidance, noise levels).
"""

from __future__ import annotations

import math

import torch

from radiogen.sampler.loop import StepResult, integrate

__all__ = ["Dpmpp2mStep", "sample_dpmpp_2m"]


class Dpmpp2mStep:
    """DPM-Solver++(2M)'s step (module docstring), keeping the previous denoised image and step."""

    def __init__(self) -> None:
        self.denoised_prev: torch.Tensor | None = None
        self.h_prev: float | None = None

    def __call__(self, index, num_steps, x, sigma_cur, sigma_next, denoise) -> StepResult:
        denoised = denoise(x, sigma_cur)
        if sigma_next == 0:
            h = math.inf  # lambda_N = +inf: the step lands on the (corrected) data prediction
        else:
            h = math.log(sigma_cur / sigma_next)  # h_i = lambda_i - lambda_{i-1}, lambda = -ln sigma
        if self.denoised_prev is None or self.h_prev is None:
            corrected = denoised  # first step: DPM-Solver++(1) = DDIM
        else:
            r = self.h_prev / h if math.isfinite(h) else 0.0
            if r == 0.0:
                corrected = denoised  # last step: the multistep term vanishes as h -> inf
            else:
                corrected = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * self.denoised_prev  # Alg. 2
        ratio = sigma_next / sigma_cur
        x_next = ratio * x + (1.0 - ratio) * corrected  # exp(-h) = sigma_i / sigma_{i-1}
        self.denoised_prev, self.h_prev = denoised, h
        return StepResult(x_next, x, sigma_cur, denoised)


def sample_dpmpp_2m(net, noise: torch.Tensor, *, num_steps: int = 10, **options) -> torch.Tensor:
    """Images from standard normal latents ``noise`` with DPM-Solver++(2M): one network evaluation per
    step, ``num_steps`` steps of the rho schedule unless ``sigmas`` is given; every other
    option and the result (B, C, H, W, float32, unclamped) as :func:`~radiogen.sampler.loop.integrate`.
    """
    return integrate(net, noise, Dpmpp2mStep(), num_steps=num_steps, **options)
