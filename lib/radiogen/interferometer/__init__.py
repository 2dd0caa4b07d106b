"""A LoTSS-like LOFAR HBA observation in visibilities, with real radio-astronomy tools.

The image-plane map (:mod:`radiogen.skymap`) pastes sources on beam-correlated
noise.  This package observes a sky model as an interferometer does:

1. :mod:`~radiogen.interferometer.stations` -- the Dutch LOFAR HBA stations at
   their real positions (``data/lofar_hba_stations.csv``, source recorded there);
2. :mod:`~radiogen.interferometer.measurement_set` -- a measurement set built
   with python-casacore: ANTENNA, SPECTRAL_WINDOW, FIELD and the other
   subtables, an hour-angle track centred on transit, UVW from casacore measures;
3. :mod:`~radiogen.interferometer.wsclean` -- the WSClean command line:
   prediction of a model image (Jy/pixel) into MODEL_DATA with the w-gridder,
   and LoTSS-like imaging (Briggs weighting, 6 arcsec taper, automatic mask and
   threshold, optional multi-scale) to restored, residual, model and PSF FITS;
4. :mod:`~radiogen.interferometer.model_image` -- the model image on the grid
   WSClean predicts from (centred on the phase centre, which WSClean assumes);
5. :mod:`~radiogen.interferometer.thermal_noise` -- Gaussian noise per
   visibility, scaled so that the restored image has the rms asked for.

The band can be split into channel blocks, each its own measurement set and
job (:mod:`~radiogen.interferometer.blocks`: their records and checks;
:mod:`~radiogen.interferometer.map_steps`: the workflow's steps), and
:mod:`~radiogen.interferometer.costs` estimates each job's memory and time.

Settings: :mod:`~radiogen.interferometer.settings` (schema section
``skymap.interferometer``).
"""
