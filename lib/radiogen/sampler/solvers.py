"""The ODE solvers of ``sample.sampler.solver`` behind one call.

``heun``: EDM's Heun sampler (Karras et al. 2022, Alg. 1/2; the paper), 2N - 1
network evaluations for N steps, optional churn.  The multistep solvers cost N
evaluations for N steps and are deterministic: ``dpmpp_2m`` DPM-Solver++(2M) and
``dpmpp_3m`` DPM-Solver++(3M) (Lu et al. 2022; :mod:`~radiogen.sampler.dpmpp`,
:mod:`~radiogen.sampler.dpmpp3m`), ``ipndm`` iPNDM (Zhang & Chen 2023, as used on
EDM by Zhou et al. 2024; :mod:`~radiogen.sampler.ipndm`), ``unipc`` UniPC (Zhao et al.
2023, predictor-corrector, the corrector reusing the next evaluation;
:mod:`~radiogen.sampler.unipc`).  Each module holds only its step rule; the step
loop, the noise levels (EDM's rho schedule :func:`~radiogen.sampler.loop.sigma_schedule`,
or an explicit ``sigmas`` sequence such as a GITS schedule of
:mod:`~radiogen.sampler.schedules`) and the guided denoiser are shared
(:func:`~radiogen.sampler.loop.integrate`).
"""

from __future__ import annotations

import torch

from radiogen.errors import ConfigError
from radiogen.sampler.dpmpp import sample_dpmpp_2m
from radiogen.sampler.dpmpp3m import sample_dpmpp_3m
from radiogen.sampler.heun import sample as sample_heun
from radiogen.sampler.ipndm import sample_ipndm
from radiogen.sampler.unipc import sample_unipc

__all__ = ["SOLVERS", "solve", "network_evaluations"]

#: One-evaluation-per-step solvers: name -> sampler function (same keyword options).
MULTISTEP = {"dpmpp_2m": sample_dpmpp_2m, "dpmpp_3m": sample_dpmpp_3m, "ipndm": sample_ipndm,
             "unipc": sample_unipc}
SOLVERS = ("heun", *MULTISTEP)


def network_evaluations(solver: str, num_steps: int) -> int:
    """Denoiser evaluations per image (each a batch of 2 with guidance w != 0)."""
    return 2 * num_steps - 1 if solver == "heun" else num_steps


def solve(net, noise: torch.Tensor, *, solver: str = "heun", generators=None, S_churn: float = 0.0,
          S_min: float = 0.0, S_max: float = float("inf"), S_noise: float = 1.0, schedule: str = "karras",
          **common) -> torch.Tensor:
    """Images from latents ``noise`` with the named solver; ``common`` as for both samplers.

    ``common``: context, guidance, guide, sigmas, num_steps, sigma_min, sigma_max, rho,
    callback, autocast_dtype (:func:`~radiogen.sampler.loop.integrate`).  The churn options (and
    ``generators`` for its noise) apply to ``heun`` only; a multistep solver with
    ``S_churn > 0`` is a :class:`ConfigError`.
    ``schedule`` (``sample.sampler.schedule``) may only be ``karras`` here, so that a
    settings block can be passed as is: a schedule file is read, and checked against
    the model, by :func:`~radiogen.sampler.generate.schedule_levels`, whose levels are
    then passed as ``sigmas``.
    """
    if schedule != "karras":
        raise ConfigError(f"sample.sampler.schedule {schedule!r}: pass the file's levels as sigmas "
                          "(radiogen.sampler.generate.schedule_levels checks it against the model)")
    if solver == "heun":
        return sample_heun(net, noise, generators=generators, S_churn=S_churn, S_min=S_min,
                           S_max=S_max, S_noise=S_noise, **common)
    if solver in MULTISTEP:
        if S_churn > 0:
            raise ConfigError(f"sample.sampler.S_churn > 0 needs solver heun ({solver} is deterministic)")
        return MULTISTEP[solver](net, noise, **common)
    raise ConfigError(f"sample.sampler.solver must be one of {SOLVERS}, got {solver!r}")
