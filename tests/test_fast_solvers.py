"""Few-step multistep solvers (DPM-Solver++(3M), iPNDM, UniPC) on an ODE with a closed-form solution.

Data with independent pixels k ~ N(mu_k, s_k^2), s_k from 0.01 to 1 (the range of
scales of a radio image in [-1, 1]), has the exact denoiser
D(x; sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and the probability-flow ODE
dx/dsigma = (x - D) / sigma moves x - mu in proportion to sqrt(s^2 + sigma^2).
Every solver ends with, or is within O(sigma_min^2) of, D(x(sigma_min); sigma_min)
for the exact x(sigma_min), which is therefore the reference.
"""

from __future__ import annotations

import pytest
import torch

from radiogen.errors import ConfigError
from radiogen.sampler.solvers import SOLVERS, network_evaluations, solve

SCALE = torch.logspace(-2, 0, 64, dtype=torch.float64).reshape(1, 1, 8, 8)
MEAN = torch.linspace(-0.5, 0.5, 64, dtype=torch.float64).reshape(1, 1, 8, 8)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def gaussian_pixels_denoiser(x, sigma, context=None, context_mask=None):
    """Exact D(x; sigma) for pixels ~ N(MEAN, SCALE^2), shifted by context[:, 0] unless masked."""
    s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1)[:, None, None, None]
    mu = MEAN.to(x.dtype).expand(x.shape[0], -1, -1, -1)
    if context is not None:
        shift = context[:, 0].to(x.dtype)
        if context_mask is not None:
            shift = torch.where(context_mask, torch.zeros_like(shift), shift)
        mu = mu + shift[:, None, None, None]
    return mu + SCALE**2 / (SCALE**2 + s**2) * (x - mu)


NOISE = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(5))
# exact x(sigma_min) from x(sigma_max) = sigma_max * noise, then the last denoising
_X_MIN = MEAN + (NOISE.double() * SIGMA_MAX - MEAN) * torch.sqrt(SCALE**2 + SIGMA_MIN**2) / torch.sqrt(
    SCALE**2 + SIGMA_MAX**2)
EXACT = gaussian_pixels_denoiser(_X_MIN, SIGMA_MIN)


def relative_error(solver: str, num_steps: int, calls: list | None = None, **kw) -> float:
    def net(*args, **kwargs):
        if calls is not None:
            calls.append(1)
        return gaussian_pixels_denoiser(*args, **kwargs)

    x = solve(net, NOISE, solver=solver, num_steps=num_steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, **kw)
    return ((x.double() - EXACT).pow(2).mean().sqrt() / EXACT.pow(2).mean().sqrt()).item()


def test_dpmpp_3m_is_third_order_with_one_evaluation_per_step():
    calls = []
    e40, e80 = relative_error("dpmpp_3m", 40, calls), relative_error("dpmpp_3m", 80, calls)
    assert len(calls) == 120 == network_evaluations("dpmpp_3m", 40) + network_evaluations("dpmpp_3m", 80)
    assert 6.5 < e40 / e80 < 11.0  # halving h cuts the error about eight-fold
    # and it beats the second-order solvers at the same cost once the steps resolve the scales
    assert e80 < 0.25 * relative_error("dpmpp_2m", 80)
    assert e80 < 3e-4


def test_ipndm_converges_with_one_evaluation_per_step():
    """Fixed Adams-Bashforth weights on the non-uniform rho = 7 grid: second order as N grows."""
    calls = []
    e40, e80 = relative_error("ipndm", 40, calls), relative_error("ipndm", 80, calls)
    assert len(calls) == 120 == network_evaluations("ipndm", 40) + network_evaluations("ipndm", 80)
    assert 3.5 < e40 / e80 < 5.5
    assert e80 < 1e-3


def test_adams_bashforth_weights_integrate_polynomials_exactly():
    """Order-k weights b_j (newest first) satisfy sum_j b_j (-j)^m = 1/(m+1) for m < k."""
    from radiogen.sampler.ipndm import ADAMS_BASHFORTH

    for k, weights in enumerate(ADAMS_BASHFORTH, start=1):
        assert len(weights) == k
        for m in range(k):
            assert sum(b * (-j) ** m for j, b in enumerate(weights)) == pytest.approx(1 / (m + 1), abs=1e-12)


def test_unipc_is_third_order_by_default_with_one_evaluation_per_step():
    """UniP-2 + UniC (the default max_order 2): order 3, one evaluation per step."""
    calls = []
    e40, e80 = relative_error("unipc", 40, calls), relative_error("unipc", 80, calls)
    assert len(calls) == 120 == network_evaluations("unipc", 40) + network_evaluations("unipc", 80)
    assert 6.5 < e40 / e80 < 11.0  # halving h cuts the error about eight-fold
    assert e80 < 0.5 * relative_error("dpmpp_2m", 80)


def test_unipc_order_3_is_fourth_order_and_its_corrector_is_free():
    """UniP-3 + UniC: order 4 in the bulk; its corrector reuses the next evaluation and halves the error."""
    calls = []
    e40, e80 = relative_error("unipc", 40, calls, max_order=3), relative_error("unipc", 80, calls, max_order=3)
    assert len(calls) == 120
    assert 12.0 < e40 / e80 < 20.0  # halving h cuts the error about sixteen-fold
    assert e80 < 1e-4
    calls.clear()
    without = relative_error("unipc", 40, calls, max_order=3, corrector=False)
    assert len(calls) == 40  # the corrector costs no evaluation
    assert e40 < 0.6 * without
    # the predictor alone is DPM-Solver++(3M) (the same quadratic in lambda; (2M)-type order-2 steps)
    assert without == pytest.approx(relative_error("dpmpp_3m", 40), rel=0.05)
    assert e80 < 0.5 * relative_error("dpmpp_3m", 80)


def test_unipc_weights_meet_the_order_conditions():
    """sum_m a_m r_m^(k-1) B(h) h^k / k! = c_k = int_0^h e^(tau-h) tau^k / k! dtau (Zhao et al. 2023, Eq. 9)."""
    import math

    from scipy.integrate import quad

    from radiogen.sampler.unipc import unipc_weights

    h, ratios = 0.7, [-0.8, -1.9, 1.0]
    weights = unipc_weights(h, ratios)
    for k in (1, 2, 3):
        c_k = quad(lambda tau: math.exp(tau - h) * tau**k / math.factorial(k), 0, h)[0]
        lhs = sum(a * r ** (k - 1) for a, r in zip(weights, ratios)) * -math.expm1(-h) * h**k / math.factorial(k)
        assert lhs == pytest.approx(c_k, rel=1e-10)
    assert unipc_weights(h, [-0.8]) == [0.5]


@pytest.mark.parametrize("evaluations", [10, 12])
def test_ipndm_is_closer_than_dpmpp_2m_at_few_evaluations(evaluations):
    ipndm, dpm2 = relative_error("ipndm", evaluations), relative_error("dpmpp_2m", evaluations)
    heun_steps = (evaluations + 1) // 2  # Heun at the same cost (2N - 1 evaluations)
    assert ipndm < 0.5 * dpm2
    assert ipndm < 0.5 * relative_error("heun", heun_steps)


@pytest.mark.parametrize("solver", ["dpmpp_3m", "ipndm", "unipc"])
def test_guidance_and_guide_pass_through(solver):
    """Classifier-free guidance and autoguidance reach the denoiser at every step."""
    context = torch.tensor([[1.0]] * 4 + [[-1.0]] * 4)

    def weak_guide(x, sigma, context=None, context_mask=None):  # knows only half of the class shift
        return gaussian_pixels_denoiser(x, sigma, context=None if context is None else 0.5 * context,
                                        context_mask=context_mask)

    guide_calls = []

    def counted_guide(*args, **kwargs):
        guide_calls.append(1)
        return weak_guide(*args, **kwargs)

    kw = dict(context=context, num_steps=40)
    plain = solve(gaussian_pixels_denoiser, NOISE, solver=solver, guidance=0.0, **kw)
    cfg = solve(gaussian_pixels_denoiser, NOISE, solver=solver, guidance=1.0, **kw)
    auto = solve(gaussian_pixels_denoiser, NOISE, solver=solver, guidance=1.0, guide=counted_guide, **kw)
    assert len(guide_calls) == 40
    # w = 1 doubles the class shift (cfg: 2 mu - 0) or adds half of it (auto: 2 mu - mu/2)
    shift = lambda x: (x[:4] - x[4:]).mean().item() / 2  # noqa: E731
    assert shift(plain) == pytest.approx(1.0, abs=0.05)
    assert shift(cfg) == pytest.approx(2.0, abs=0.05)
    assert shift(auto) == pytest.approx(1.5, abs=0.05)
    # and each agrees with the paper's Heun sampler given the same inputs
    heun = solve(gaussian_pixels_denoiser, NOISE, solver="heun", guidance=1.0, guide=weak_guide, **kw)
    torch.testing.assert_close(auto, heun, atol=2e-2, rtol=0)


@pytest.mark.parametrize("solver", ["dpmpp_3m", "ipndm", "unipc"])
def test_multistep_solvers_are_deterministic_and_choosable(solver, repo_root):
    from radiogen.config import fill_defaults
    from radiogen.sampler.generate import sampler_settings

    assert sampler_settings({"solver": solver})["solver"] == solver
    schema = repo_root / "workflow" / "schemas" / "config.schema.yaml"
    sampler = fill_defaults({"sample": {"sampler": {"solver": solver}}}, schema)["sample"]["sampler"]
    assert sampler["solver"] == solver and solver in SOLVERS
    first = solve(gaussian_pixels_denoiser, NOISE, solver=solver, num_steps=6)
    torch.testing.assert_close(first, solve(gaussian_pixels_denoiser, NOISE, solver=solver, num_steps=6),
                               atol=0, rtol=0)
    # image i does not depend on its batch neighbours
    torch.testing.assert_close(first[2:3], solve(gaussian_pixels_denoiser, NOISE[2:3], solver=solver, num_steps=6),
                               atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match=f"S_churn > 0 needs solver heun \\({solver} is deterministic\\)"):
        solve(gaussian_pixels_denoiser, NOISE, solver=solver, num_steps=4, S_churn=1.0)
