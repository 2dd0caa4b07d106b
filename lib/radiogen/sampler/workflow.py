"""Helpers for ``workflow/rules/sample.smk``: shard names, path tags, shard settings.

Kept in the library so the rule file holds rules only (snakemake --lint).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

from radiogen.errors import ConfigError
from radiogen.surveys import FIRST_CLASS_NAMES

__all__ = ["guidance_tag", "shard_names", "first_total", "shard_settings", "sampling_settings", "parse_guide",
           "snapshot_path"]

#: Keys of each dataset block that change the images (and so the shard outputs).
CONDITIONING_KEYS = {
    "lotss": ("n_images", "conditioning", "peak_flux", "peak_flux_range", "range_space", "size", "size_range"),
    "first": ("n_per_class",),
}

#: Classes of the FIRST model (Griese et al. 2023 labels), for the shard count.
FIRST_N_CLASSES = len(FIRST_CLASS_NAMES)


def guidance_tag(guidance: float) -> str:
    """Guidance value as written in paths: Python float text (0.0, 0.75, 1.0, 2.0)."""
    return str(float(guidance))


def shard_names(total: int, images_per_shard: int) -> list[str]:
    """Zero-padded shard wildcards 0000, 0001, ... for ceil(total / per shard) shards."""
    return [f"{i:04d}" for i in range(max(1, math.ceil(total / images_per_shard)))]


def first_total(first: Mapping) -> int:
    """Images in one FIRST set: n_per_class per class, or the sum of a per-class list."""
    counts = first["n_per_class"]
    return int(sum(counts)) if isinstance(counts, list) else FIRST_N_CLASSES * int(counts)


def shard_settings(sample: Mapping, dataset: str) -> str:
    """JSON for ``radiogen sample shard --settings``: only what changes images or the job."""
    block = sample[dataset]
    return json.dumps(
        {
            "sampler": sample["sampler"],
            "dataset": {k: block[k] for k in CONDITIONING_KEYS[dataset]},
            "images_per_shard": block["images_per_shard"],
            "batch_size": sample["batch_size"],
            "cuda_batch_size": sample["cuda_batch_size"],
            "device": sample["device"],
            "precision": sample["precision"],
        },
        sort_keys=True,
    )


def sampling_settings(sample: Mapping) -> str:
    """JSON of the solver and job settings alone (``radiogen skymap tile --sampling``)."""
    return json.dumps({key: sample[key] for key in ("sampler", "batch_size", "cuda_batch_size", "device",
                                                         "precision")},
                      sort_keys=True)


def snapshot_path(model_path: str | os.PathLike, step: int) -> Path:
    """Where a training run writing ``model_path`` keeps its EMA snapshot of ``step``
    (``train.{dataset}.snapshot_steps``): ``snapshots/<stem>-step<STEP>.pt`` beside it."""
    model_path = Path(model_path)
    return model_path.parent / "snapshots" / f"{model_path.stem}-step{int(step)}.pt"


def parse_guide(text: str, *, dataset: str, snapshot_steps) -> tuple[str, int | str | None]:
    """``sample.{dataset}.guide`` as (kind, value): ``("unconditional", None)``,
    ``("checkpoint", STEP)`` or ``("model", PATH)``.

    A checkpoint step must be one the training run keeps
    (``train.{dataset}.snapshot_steps``); otherwise a :class:`ConfigError`
    naming both keys.
    """
    kind, _, value = str(text).strip().partition(" ")
    value = value.strip()
    key = f"sample.{dataset}.guide"
    if kind == "unconditional" and not value:
        return kind, None
    if kind == "model" and value:
        return kind, value
    if kind == "checkpoint" and value.isdigit():
        step = int(value)
        if step not in [int(s) for s in snapshot_steps]:
            raise ConfigError(
                f"{key}: 'checkpoint {step}' needs {step} in train.{dataset}.snapshot_steps "
                f"(now {list(snapshot_steps)}), so that the training run keeps that snapshot")
        return kind, step
    raise ConfigError(f"{key} must be 'unconditional', 'checkpoint STEP' or 'model PATH', got {text!r}")
