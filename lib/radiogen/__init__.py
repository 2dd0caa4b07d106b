"""radiogen: diffusion models that generate realistic radio galaxy images.

Subpackages by topic:

- :mod:`radiogen.lotss` -- LoTSS mosaics, catalogue, cutouts, selection, preprocessing
- :mod:`radiogen.simulate` -- the classical simulated LoTSS-like survey (default data)
- :mod:`radiogen.first` -- the FIRST labelled dataset (Griese et al. 2023)
- :mod:`radiogen.classifier` -- the ResNet-18 morphology classifier
- :mod:`radiogen.model` -- EDM U-Net, preconditioning, loss, training
- :mod:`radiogen.sampler` -- Heun sampler with classifier-free guidance
- :mod:`radiogen.evaluation` -- PyBDSF, image statistics and the paper's metrics
"""

__version__ = "0.1.0"
