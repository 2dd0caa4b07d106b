"""radiogen: diffusion models that generate realistic radio galaxy images.

Subpackages by topic:

- :mod:`radiogen.lotss` -- LoTSS mosaics, catalogue, cutouts, selection, preprocessing
- :mod:`radiogen.simulate` -- the classical simulated LoTSS-like survey (default data)
- :mod:`radiogen.first` -- the FIRST labelled dataset (Griese et al. 2023)
- :mod:`radiogen.classifier` -- the ResNet-18 morphology classifier
- :mod:`radiogen.model` -- EDM U-Net, preconditioning, loss, training
- :mod:`radiogen.sampler` -- Heun sampler with classifier-free guidance
- :mod:`radiogen.evaluation` -- PyBDSF, image statistics and the paper's metrics

``radiogen.generate(model, n=...)`` returns images of a trained model and their
conditions (:func:`radiogen.sampler.request.generate`; ``radiogen generate`` on
the command line).
"""

__version__ = "0.1.0"

import os as _os

# HDF5 locks every file it opens (flock) and fails with "unable to lock file" on
# Lustre or GPFS mounted without flock support, as on many clusters.  radiogen
# writes each HDF5 file under a temporary name and renames it when complete, so
# no reader ever sees a file being written and the locks protect nothing.  HDF5
# reads the variable once, when h5py is first imported: hence here, before any
# radiogen module imports h5py.  Export HDF5_USE_FILE_LOCKING=TRUE to keep locking.
_os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


def __getattr__(name):
    # Lazy, so that ``import radiogen`` stays free of torch.
    if name == "generate":
        from radiogen.sampler.request import generate

        return generate
    raise AttributeError(f"module 'radiogen' has no attribute {name!r}")
