"""Sampler: sigma schedule, Heun on analytic denoisers, guidance, conditioning draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from radiogen.errors import ConfigError
from radiogen.sampler import conditioning as cond
from radiogen.sampler.heun import guided_denoiser, sample, sigma_schedule

SIGMA_D = 0.5


# torch on one thread (conftest.py): tiny networks, and two test workers share 2 cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyDenoiser(torch.nn.Module):
    """A small conditional preconditioned denoiser with the radiogen net signature."""

    def __init__(self, context_dim: int = 1, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.context_dim = context_dim
        self.conv_in = torch.nn.Conv2d(1, width, 3, padding=1)
        self.conv_out = torch.nn.Conv2d(width, 1, 3, padding=1)
        self.embed = torch.nn.Linear(context_dim, width)
        self.null = torch.nn.Parameter(torch.randn(width))
        self.calls: list[int] = []

    def forward(self, x, sigma, context=None, context_mask=None):
        self.calls.append(x.shape[0])
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(b)[:, None, None, None]
        if context is None:
            emb = self.null.expand(b, -1)
        else:
            emb = self.embed(context)
            if context_mask is not None:
                emb = torch.where(context_mask[:, None], self.null.expand(b, -1), emb)
        c_in = 1 / torch.sqrt(sigma**2 + SIGMA_D**2)
        h = torch.nn.functional.silu(self.conv_in(c_in * x) + emb[:, :, None, None] + torch.log(sigma) / 4)
        c_skip = SIGMA_D**2 / (sigma**2 + SIGMA_D**2)
        c_out = sigma * SIGMA_D / torch.sqrt(sigma**2 + SIGMA_D**2)
        return c_skip * x + c_out * self.conv_out(h)


def gaussian_denoiser(x, sigma, context=None, context_mask=None):
    """Exact D(x; sigma) = x sigma_d^2 / (sigma^2 + sigma_d^2) for data ~ N(0, sigma_d^2 I)."""
    s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(x.shape[0])[:, None, None, None]
    return x * SIGMA_D**2 / (s**2 + SIGMA_D**2)


def class_gaussian_denoiser(x, sigma, context=None, context_mask=None):
    """Exact denoiser for class c ~ N(mu_c, sigma_d^2 I), mu_c = context[0]; null token -> mu = 0."""
    b = x.shape[0]
    s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(b)[:, None, None, None]
    mu = torch.zeros(b, dtype=x.dtype) if context is None else context[:, 0].to(x.dtype)
    if context_mask is not None:
        mu = torch.where(context_mask, torch.zeros_like(mu), mu)
    mu = mu[:, None, None, None]
    return mu + (x - mu) * SIGMA_D**2 / (s**2 + SIGMA_D**2)


def test_sigma_schedule_matches_formula():
    n, lo, hi, rho = 25, 0.002, 80.0, 7.0
    sigmas = sigma_schedule(n, sigma_min=lo, sigma_max=hi, rho=rho)
    assert sigmas.shape == (n + 1,)
    expected = [
        (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)
    ]
    np.testing.assert_allclose(sigmas[:-1].numpy(), expected, rtol=1e-12)
    assert sigmas[0].item() == pytest.approx(80.0, rel=1e-12)
    assert sigmas[n - 1].item() == pytest.approx(0.002, rel=1e-12)
    assert sigmas[n].item() == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1])


def test_sigma_schedule_rejects_bad_parameters():
    with pytest.raises(ValueError, match="num_steps"):
        sigma_schedule(0)
    with pytest.raises(ValueError, match="sigma_min"):
        sigma_schedule(10, sigma_min=1.0, sigma_max=0.5)


def test_heun_recovers_gaussian_variance():
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(64, 1, 32, 32, generator=gen)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return gaussian_denoiser(*args, **kwargs)

    x = sample(counted, noise, num_steps=25)
    # Exact flow map of the ODE for Gaussian data: x_0 = x_T sigma_d / sqrt(sigma_T^2 + sigma_d^2).
    exact = noise.double() * 80.0 * SIGMA_D / math.sqrt(80.0**2 + SIGMA_D**2)
    err25 = ((x - exact).abs().max() / exact.abs().max()).item()
    assert err25 < 0.035
    # 25 steps leave a small second-order bias in the amplitude (a few per cent)
    assert x.std().item() == pytest.approx(exact.std().item(), rel=0.04)
    assert x.std().item() == pytest.approx(SIGMA_D, rel=0.05)
    assert abs(x.mean().item()) < 0.01
    assert len(calls) == 2 * 25 - 1  # no correction on the last step
    # second order: doubling the steps cuts the error about four-fold
    x50 = sample(gaussian_denoiser, noise, num_steps=50)
    err50 = ((x50 - exact).abs().max() / exact.abs().max()).item()
    assert 3.0 < err25 / err50 < 5.5
    x200 = sample(gaussian_denoiser, noise, num_steps=200)
    assert x200.std().item() == pytest.approx(SIGMA_D * 80.0 / math.sqrt(80.0**2 + SIGMA_D**2), rel=0.01)


def test_error_shrinks_with_steps():
    noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    exact = noise.double() * 80.0 * SIGMA_D / math.sqrt(80.0**2 + SIGMA_D**2)
    errors = [(sample(gaussian_denoiser, noise, num_steps=n) - exact).abs().max().item() for n in (8, 16, 32)]
    assert errors[0] > errors[1] > errors[2]
    # a one-step solve is a pure Euler step onto D(x_T) -> far too small variance
    one = sample(gaussian_denoiser, noise, num_steps=1)
    assert one.std() < 0.1 * SIGMA_D


def test_stochastic_churn_keeps_variance_and_is_per_image():
    noise = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    gens = [torch.Generator().manual_seed(100 + k) for k in range(64)]
    x = sample(gaussian_denoiser, noise, num_steps=100, S_churn=40, S_min=0.05, S_max=50,
               S_noise=1.0, generators=gens)
    assert x.std().item() == pytest.approx(SIGMA_D, rel=0.02)
    gens = [torch.Generator().manual_seed(100 + k) for k in range(64)]
    x2 = sample(gaussian_denoiser, noise[:8], num_steps=100, S_churn=40, S_min=0.05, S_max=50,
                generators=gens[:8])
    torch.testing.assert_close(x2, x[:8])
    deterministic = sample(gaussian_denoiser, noise[:8], num_steps=100)
    assert not torch.allclose(deterministic, x[:8])


def test_guidance_on_class_gaussians_moves_means():
    noise = torch.randn(256, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    context = torch.full((256, 1), 0.8)
    x0 = sample(class_gaussian_denoiser, noise, context=context, guidance=0.0)
    x1 = sample(class_gaussian_denoiser, noise, context=context, guidance=1.0)
    assert x0.mean().item() == pytest.approx(0.8, abs=0.03)
    # with both halves linear, D_w has mean (1 + w) mu - w * 0 -> 1.6 at w = 1
    assert x1.mean().item() == pytest.approx(1.6, abs=0.06)


@pytest.mark.parametrize("guidance", [0.75, 2.0])
def test_batched_guidance_equals_two_passes(guidance):
    net = TinyDenoiser(context_dim=4)
    x = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    context = torch.eye(4)[[0, 1, 2, 3, 0, 1]]
    with torch.no_grad():
        batched = guided_denoiser(net, x, 3.0, context=context, guidance=guidance)
        cond_ = net(x, torch.full((6,), 3.0), context=context, context_mask=torch.zeros(6, dtype=torch.bool))
        uncond = net(x, torch.full((6,), 3.0), context=context, context_mask=torch.ones(6, dtype=torch.bool))
    torch.testing.assert_close(batched, (1 + guidance) * cond_ - guidance * uncond, rtol=1e-5, atol=1e-6)
    assert net.calls[0] == 12  # one forward of size 2B

    class TwoPass(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, sigma, context=None, context_mask=None):
            b = x.shape[0] // 2
            halves = [self.inner(x[i * b:(i + 1) * b], sigma[i * b:(i + 1) * b], context[i * b:(i + 1) * b],
                                 context_mask[i * b:(i + 1) * b]) for i in range(2)]
            return torch.cat(halves)

    noise = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        a = sample(net, noise, context=context, guidance=guidance, num_steps=6)
        b = sample(TwoPass(net), noise, context=context, guidance=guidance, num_steps=6)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_zero_guidance_runs_only_the_conditional_pass():
    net = TinyDenoiser(context_dim=1)
    noise = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        sample(net, noise, context=torch.zeros(3, 1), guidance=0.0, num_steps=5)
    assert net.calls == [3] * (2 * 5 - 1)


def test_callback_sees_every_step():
    steps = []
    noise = torch.randn(2, 1, 8, 8)
    out = sample(gaussian_denoiser, noise, num_steps=7, callback=steps.append)
    assert [s.index for s in steps] == list(range(7))
    assert steps[0].sigma == pytest.approx(80.0)
    assert steps[-1].sigma_next == 0.0
    torch.testing.assert_close(steps[-1].x_next.float(), out)


def test_bf16_autocast_close_to_fp32():
    net = TinyDenoiser(context_dim=1)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    ctx = torch.zeros(2, 1)
    with torch.no_grad():
        a = sample(net, noise, context=ctx, guidance=0.5, num_steps=5)
        b = sample(net, noise, context=ctx, guidance=0.5, num_steps=5, autocast_dtype=torch.bfloat16)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.1 * a.abs().max()
    # bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per operation): the result
    # must differ from fp32 (else autocast did not take effect) but only at that level
    # (measured: relative L2 difference 1.1e-3)
    rel = float((a - b).norm() / a.norm())
    assert 1e-4 < rel < 1e-2, rel


# --- conditioning -------------------------------------------------------------

NORM = {"boxcox_lambda": -0.23, "boxcox_mean": 1.7, "boxcox_std": 0.9}


def test_boxcox_inverse_round_trips():
    peak = np.geomspace(1e-4, 10.0, 50)
    kw = dict(lam=-0.23, mean=1.7, std=0.9)
    z = cond.boxcox_forward(peak, **kw)
    np.testing.assert_allclose(cond.boxcox_inverse(z, **kw), peak, rtol=1e-10)
    # the formula itself, independent of the implementation used
    np.testing.assert_allclose(z, ((peak**-0.23 - 1) / -0.23 - 1.7) / 0.9, rtol=1e-10)
    meta = {"normalisation": NORM}
    np.testing.assert_allclose(cond.context_to_peak_flux(cond.peak_flux_to_context(peak, meta), meta),
                               peak, rtol=1e-10)
    kw0 = dict(lam=0.0, mean=0.0, std=1.0)
    np.testing.assert_allclose(cond.boxcox_forward(peak, **kw0), np.log(peak), rtol=1e-12)


def test_histogram_draws_follow_the_histogram():
    edges = np.linspace(-3, 3, 101)
    counts = np.histogram(np.random.default_rng(0).normal(size=20000), bins=edges)[0]
    rngs = [cond.image_rng(11, cond.CONTEXT_STREAM, i) for i in range(20000)]
    draws = cond.histogram_draws(edges, counts, rngs)
    assert draws.min() >= -3 and draws.max() <= 3
    observed = np.histogram(draws, bins=edges)[0]
    keep = counts > 0
    assert observed[~keep].sum() == 0  # empty bins never drawn
    expected = counts[keep] / counts.sum() * draws.size
    big = expected > 5
    chi2 = ((observed[keep][big] - expected[big]) ** 2 / expected[big]).sum()
    assert stats.chi2.sf(chi2, big.sum() - 1) > 1e-3
    # within one bin the values are uniform
    inside = draws[(draws >= edges[50]) & (draws < edges[51])]
    assert stats.kstest((inside - edges[50]) / (edges[51] - edges[50]), "uniform").pvalue > 1e-3


def test_lotss_context_modes():
    meta = {"normalisation": NORM, "context_histogram": {"edges": np.linspace(-2, 2, 101),
                                                        "counts": np.ones(100)}}
    idx = np.arange(10)
    a = cond.lotss_context(meta, idx, seed=5)
    assert a.shape == (10, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(cond.lotss_context(meta, idx[3:7], seed=5), a[3:7])
    assert not np.array_equal(cond.lotss_context(meta, idx, seed=6), a)
    flux = [0.01, 0.1]
    z = cond.lotss_context(meta, idx, seed=5, mode="list", peak_flux=flux)
    np.testing.assert_allclose(cond.context_to_peak_flux(z[:, 0], meta), np.tile(flux, 5), rtol=1e-5)
    for space in ("boxcox", "log", "linear"):
        z = cond.lotss_context(meta, np.arange(200), seed=5, mode="range", peak_flux_range=[0.01, 1.0],
                               range_space=space)
        peak = cond.context_to_peak_flux(z[:, 0], meta)
        assert peak.min() >= 0.01 * (1 - 1e-5) and peak.max() <= 1.0 * (1 + 1e-5)


@pytest.mark.parametrize("flux", [[0.1, 0.0], [-1.0], [float("nan")]])
def test_nonpositive_flux_list_is_a_clear_error(flux):
    meta = {"normalisation": NORM}
    with pytest.raises(ConfigError, match="positive"):
        cond.lotss_context(meta, [0, 1], seed=0, mode="list", peak_flux=flux)
    with pytest.raises(ConfigError, match="0 < low"):
        cond.lotss_context(meta, [0], seed=0, mode="range", peak_flux_range=[0.0, 1.0])


def test_first_labels_and_one_hot():
    labels = cond.first_labels(3, 4)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    oh = cond.one_hot(labels, 4)
    assert oh.shape == (12, 4) and np.all(oh.sum(1) == 1) and np.all(oh.argmax(1) == labels)
    np.testing.assert_array_equal(cond.first_labels([1, 0, 2, 1], 4), [0, 2, 2, 3])
    with pytest.raises(ConfigError, match="n_per_class"):
        cond.first_labels([1, 2], 4)


# --- workflow helpers (sample.smk) ------------------------------------------------


def test_workflow_helpers_and_paper_defaults(repo_root):
    import json as _json

    from radiogen.sampler import workflow as wf

    assert [wf.guidance_tag(w) for w in (0, 0.75, 1, 2.0)] == ["0.0", "0.75", "1.0", "2.0"]
    assert wf.shard_names(50000, 5000) == [f"{i:04d}" for i in range(10)]
    assert wf.shard_names(7, 3) == ["0000", "0001", "0002"]
    assert wf.first_total({"n_per_class": 2000}) == 8000
    assert wf.first_total({"n_per_class": [1, 2, 3, 4]}) == 10
    from radiogen.config import fill_defaults

    schema = repo_root / "workflow" / "schemas" / "config.schema.yaml"
    sample = fill_defaults({}, schema)["sample"]
    assert sample["sampler"] == {"num_steps": 25, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0,
                                 "S_churn": 0.0, "S_min": 0.0, "S_max": 1.0e6, "S_noise": 1.0,
                                 "solver": "heun", "schedule": "karras"}  # the paper's solver and rho schedule
    assert sample["lotss"]["n_images"] == 50000 and sample["lotss"]["guidance"] == 0.1
    assert sample["first"]["n_per_class"] == 2000 and sample["first"]["guidance"] == 0.75
    assert 0.75 in sample["first"]["guidance_values"]
    settings = _json.loads(wf.shard_settings(sample, "first"))
    assert settings["dataset"] == {"n_per_class": 2000} and settings["sampler"]["num_steps"] == 25
    # a config value wins over the default, nested blocks are completed
    partial = fill_defaults({"sample": {"sampler": {"num_steps": 10}}}, schema)["sample"]
    assert partial["sampler"]["num_steps"] == 10 and partial["sampler"]["rho"] == 7.0


def test_dpmpp_2m_is_second_order_with_one_evaluation_per_step():
    """DPM-Solver++(2M) integrates the Gaussian-data ODE to its exact flow map at order 2."""
    from radiogen.sampler.dpmpp import sample_dpmpp_2m
    from radiogen.sampler.solvers import network_evaluations

    noise = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    exact = noise.double() * 80.0 * SIGMA_D / math.sqrt(80.0**2 + SIGMA_D**2)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return gaussian_denoiser(*args, **kwargs)

    def error(n):
        return ((sample_dpmpp_2m(counted, noise, num_steps=n) - exact).abs().max() / exact.abs().max()).item()

    e40, e80 = error(40), error(80)
    assert len(calls) == 40 + 80 == network_evaluations("dpmpp_2m", 40) + network_evaluations("dpmpp_2m", 80)
    assert 3.0 < e40 / e80 < 5.5  # halving h cuts the error about four-fold
    assert e80 < 5e-3
    assert network_evaluations("heun", 25) == 49


def test_dpmpp_2m_follows_guidance_like_heun():
    from radiogen.sampler.solvers import solve

    noise = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    context = torch.tensor([[1.0]] * 4 + [[-1.0]] * 4)
    kw = dict(context=context, guidance=1.0, num_steps=80)
    heun = solve(class_gaussian_denoiser, noise, solver="heun", **kw)
    dpm = solve(class_gaussian_denoiser, noise, solver="dpmpp_2m", **kw)
    torch.testing.assert_close(dpm, heun, atol=2e-2, rtol=0)
    # guided class means move past the class means (w = 1: mu -> 2 mu)
    assert heun[:4].mean() > 1.5 and heun[4:].mean() < -1.5


def test_solver_choice_is_checked():
    from radiogen.sampler.generate import sampler_settings
    from radiogen.sampler.solvers import solve

    assert sampler_settings({"solver": "dpmpp_2m"})["solver"] == "dpmpp_2m"
    with pytest.raises(ConfigError, match="sample.sampler.solver must be one of"):
        sampler_settings({"solver": "euler"})
    noise = torch.randn(1, 1, 4, 4)
    with pytest.raises(ConfigError, match="S_churn > 0 needs solver heun"):
        solve(gaussian_denoiser, noise, solver="dpmpp_2m", num_steps=4, S_churn=1.0)
