"""The labelled FIRST dataset (Griese et al. 2023): fetch, read, crop, balance.

See :mod:`radiogen.first.dataset` for the archive layout and
:mod:`radiogen.first.balance` for the diffusion-model training set.
"""

from radiogen.first.balance import build_training_set, undersample, write_training_set
from radiogen.first.dataset import (
    BEAM_ARCSEC,
    CLASS_NAMES,
    FREQUENCY_HZ,
    PIXEL_SCALE_ARCSEC,
    SPLIT_NAMES,
    FirstDataset,
    class_counts_table,
    list_first_zip,
    read_dataset_h5,
    read_first_zip,
    write_dataset_h5,
)
from radiogen.first.fetch import ZENODO_URL, fetch_first_zip

__all__ = [
    "BEAM_ARCSEC",
    "CLASS_NAMES",
    "FREQUENCY_HZ",
    "PIXEL_SCALE_ARCSEC",
    "SPLIT_NAMES",
    "ZENODO_URL",
    "FirstDataset",
    "build_training_set",
    "class_counts_table",
    "fetch_first_zip",
    "list_first_zip",
    "read_dataset_h5",
    "read_first_zip",
    "undersample",
    "write_dataset_h5",
    "write_training_set",
]
