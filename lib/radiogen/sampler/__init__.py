"""Sampling generated image sets from trained diffusion models.

:mod:`~radiogen.sampler.heun` holds the EDM Heun solver,
:mod:`~radiogen.sampler.loop` the step loop, noise levels and classifier-free
guidance shared by all solvers (:mod:`~radiogen.sampler.solvers`),
:mod:`~radiogen.sampler.schedules` GITS noise schedules,
:mod:`~radiogen.sampler.conditioning` the peak-flux and class
conditioning draws, :mod:`~radiogen.sampler.generate` sharded generation and
aggregation, :mod:`~radiogen.sampler.fits_export` FITS output,
:mod:`~radiogen.sampler.plots` the report figures and
:mod:`~radiogen.sampler.workflow` the helpers of ``workflow/rules/sample.smk``.
"""

import importlib

__all__ = ["StepInfo", "guided_denoiser", "sample", "sigma_schedule"]


def __getattr__(name):
    # Lazy: aggregation, FITS export and figures run in envs without torch.
    if name in __all__:
        return getattr(importlib.import_module("radiogen.sampler.heun"), name)
    raise AttributeError(f"module 'radiogen.sampler' has no attribute {name!r}")
