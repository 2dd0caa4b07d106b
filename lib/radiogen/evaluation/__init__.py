"""Evaluation of generated image sets against real ones (paper Sects. 5, 6, App. A).

Submodules, imported on demand (PyBDSF and plotting are heavy):

* :mod:`radiogen.evaluation.imagesets` - read training and sample sets alike;
* :mod:`radiogen.evaluation.pybdsf` - PyBDSF models, A50%, Delta+, shards;
* :mod:`radiogen.evaluation.stats` - pixel/mean/std histograms, Poisson intervals;
* :mod:`radiogen.evaluation.flux` - flux conditioning (Delta+ vs peak flux);
* :mod:`radiogen.evaluation.plots_pybdsf` - PyBDSF figures;
* further modules for class conditioning, similarity and summary distances.
"""
