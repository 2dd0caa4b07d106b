"""Named random streams: every random draw of a run derives from ``config["seed"]``.

Rules and CLI commands pass only the global seed.  Each use of randomness has a
name here; its generator is seeded by ``SeedSequence([seed, number, *keys])``,
where ``keys`` index inside the stream (an image, an epoch, a mosaic), so that
streams never overlap, any part of a job can be redone alone, and the same
config gives the same outputs.  The numbers are part of the results: changing
one changes what a config produces.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STREAMS", "stream", "sequence", "generator", "integer"]

#: Stream name -> second SeedSequence entry.
STREAMS: dict[str, int] = {
    # LoTSS data (radiogen.simulate, radiogen.lotss)
    "lotss.simulate.main": 1000,
    "lotss.simulate.classical": 2000,
    "lotss.split": 2,  # train/validation split of the training set
    "lotss.cutout_examples": 110,
    "lotss.selection_examples": 111,  # S/N-binned examples of the selection figure
    "lotss.selection_steps": 112,  # examples per removal step
    # FIRST data (radiogen.first)
    "first.balance": 301,
    "first.split": 302,
    "first.examples": 303,
    # classifier and diffusion-model training
    "classifier.train": 310,
    "train.lotss": 4000,
    "train.first": 4001,
    # sampling (radiogen.sampler): per image index
    "sample.noise": 500,
    "sample.context": 501,
    "sample.size": 503,
    "sample.figure": 510,
    "sample.schedule": 511,  # teacher latents of a GITS schedule (radiogen.sampler.schedules)
    # simulated survey maps (radiogen.skymap)
    "skymap.catalogue": 600,
    "skymap.tiles": 601,
    "skymap.noise": 602,
    "skymap.interferometer.noise": 603,  # per channel block and chunk of measurement-set rows
    "skymap.population": 604,  # counts population: positions, fluxes, sizes
    # evaluation
    "evaluation.pybdsf": 700,  # stabilising noise per image, flux-distance subsets
    "evaluation.classify_subset": 701,
    "evaluation.similarity_generated": 702,
    "evaluation.similarity_reference": 703,
    "evaluation.similarity_figure": 704,
    "evaluation.similarity_training": 705,
    "evaluation.partitions": 706,
    "evaluation.pixels": 707,
    "evaluation.feature_partitions": 708,
    "evaluation.size_null": 720,  # within-flux-bin shuffles of requested sizes
}


def stream(name: str) -> int:
    """The number of a named stream; an unknown name is a programming error."""
    try:
        return STREAMS[name]
    except KeyError:
        raise KeyError(f"no random stream named {name!r} in radiogen.seeds.STREAMS") from None


def sequence(seed: int, name: str, *keys: int) -> np.random.SeedSequence:
    """``SeedSequence([seed, stream(name), *keys])``."""
    return np.random.SeedSequence([int(seed), stream(name), *(int(k) for k in keys)])


def generator(seed: int, name: str, *keys: int) -> np.random.Generator:
    """A numpy generator of one stream (and position inside it)."""
    return np.random.default_rng(sequence(seed, name, *keys))


def integer(seed: int, name: str, *keys: int) -> int:
    """A 63-bit integer seed of one stream, for ``torch.manual_seed`` and seed arguments."""
    return int(sequence(seed, name, *keys).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
