"""Simulated survey maps: generated sources placed on a LoTSS-like sky grid.

The follow-up of the paper (Vičánek Martínez et al. 2025, A&A 700, A18)
assembles generated radio galaxies into survey maps from an input catalogue.
radiogen does it in the image plane, in five steps that are separate jobs:

1. :mod:`~radiogen.skymap.catalogue` -- the input catalogue, assigned to tiles
   of the map: a population (:mod:`~radiogen.skymap.population`: the 144 MHz
   source counts or a user table of integrated fluxes and sizes; resolved
   sources generated, the others analytic Gaussians), or for the model-only map
   a user table or positions drawn at a source density with peak fluxes from
   the model's training distribution or a power law;
2. :mod:`~radiogen.skymap.stamps` -- one job per tile generates its sources
   with the trained LoTSS model and keeps each one's emission (islands above
   a threshold of the cutout's own noise), in Jy/beam;
3. :mod:`~radiogen.skymap.assemble` -- places every stamp and Gaussian on the
   map grid (each source exactly once, whatever tile borders it crosses), writes
   the intrinsic sky (Jy/pixel) and the noise-free sky model (Jy/beam), observes it (:data:`~radiogen.skymap.assemble.OBSERVATIONS`,
   the seam where a visibility simulation would plug in) and writes the map
   FITS and its truth catalogue;
4. :mod:`~radiogen.skymap.validate` -- PyBDSF on the whole map, matched to the
   truth: completeness, reliability, flux ratios, offsets, source counts.

Geometry (:mod:`~radiogen.skymap.geometry`) and settings
(:mod:`~radiogen.skymap.settings`) are shared by all steps.
"""
