"""Noise-level schedules optimised for one model: GITS (Chen et al. 2024, ICML, arXiv:2405.11326).

Geometry-inspired time scheduling: sampling trajectories of one model are
regular enough that the noise levels which serve a few trajectories serve all.
On a fine grid g_0 = sigma_max > g_1 > ... > g_{G-2} = sigma_min > g_{G-1} = 0
(EDM's rho schedule with G - 1 levels, then 0), a *teacher* solves the
probability-flow ODE accurately for a few latents (Heun with ``substeps`` steps
per grid interval), giving its states x(g_k) and denoised images D(x(g_k); g_k).
The cost of one solver step from grid level k to level l > k is the distance
between that step's result started from the teacher's x(g_k) and the teacher's
x(g_l),

    c(k, l) = mean over images of RMS_pixels(step(x(g_k); g_k -> g_l) - x(g_l)),

and dynamic programming finds the path g_0 -> g_{G-1} = 0 of exactly N steps
with the least total cost (N = evaluations for the multistep solvers,
(evaluations + 1) / 2 for Heun).  The path ends at sigma = 0, so the DP also
chooses the last nonzero level (sigma_min is the smallest it may pick).

The step in the cost: for ``heun`` its own step (one extra evaluation per pair
(k, l), O(G^2) in all).  For the multistep solvers a step's result depends on
its history, so, as in Chen et al., the cost is that of the first-order step,
which for EDM (alpha = 1) is both Euler and DDIM (the first step of
DPM-Solver++ and UniPC): x + (g_l - g_k)(x - D)/g_k.  It needs no evaluation
beyond the teacher's; the schedule found is then used with the real solver and
has to be measured with it (benchmarks/RESULTS.md).

A schedule file is JSON: the noise levels and their provenance (model digest,
solver, evaluations, grid, teacher images, seed, guidance); sampling with it
refuses a model of another digest (:func:`read_schedule`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from radiogen.errors import ConfigError, InputFileError
from radiogen.sampler.heun import HeunStep
from radiogen.sampler.loop import guided_denoiser, sigma_schedule
from radiogen.seeds import integer

__all__ = ["SCHEDULE_FORMAT", "steps_for_evaluations", "fine_grid", "teacher_states", "step_costs", "cheapest_path",
           "gits_sigmas", "gits_schedule", "write_schedule", "read_schedule"]

#: ``format`` entry of a schedule file.
SCHEDULE_FORMAT = "radiogen-noise-schedule-1"


def steps_for_evaluations(solver: str, evaluations: int) -> int:
    """Solver steps N for a budget of network evaluations (Heun: 2N - 1, must be odd; others: N)."""
    if evaluations < 1:
        raise ConfigError(f"evaluations must be >= 1, got {evaluations}")
    if solver == "heun":
        if evaluations % 2 == 0:
            raise ConfigError(f"heun takes 2N - 1 evaluations for N steps: {evaluations} is even")
        return (evaluations + 1) // 2
    return evaluations


def fine_grid(*, points: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """The GITS grid: ``points - 1`` levels of EDM's rho schedule from sigma_max to sigma_min, then 0."""
    if points < 3:
        raise ConfigError(f"the GITS grid needs at least 3 points (sigma_max, sigma_min, 0), got {points}")
    return sigma_schedule(points - 1, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho).tolist()


def teacher_states(denoise: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor, grid: list[float],
                   *, substeps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Teacher states x(g_k) (k = 0..G-1) and denoised images D(x(g_k); g_k) (k = 0..G-2), float64.

    Heun (EDM Alg. 1) with ``substeps`` steps per grid interval, geometric in
    sigma inside an interval; the last interval (to 0) is one Euler step, as in
    EDM.  ``denoise(x, sigma)`` is the guided denoiser.
    """
    if substeps < 1:
        raise ConfigError(f"teacher substeps must be >= 1, got {substeps}")
    fine = []
    for upper, lower in zip(grid[:-2], grid[1:-1]):
        fine += [upper * (lower / upper) ** (j / substeps) for j in range(substeps)]  # geometric sub-levels
    fine += grid[-2:]
    rule = HeunStep()
    states, denoised = [], []
    x = noise.to(torch.float64) * fine[0]
    for i in range(len(fine) - 1):
        step = rule(i, len(fine) - 1, x, fine[i], fine[i + 1], denoise)
        if i % substeps == 0:  # fine level i is grid level i / substeps
            states.append(step.x)
            denoised.append(step.denoised)
        x = step.x_next
    states.append(x)
    return states, denoised


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the per-image RMS pixel difference."""
    return float((a - b).flatten(1).pow(2).mean(dim=1).sqrt().mean())


def step_costs(grid: list[float], states: list[torch.Tensor], denoised: list[torch.Tensor], *, solver: str,
               denoise: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> np.ndarray:
    """c(k, l) of one step from the teacher's x(g_k) to level g_l (module docstring); +inf for l <= k.

    ``solver`` ``heun`` uses Heun's step (needs ``denoise``); any other the first-order (Euler = DDIM) step.
    """
    size = len(grid)
    cost = np.full((size, size), np.inf)
    for k in range(size - 1):
        slope = (states[k] - denoised[k]) / grid[k]  # d = dx/dsigma (EDM Alg. 1, line 4)
        for target in range(k + 1, size):
            x_next = states[k] + (grid[target] - grid[k]) * slope
            if solver == "heun" and grid[target] != 0:
                if denoise is None:
                    raise ValueError("Heun step costs need the denoiser")
                slope_next = (x_next - denoise(x_next, grid[target])) / grid[target]
                x_next = states[k] + (grid[target] - grid[k]) * 0.5 * (slope + slope_next)
            cost[k, target] = _rms(x_next, states[target])
    return cost


def cheapest_path(cost: np.ndarray, steps: int) -> list[int]:
    """Node indices 0 = i_0 < i_1 < ... < i_steps = G - 1 minimising sum_s cost[i_s, i_{s+1}].

    Dynamic programming over (steps taken, node): best[s, l] = min_k best[s-1, k] + cost[k, l].
    """
    size = cost.shape[0]
    if not 1 <= steps <= size - 1:
        raise ConfigError(f"a path over {size} grid points takes 1..{size - 1} steps, asked for {steps}")
    best = np.full((steps + 1, size), np.inf)
    came_from = np.zeros((steps + 1, size), dtype=np.int64)
    best[0, 0] = 0.0
    for s in range(1, steps + 1):
        totals = best[s - 1][:, None] + cost  # totals[k, l]: reach k in s - 1 steps, then k -> l
        came_from[s] = np.argmin(totals, axis=0)
        best[s] = totals[came_from[s], np.arange(size)]
    if not math.isfinite(best[steps, size - 1]):
        raise ConfigError(f"no path of {steps} steps over the grid")
    path = [size - 1]
    for s in range(steps, 0, -1):
        path.append(int(came_from[s, path[-1]]))
    return path[::-1]


def gits_sigmas(net, noise: torch.Tensor, *, solver: str, evaluations: int | Sequence[int], grid: list[float],
                substeps: int, context: torch.Tensor | None = None, guidance: float = 0.0, guide=None,
                autocast_dtype: torch.dtype | None = None):
    """GITS noise levels for ``solver`` at ``evaluations`` network evaluations per image.

    One teacher and cost matrix serve every budget when ``evaluations`` is a sequence.

    Returns
    -------
    sigmas : list of float
        N + 1 levels, decreasing, the last 0 (a path through ``grid``).
    details : dict
        ``grid_path`` (grid indices) and ``path_cost`` (sum of c along it).
    A list of such pairs when ``evaluations`` is a sequence.
    """
    budgets = [evaluations] if isinstance(evaluations, int) else list(evaluations)
    all_steps = [steps_for_evaluations(solver, k) for k in budgets]

    def denoise(x, sigma):
        return guided_denoiser(net, x, sigma, context=context, guidance=guidance, autocast_dtype=autocast_dtype,
                               guide=guide)

    with torch.no_grad():
        states, denoised = teacher_states(denoise, noise, grid, substeps=substeps)
        cost = step_costs(grid, states, denoised, solver=solver, denoise=denoise)
    found = []
    for steps in all_steps:
        path = cheapest_path(cost, steps)
        path_cost = float(sum(cost[a, b] for a, b in zip(path, path[1:])))
        found.append(([grid[k] for k in path], {"grid_path": path, "path_cost": path_cost}))
    return found[0] if isinstance(evaluations, int) else found


def gits_schedule(model_path: str | Path, *, solver: str, evaluations: int | Sequence[int], guidance: float,
                  seed: int,
                  n_images: int, grid_points: int, grid_rho: float, substeps: int, sigma_min: float,
                  sigma_max: float, settings: Mapping | None = None, guide_path: str | Path | None = None,
                  device: str = "cpu") -> dict:
    """A GITS schedule record for ``model_path`` (what :func:`write_schedule` stores); a list of them,
    from one teacher, when ``evaluations`` is a sequence.

    The teacher latents are image indices 0..n_images-1 of the ``sample.schedule``
    seed stream (not the sampling stream, so that the schedule is not tuned on the
    images it will generate); their conditioning is drawn as for a sample set
    (``settings``: the ``sample.lotss`` / ``sample.first`` block) with ``seed``.
    """
    from radiogen.sampler import generate
    from radiogen.sampler.shards import load_guide
    from radiogen.sampler.solvers import SOLVERS

    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if n_images < 1:
        raise ConfigError(f"n_images must be >= 1, got {n_images}")
    torch_device = generate.resolve_device(device)
    net, meta = generate.load_sampling_model(model_path, device=torch_device)
    guide_net, guide_name = load_guide(guide_path, meta, source=str(model_path), device=torch_device)
    index = np.arange(n_images)
    settings = dict(settings or {})
    if meta.get("dataset") == "first" and "n_per_class" not in settings:
        settings["n_per_class"] = max(1, -(-n_images // max(1, len(meta.get("class_names") or [1]))))
    arrays = generate.conditioning(meta, settings, index, seed=seed, source=str(model_path))
    context = None if getattr(net, "context_dim", 0) == 0 else torch.from_numpy(arrays["context"]).to(torch_device)
    shape = generate.image_shape(meta)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(
        integer(seed, "sample.schedule", i))) for i in index]).to(torch_device)
    grid = fine_grid(points=grid_points, sigma_min=sigma_min, sigma_max=sigma_max, rho=grid_rho)
    budgets = [evaluations] if isinstance(evaluations, int) else list(evaluations)
    found = gits_sigmas(net, noise, solver=solver, evaluations=budgets, grid=grid, substeps=substeps,
                        context=context, guidance=guidance, guide=guide_net)
    digest = generate.model_id(model_path)
    records = [{
        "format": SCHEDULE_FORMAT,
        "method": "GITS (Chen et al. 2024): least total one-step cost over a fine grid, dynamic programming",
        "sigmas": sigmas,
        "model_id": digest,
        "model": str(model_path),
        "solver": solver,
        "step_cost": "heun" if solver == "heun" else "euler (first order, = DDIM for EDM)",
        "evaluations": int(budget),
        "guidance": float(guidance),
        "guide": guide_name,
        "grid": {"points": int(grid_points), "rho": float(grid_rho), "sigma_min": float(sigma_min),
                 "sigma_max": float(sigma_max), "teacher": f"heun, {int(substeps)} steps per grid interval"},
        "n_images": int(n_images),
        "seed": int(seed),
        "seed_stream": "sample.schedule",
        **details,
    } for budget, (sigmas, details) in zip(budgets, found)]
    return records[0] if isinstance(evaluations, int) else records


def write_schedule(path: str | Path, record: Mapping) -> Path:
    """Write a schedule record as JSON (atomically)."""
    from radiogen.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(dict(record), indent=1) + "\n")
    return path


def read_schedule(path: str | Path, *, model_digest: str | None, solver: str | None = None) -> list[float]:
    """The noise levels of a schedule file, checked against the model sampled.

    Raises
    ------
    InputFileError
        The file is missing, not a schedule, or its levels are not decreasing to 0.
    ConfigError
        ``model_digest`` differs from the file's (both named), or is None.
    """
    from radiogen.sampler.loop import noise_levels

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: schedule file (sample.sampler.schedule) does not exist")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputFileError(f"{path}: not a JSON schedule file ({err})") from err
    if not isinstance(record, dict) or record.get("format") != SCHEDULE_FORMAT or "sigmas" not in record:
        raise InputFileError(f"{path}: not a schedule file (format {SCHEDULE_FORMAT!r} with 'sigmas' expected)")
    if model_digest is None:
        raise ConfigError(f"{path}: a schedule file needs the digest of the model sampled to check it against")
    if record.get("model_id") != model_digest:
        raise ConfigError(f"{path}: schedule made for model {record.get('model_id')} ({record.get('model')}), "
                          f"but the model sampled is {model_digest}")
    try:
        levels = noise_levels(record["sigmas"])
    except (TypeError, ValueError) as err:
        raise InputFileError(f"{path}: bad sigmas ({err})") from err
    if solver is not None and record.get("solver") != solver:
        import logging

        logging.getLogger(__name__).warning("%s: schedule optimised for solver %s, used with %s", path,
                                            record.get("solver"), solver)
    return levels
