"""Settings of diffusion-model training: the ``train`` section resolved for one model.

Defaults come from ``workflow/schemas/train.schema.yaml`` only
(:func:`radiogen.config.section_defaults`); :func:`resolve_settings` merges the
shared keys with the model's own block and checks names and values.
"""

from __future__ import annotations

from typing import Any

from radiogen.config import section_defaults
from radiogen.errors import ConfigError

__all__ = ["TRAIN_DEFAULTS", "DATASET_DEFAULTS", "PRECISIONS", "RESUMABLE_KEYS", "STALE_CHOICES", "resolve_settings"]

#: Keys of the ``train`` section that hold one model's settings (its sub-block).
DATASETS = ("lotss", "first")
#: Training settings shared by both models (the schema's defaults: the authors' values).
TRAIN_DEFAULTS: dict[str, Any] = {k: v for k, v in section_defaults("train").items() if k not in DATASETS}
#: Settings that differ between the models (the ``train.lotss`` / ``train.first`` defaults).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    dataset: {k: v for k, v in section_defaults(f"train.{dataset}").items() if k != "resources"}
    for dataset in DATASETS
}
#: Keys of the config section that are not training settings.
NON_TRAIN_KEYS = ("lotss", "first", "resources")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Settings that do not change the trained weights: a checkpoint made under other
#: values of these still belongs to the run (``steps`` may grow to train longer).
RESUMABLE_KEYS = ("steps", "log_every", "val_every", "checkpoint_every", "keep_checkpoints",
                  "val_sigmas", "val_max_images", "histogram_bins", "compile", "channels_last",
                  "precision", "stale_checkpoints", "signal_before_limit_s")
STALE_CHOICES = ("discard", "error")


def resolve_settings(section: dict | None, dataset: str) -> dict:
    """Settings for one model: defaults <- dataset defaults <- section <- section[dataset].

    Checks names and values; raises :class:`ConfigError` naming the key.
    """
    if dataset not in DATASET_DEFAULTS:
        raise ConfigError(f"train: unknown dataset {dataset!r} (expected lotss or first)")
    section = dict(section or {})
    sub = dict(section.get(dataset) or {})
    sub.pop("resources", None)
    common = {k: v for k, v in section.items() if k not in NON_TRAIN_KEYS}
    settings = {**TRAIN_DEFAULTS, **DATASET_DEFAULTS[dataset], **common, **sub}
    known = set(TRAIN_DEFAULTS) | set(DATASET_DEFAULTS[dataset])
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"train: unknown setting(s) {', '.join(unknown)}")
    for key in ("batch_size", "steps", "log_every", "val_every", "checkpoint_every", "keep_checkpoints"):
        if int(settings[key]) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {settings[key]}")
    late = [int(s) for s in settings["snapshot_steps"] if not 1 <= int(s) < int(settings["steps"])]
    if late:
        raise ConfigError(f"train.{dataset}.snapshot_steps must lie in [1, steps = {settings['steps']}), "
                          f"got {late}")
    if settings["precision"] not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {settings['precision']!r}")
    if not 0.0 <= float(settings["ema_decay"]) < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {settings['ema_decay']}")
    if settings["ema_rampup_ratio"] is not None and not float(settings["ema_rampup_ratio"]) > 0:
        raise ConfigError(f"train.ema_rampup_ratio must be > 0 or null, got {settings['ema_rampup_ratio']}")
    if any(float(s) <= 0 for s in settings["val_sigmas"]):
        raise ConfigError("train.val_sigmas must all be > 0")
    if settings["stale_checkpoints"] not in STALE_CHOICES:
        raise ConfigError(
            f"train.stale_checkpoints must be one of {STALE_CHOICES}, got {settings['stale_checkpoints']!r}"
        )
    return settings
