"""Explicit noise levels for every solver, and GITS schedules (radiogen.sampler.schedules).

The ODE with a closed-form solution is that of tests/test_fast_solvers.py (pixels
~ N(mu_k, s_k^2), exact denoiser); the model-level tests use real tiny radiogen
networks (tests/tiny_models.py) through the CLI and the sharded sampler.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from radiogen.cli import main as cli_main
from radiogen.errors import ConfigError, InputFileError
from radiogen.sampler import generate, shards
from radiogen.sampler.loop import noise_levels, sigma_schedule
from radiogen.sampler.schedules import (
    SCHEDULE_FORMAT,
    cheapest_path,
    fine_grid,
    gits_sigmas,
    read_schedule,
    write_schedule,
)
from radiogen.sampler.solvers import SOLVERS, solve
from test_fast_solvers import EXACT, NOISE, gaussian_pixels_denoiser
from tiny_models import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _relative_error(x: torch.Tensor) -> float:
    return ((x.double() - EXACT).pow(2).mean().sqrt() / EXACT.pow(2).mean().sqrt()).item()


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("num_steps", [1, 2, 5, 12])
def test_explicit_sigmas_equal_to_karras_give_the_keyword_path_bit_for_bit(solver, num_steps):
    context = torch.tensor([[1.0]] * 4 + [[-1.0]] * 4)
    levels = sigma_schedule(num_steps, sigma_min=0.002, sigma_max=80.0, rho=10.0)
    common = dict(solver=solver, context=context, guidance=1.5)
    by_keywords = solve(gaussian_pixels_denoiser, NOISE, num_steps=num_steps, rho=10.0, **common)
    # sigmas replace the rho-schedule keywords, whatever they say
    by_levels = solve(gaussian_pixels_denoiser, NOISE, sigmas=levels, num_steps=3, rho=2.0, **common)
    torch.testing.assert_close(by_levels, by_keywords, atol=0, rtol=0)
    as_list = solve(gaussian_pixels_denoiser, NOISE, sigmas=levels.tolist(), **common)
    torch.testing.assert_close(as_list, by_keywords, atol=0, rtol=0)


@pytest.mark.parametrize("bad", [[80.0, 1.0], [80.0, 90.0, 0.0], [80.0, 1.0, 1.0, 0.0], [0.0],
                                 [80.0, float("nan"), 0.0]])
def test_bad_sigmas_are_refused(bad):
    with pytest.raises(ValueError, match="sigmas must"):
        noise_levels(bad)
    with pytest.raises(ValueError, match="sigmas must"):
        solve(gaussian_pixels_denoiser, NOISE, solver="ipndm", sigmas=bad)


def test_cheapest_path_is_the_brute_force_optimum():
    rng = np.random.default_rng(7)
    size = 8
    cost = np.triu(rng.uniform(0.1, 5.0, (size, size)), k=1)
    cost[np.tril_indices(size)] = np.inf
    for steps in range(1, size):
        best_total, best_path = np.inf, None
        for inner in itertools.combinations(range(1, size - 1), steps - 1):
            path = [0, *inner, size - 1]
            total = sum(cost[a, b] for a, b in zip(path, path[1:]))
            if total < best_total:
                best_total, best_path = total, path
        path = cheapest_path(cost, steps)
        assert path == best_path
        assert sum(cost[a, b] for a, b in zip(path, path[1:])) == pytest.approx(best_total, rel=1e-12)
    with pytest.raises(ConfigError, match="takes 1..7 steps, asked for 8"):
        cheapest_path(cost, size)


@pytest.mark.parametrize("solver", ["ipndm", "unipc"])
def test_gits_schedule_is_no_worse_than_karras_rho_7_at_6_evaluations(solver):
    """Teacher latents other than the evaluated ones; the schedule's levels lie on the grid."""
    teacher = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(11))
    grid = fine_grid(points=40, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    sigmas, details = gits_sigmas(gaussian_pixels_denoiser, teacher, solver=solver, evaluations=6, grid=grid,
                                  substeps=2)
    assert len(sigmas) == 7 and sigmas[0] == 80.0 and sigmas[-1] == 0.0
    assert set(sigmas) <= set(grid) and details["grid_path"][0] == 0 and details["path_cost"] > 0
    gits = _relative_error(solve(gaussian_pixels_denoiser, NOISE, solver=solver, sigmas=sigmas))
    karras = _relative_error(solve(gaussian_pixels_denoiser, NOISE, solver=solver, num_steps=6, rho=7.0))
    assert gits <= karras


def test_heun_budget_must_be_odd():
    grid = fine_grid(points=10, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    with pytest.raises(ConfigError, match="heun takes 2N - 1 evaluations for N steps: 6 is even"):
        gits_sigmas(gaussian_pixels_denoiser, NOISE, solver="heun", evaluations=6, grid=grid, substeps=1)
    sigmas, _ = gits_sigmas(gaussian_pixels_denoiser, NOISE[:2], solver="heun", evaluations=5, grid=grid, substeps=1)
    assert len(sigmas) == 4  # 3 Heun steps = 5 evaluations


@pytest.fixture(scope="module")
def tiny_first(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m")
    return save_tiny_model(folder / "model.pt", "first", seed=1), save_tiny_model(folder / "other.pt", "first",
                                                                                  seed=2)


def test_schedule_cli_file_round_trips_into_the_sampler_and_refuses_another_model(tiny_first, tmp_path,
                                                                                    monkeypatch):
    from radiogen.sampler import schedules

    model, other = tiny_first
    out = tmp_path / "schedule.json"
    assert cli_main(["sample", "schedule", "--model", str(model), "--solver", "ipndm", "--evaluations", "4",
                     "--guidance", "1", "--seed", "3", "--images", "2", "--grid-points", "12",
                     "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["format"] == SCHEDULE_FORMAT and record["model_id"] == generate.model_id(model)
    assert record["solver"] == "ipndm" and record["evaluations"] == 4 and record["n_images"] == 2
    assert record["seed"] == 3 and record["grid"]["points"] == 12 and record["guidance"] == 1.0
    sigmas = record["sigmas"]
    assert len(sigmas) == 5 and sigmas[-1] == 0.0 and sigmas[0] == record["grid"]["sigma_max"]
    # the same command gives the same file (seeded teacher latents)
    again = tmp_path / "again.json"
    cli_main(["sample", "schedule", "--model", str(model), "--solver", "ipndm", "--evaluations", "4",
              "--guidance", "1", "--seed", "3", "--images", "2", "--grid-points", "12", "--out", str(again)])
    assert json.loads(again.read_text()) == record
    # write / read round trip
    copy = write_schedule(tmp_path / "copy.json", record)
    assert read_schedule(copy, model_digest=record["model_id"]) == sigmas

    # sample.sampler.schedule: the file's levels are those the solver uses; a shard of two batches reads the
    # file and hashes the model once
    settings = {"n_per_class": 1}
    sampler = {"solver": "ipndm", "schedule": str(out), "num_steps": 25}
    calls = {"read_schedule": 0, "model_id": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(schedules, "read_schedule", counted("read_schedule", schedules.read_schedule))
    monkeypatch.setattr(shards, "model_id", counted("model_id", shards.model_id))
    path = shards.write_shard(model, tmp_path / "s.h5", shard=0, seed=5, guidance=1.0, settings=settings,
                              sampler=sampler, images_per_shard=4, batch_size=2, device="cpu")
    assert calls == {"read_schedule": 1, "model_id": 1}
    monkeypatch.undo()
    net, meta = generate.load_sampling_model(model)
    noise, _ = generate.image_noise(5, np.arange(4), generate.image_shape(meta))
    context = torch.from_numpy(generate.conditioning(meta, settings, np.arange(4), seed=5)["context"])
    with torch.no_grad():
        expected = solve(net, noise, solver="ipndm", sigmas=sigmas, context=context, guidance=1.0)
    import h5py

    with h5py.File(path) as h5:
        np.testing.assert_allclose(h5["images"][:], ((expected.clamp(-1, 1) + 1) / 2)[:, 0].numpy(), atol=1e-6)
        recorded = json.loads(h5.attrs["sampler"])
    assert recorded["schedule"] == str(out) and recorded["sigmas"] == sigmas  # the set names its noise levels

    # another model's digest is refused, naming both
    with pytest.raises(ConfigError) as err:
        shards.write_shard(other, tmp_path / "o.h5", shard=0, seed=5, guidance=1.0, settings=settings,
                           sampler=sampler, images_per_shard=4, batch_size=4, device="cpu")
    assert record["model_id"] in str(err.value) and generate.model_id(other) in str(err.value)
    assert str(out) in str(err.value)
    with pytest.raises(ConfigError, match="needs the digest of the model"):
        read_schedule(out, model_digest=None)


def test_bad_schedule_files_are_refused(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_schedule(tmp_path / "none.json", model_digest="x")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="not a JSON schedule file"):
        read_schedule(bad, model_digest="x")
    bad.write_text(json.dumps({"sigmas": [80.0, 0.0]}))
    with pytest.raises(InputFileError, match="not a schedule file"):
        read_schedule(bad, model_digest="x")
    bad.write_text(json.dumps({"format": SCHEDULE_FORMAT, "model_id": "x", "sigmas": [80.0, 1.0]}))
    with pytest.raises(InputFileError, match="bad sigmas"):
        read_schedule(bad, model_digest="x")
    with pytest.raises(ConfigError, match="sample.sampler.schedule must be"):
        generate.sampler_settings({"schedule": ""})
