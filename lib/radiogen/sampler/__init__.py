"""Sampling generated image sets from trained diffusion models.

:mod:`~radiogen.sampler.heun` holds the EDM Heun solver and classifier-free
guidance, :mod:`~radiogen.sampler.conditioning` the peak-flux and class
conditioning draws, :mod:`~radiogen.sampler.generate` sharded generation and
aggregation, :mod:`~radiogen.sampler.fits_export` FITS output,
:mod:`~radiogen.sampler.plots` the report figures and
:mod:`~radiogen.sampler.workflow` the helpers of ``workflow/rules/sample.smk``.
"""

from radiogen.sampler.heun import StepInfo, guided_denoiser, sample, sigma_schedule

__all__ = ["StepInfo", "guided_denoiser", "sample", "sigma_schedule"]
