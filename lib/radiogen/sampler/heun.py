"""EDM Heun sampler with classifier-free guidance (Karras et al. 2022, Alg. 1 and 2).

The sampler is a pure function of the denoiser network, the initial standard
normal noise, the conditioning, the guidance strength and the noise levels: the
same inputs give the same images on any batch split.  The step loop, noise
levels and guided denoiser shared with the multistep solvers live in
:mod:`~radiogen.sampler.loop` (re-exported here).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from radiogen.sampler.loop import StepInfo, StepResult, guided_denoiser, integrate, sigma_schedule

__all__ = ["StepInfo", "sigma_schedule", "guided_denoiser", "HeunStep", "sample"]


class HeunStep:
    """Heun's step (EDM Alg. 1) with optional churn (Alg. 2); plain Euler on the step to sigma = 0."""

    def __init__(self, *, S_churn: float = 0.0, S_min: float = 0.0, S_max: float = math.inf, S_noise: float = 1.0,
                 generators: Sequence[torch.Generator] | None = None) -> None:
        self.S_churn, self.S_min, self.S_max, self.S_noise = S_churn, S_min, S_max, S_noise
        self.generators = generators

    def __call__(self, index, num_steps, x_cur, sigma_cur, sigma_next, denoise) -> StepResult:
        gamma_max = min(self.S_churn / num_steps, math.sqrt(2.0) - 1.0)
        gamma = gamma_max if self.S_churn > 0 and self.S_min <= sigma_cur <= self.S_max else 0.0
        sigma_hat = sigma_cur * (1.0 + gamma)
        if gamma > 0:
            eps = _churn_noise(x_cur, self.generators)
            x_cur = x_cur + math.sqrt(sigma_hat**2 - sigma_cur**2) * self.S_noise * eps
        denoised = denoise(x_cur, sigma_hat)
        slope = (x_cur - denoised) / sigma_hat  # d_i = dx/dsigma (Alg. 1, line 4)
        x_next = x_cur + (sigma_next - sigma_hat) * slope
        if sigma_next != 0:  # second-order correction on every step but the last (Alg. 1, line 6)
            slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x_cur + (sigma_next - sigma_hat) * 0.5 * (slope + slope_next)
        return StepResult(x_next, x_cur, sigma_hat, denoised)


def sample(
    net,
    noise: torch.Tensor,
    *,
    num_steps: int = 25,
    S_churn: float = 0.0,
    S_min: float = 0.0,
    S_max: float = math.inf,
    S_noise: float = 1.0,
    generators: Sequence[torch.Generator] | None = None,
    **options,
) -> torch.Tensor:
    """Solve the probability-flow ODE from noise to images with Heun's method.

    Deterministic EDM sampler (Karras et al. 2022, Alg. 1; the paper's Alg. 1)
    with optional stochastic churn (Alg. 2): at each sigma_i in [S_min, S_max]
    noise is raised to sigma_hat = (1 + gamma) sigma_i, gamma =
    min(S_churn / N, sqrt(2) - 1), by adding fresh noise of std
    S_noise sqrt(sigma_hat^2 - sigma_i^2).  The last step (to sigma_N = 0) is
    a plain Euler step.  N steps cost 2N - 1 network evaluations.

    Parameters
    ----------
    net, noise
        Denoiser and standard normal latents, see :func:`~radiogen.sampler.loop.integrate`.
    num_steps
        N for the rho schedule (the paper: 25), unless ``sigmas`` is given.
    S_churn, S_min, S_max, S_noise
        Stochastic churn; ``S_churn = 0`` (default) is the deterministic ODE.
    generators
        One ``torch.Generator`` per image for the churn noise, so that a
        stochastic image does not depend on its batch neighbours.  Without
        them churn noise comes from torch's global generator.
    **options
        context, guidance, sigmas, sigma_min, sigma_max, rho, callback,
        autocast_dtype, guide: see :func:`~radiogen.sampler.loop.integrate`.

    Returns
    -------
    torch.Tensor
        Denoised samples x_N (B, C, H, W), float32, unclamped (data range [-1, 1]).
    """
    if generators is not None and len(generators) != noise.shape[0]:
        raise ValueError(f"need one generator per image: {len(generators)} for {noise.shape[0]}")
    rule = HeunStep(S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise, generators=generators)
    return integrate(net, noise, rule, num_steps=num_steps, **options)


def _churn_noise(x: torch.Tensor, generators) -> torch.Tensor:
    if generators is None:
        return torch.randn_like(x)
    shape = x.shape[1:]
    return torch.stack(
        [torch.randn(shape, generator=g, dtype=torch.float64).to(x.device) for g in generators]
    )
