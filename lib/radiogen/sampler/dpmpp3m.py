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

import torch

from radiogen.sampler.loop import StepResult, integrate

__all__ = ["Dpmpp3mStep", "sample_dpmpp_3m"]


class Dpmpp3mStep:
    """DPM-Solver++(3M)'s step (module docstring), keeping the last three (lambda, D)."""

    def __init__(self) -> None:
        self.history: list[tuple[float, torch.Tensor]] = []  # (lambda_j, D_j), newest last, at most 3

    def __call__(self, i, num_steps, x, sigma_cur, sigma_next, denoise) -> StepResult:
        denoised = denoise(x, sigma_cur)
        lam = -math.log(sigma_cur)  # lambda = log(alpha / sigma), alpha = 1 (EDM)
        history = self.history = (self.history + [(lam, denoised)])[-3:]
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
        return StepResult(x_next, x, sigma_cur, denoised)


def sample_dpmpp_3m(net, noise: torch.Tensor, *, num_steps: int = 10, **options) -> torch.Tensor:
    """Images from standard normal latents ``noise`` with DPM-Solver++(3M): one network evaluation per
    step, ``num_steps`` steps of the rho schedule unless ``sigmas`` is given; every other
    option and the result (B, C, H, W, float32, unclamped) as :func:`~radiogen.sampler.loop.integrate`.
    """
    return integrate(net, noise, Dpmpp3mStep(), num_steps=num_steps, **options)
