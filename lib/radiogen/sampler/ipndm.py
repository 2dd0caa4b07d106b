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
:func:`~radiogen.sampler.loop.sigma_schedule` (or any ``sigmas``) cost N evaluations; the step to
sigma_N = 0 is an ordinary step of the same formula.
"""

from __future__ import annotations

import torch

from radiogen.sampler.loop import StepResult, integrate

__all__ = ["ADAMS_BASHFORTH", "IpndmStep", "sample_ipndm"]

#: Constant-step Adams-Bashforth weights of order 1-4, newest derivative first (Hairer et al., Table III.1.1).
ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


class IpndmStep:
    """iPNDM's Adams-Bashforth step in sigma (module docstring), keeping the last slopes."""

    def __init__(self, *, max_order: int = 4) -> None:
        if not 1 <= max_order <= len(ADAMS_BASHFORTH):
            raise ValueError(f"max_order must be 1-{len(ADAMS_BASHFORTH)}, got {max_order}")
        self.max_order = max_order
        self.slopes: list[torch.Tensor] = []  # d_i, d_{i-1}, ... newest first

    def __call__(self, index, num_steps, x, sigma_cur, sigma_next, denoise) -> StepResult:
        denoised = denoise(x, sigma_cur)
        self.slopes = [(x - denoised) / sigma_cur] + self.slopes[: self.max_order - 1]  # d_i (EDM Alg. 1, line 4)
        weights = ADAMS_BASHFORTH[len(self.slopes) - 1]
        x_next = x + (sigma_next - sigma_cur) * sum(b * d for b, d in zip(weights, self.slopes))  # AB step
        return StepResult(x_next, x, sigma_cur, denoised)


def sample_ipndm(net, noise: torch.Tensor, *, num_steps: int = 10, max_order: int = 4, **options) -> torch.Tensor:
    """Solve the probability-flow ODE from noise to images with iPNDM.

    Parameters
    ----------
    net, noise
        Denoiser and standard normal latents, see :func:`~radiogen.sampler.loop.integrate`.
    num_steps
        N for the rho schedule (N network evaluations), unless ``sigmas`` is given.
    max_order
        Highest Adams-Bashforth order, 1-4 (4: the published iPNDM).
    **options
        context, guidance, sigmas, sigma_min, sigma_max, rho, callback,
        autocast_dtype, guide: see :func:`~radiogen.sampler.loop.integrate`.

    Returns
    -------
    torch.Tensor
        Samples (B, C, H, W), float32, unclamped.
    """
    return integrate(net, noise, IpndmStep(max_order=max_order), num_steps=num_steps, **options)
