"""Each config section's own settings checks, run at start-up on the whole config.

The JSON schemas check one key at a time; the jobs' settings objects also check
keys against each other (``skymap.peak_threshold_sigma`` against
``island_threshold_sigma``, the U-Net's levels against the image size, ...).
Without this module those checks ran only when the job that reads the section
started, possibly after hours of training.  :func:`section_problems` builds every
section's settings object from the config exactly as its job does (the same
classes and functions, not copies of their rules) and adds the conditions that
join sections (a batch that the GPUs cannot split, a sample request the model's
context cannot take).  :func:`radiogen.config.check_settings` calls it after the
schemas and defaults, so every key it reads is present.

Checks that depend on the machine a job lands on (a visible GPU, installed
PyBDSF) or on input files stay with the jobs.
"""

from __future__ import annotations

import os

import re
from pathlib import Path
from typing import Callable

from radiogen.errors import ConfigError

__all__ = ["section_problems", "SECTION_CHECKS"]


def _lotss_source(config: dict) -> None:
    lotss = config["lotss"]
    missing = []
    if lotss["source"] == "files":
        if not lotss["files"]["mosaics"]:
            missing.append("lotss.files.mosaics: lotss.source is 'files' but no mosaics are listed")
        if not lotss["files"]["catalogue"]:
            missing.append("lotss.files.catalogue: lotss.source is 'files' but no catalogue is set")
    if lotss["source"] == "download" and not lotss["download"]["mosaics"]:
        missing.append("lotss.download.mosaics: lotss.source is 'download' but no mosaics are listed")
    if lotss["source"] == "published" and not lotss["published_dataset"]:
        missing.append("lotss.published_dataset: lotss.source is 'published' but no LOFAR_Dataset.h5 is set")
    if missing:
        raise ConfigError("; ".join(missing))


def _lotss_simulate(config: dict) -> None:
    # Always read: the classical baseline survey is simulated whatever lotss.source is.
    from radiogen.simulate import SurveySettings

    survey = SurveySettings.from_mapping(config["lotss"]["simulate"])
    if config["lotss"]["cutout_size"] >= survey.mosaic_size:
        raise ConfigError(
            f"lotss.cutout_size ({config['lotss']['cutout_size']} px) must be smaller than "
            f"lotss.simulate.mosaic_size ({survey.mosaic_size} px): no complete cutout fits a mosaic"
        )


def _lotss_selection(config: dict) -> None:
    from radiogen.lotss.selection import SelectionSettings

    SelectionSettings.from_mapping(config["lotss"]["selection"], source="lotss.selection")


def _lotss_preprocess(config: dict) -> None:
    from radiogen.lotss.preprocess import PreprocessSettings

    PreprocessSettings.from_mapping(config["lotss"]["preprocess"], source="lotss.preprocess")


def _first(config: dict) -> None:
    first = config["first"]
    if first["crop_size"] > first["image_size"]:
        raise ConfigError(
            f"first.crop_size ({first['crop_size']} px) must be at most first.image_size "
            f"({first['image_size']} px, the archive images' side): it is their central crop"
        )


#: Image side (pixels) each diffusion model trains on and generates: the key that sets it.
IMAGE_SIZE_KEYS = {"lotss": "lotss.cutout_size", "first": "first.crop_size"}


def _model(config: dict) -> None:
    # The real U-Net, built once on the CPU (the paper's 31 M parameters take ~1 s):
    # its constructor checks dec_blocks, norm_groups against every level's channels
    # and the embedding width, as the training job would. The two models differ only
    # in image size (checked here for each) and context length (the embedding's input).
    # (Torch's meta device would skip the weights but its first use costs ~4 s.)
    from radiogen.model import build_network, model_config_from
    from radiogen.model.networks import check_image_size

    for key in IMAGE_SIZE_KEYS.values():
        section, name = key.split(".")
        side = int(config[section][name])
        try:
            check_image_size(side, side, len(config["model"]["channel_mults"]))
        except ConfigError as err:
            raise ConfigError(f"{key} ({side} px) and model.channel_mults: {err}") from None
    from radiogen.lotss.preprocess import CONTEXTS

    side = int(config["lotss"]["cutout_size"])
    context_dim = len(CONTEXTS[config["lotss"]["preprocess"]["context"]])  # the LoTSS model's
    build_network(model_config_from(config["model"], image_channels=1, image_size=[side, side],
                                    context_dim=context_dim))


def _train(config: dict) -> None:
    from radiogen.model.train_settings import DATASETS, resolve_settings

    for dataset in DATASETS:
        settings = resolve_settings(config["train"], dataset)
        init_from = settings["init_from"]
        output = os.path.join(config["results"], "models", dataset, "model.pt")
        if init_from is not None and os.path.abspath(init_from) == os.path.abspath(output):
            # The rule's input would be its own output (Snakemake: a cyclic graph).
            raise ConfigError(
                f"train.{dataset}.init_from ({init_from}) is the model this run writes; copy it elsewhere "
                "and fine-tune from the copy"
            )
        processes = max(1, int(config["train"][dataset]["resources"]["gpus"]))
        if int(settings["batch_size"]) % processes:
            # One data-parallel process per GPU, each taking an equal share of the batch.
            raise ConfigError(
                f"train.{dataset}.batch_size ({settings['batch_size']}) must be divisible by "
                f"train.{dataset}.resources.gpus ({processes}): one training process per GPU"
            )


def _sample_sampler(config: dict) -> None:
    sampler = config["sample"]["sampler"]
    if sampler["solver"] != "heun" and sampler["S_churn"] > 0:
        raise ConfigError(
            f"sample.sampler.S_churn ({sampler['S_churn']}) > 0 needs sample.sampler.solver heun "
            f"({sampler['solver']} is deterministic)"
        )
    schedule = sampler.get("schedule", "karras")
    if schedule != "karras" and not Path(schedule).is_file():
        # checked against the model's digest when sampling starts (radiogen.sampler.schedules.read_schedule)
        raise ConfigError(f"sample.sampler.schedule: {schedule} is neither 'karras' nor an existing schedule file")
    if schedule != "karras":
        # A schedule file is made for one model (its digest is recorded); the workflow samples the
        # LoTSS and FIRST models and the map's tiles with one sampler block, so all but one would stop.
        raise ConfigError(f"sample.sampler.schedule: {schedule} is a schedule file, made for one model, but the "
                          "workflow samples several models with these settings; use 'karras' here and the file "
                          "with `radiogen generate --schedule` for its model")


#: Keys that name a torch device (``auto``: the GPU when one is visible, else the CPU).
DEVICE_KEYS = ("classifier.device", "sample.device", "evaluation.classes.device")


def _devices(config: dict) -> None:
    # Whether the device exists is the job's machine's business; the name is checked here.
    import torch

    for key in DEVICE_KEYS:
        section, *rest = key.split(".")
        node = config[section]
        for part in rest:
            node = node[part]
        if node == "auto":
            continue
        try:
            torch.device(node)
        except (RuntimeError, ValueError) as err:
            raise ConfigError(f"{key}: {node!r} is not a torch device (auto, cpu, cuda, cuda:0, ...)") from err


def _sample_lotss(config: dict) -> None:
    """The LoTSS sample request against the model's context (lotss.preprocess.context)."""
    request = config["sample"]["lotss"]
    mode = request["conditioning"]
    with_size = "size" in config["lotss"]["preprocess"]["context"]
    if mode == "list" and not request["peak_flux"]:
        raise ConfigError("sample.lotss.peak_flux: conditioning 'list' needs a non-empty list (Jy/beam)")
    if not with_size:
        for key in ("size", "size_range"):
            if request[key]:
                raise ConfigError(
                    f"sample.lotss.{key}: given, but lotss.preprocess.context "
                    f"({config['lotss']['preprocess']['context']}) trains a model without size"
                )
        return
    if mode == "list" and not request["size"]:
        raise ConfigError(
            "sample.lotss.size: conditioning 'list' of a size-conditioned model "
            "(lotss.preprocess.context peak_flux+size) needs a non-empty list (arcsec)"
        )
    if mode == "range" and request["size_range"] is None:
        raise ConfigError(
            "sample.lotss.size_range: conditioning 'range' of a size-conditioned model "
            "(lotss.preprocess.context peak_flux+size) needs [low, high] (arcsec)"
        )
    if request["size_range"] is not None:
        low, high = request["size_range"]
        if not low <= high:
            raise ConfigError(f"sample.lotss.size_range must be [low, high] with low <= high, got [{low}, {high}]")


def _sample_guides(config: dict) -> None:
    from radiogen.sampler.workflow import parse_guide

    for dataset in ("lotss", "first"):
        parse_guide(config["sample"][dataset]["guide"], dataset=dataset,
                    snapshot_steps=config["train"][dataset]["snapshot_steps"])


def _sample_first(config: dict) -> None:
    counts = config["sample"]["first"]["n_per_class"]
    if isinstance(counts, list) and sum(counts) == 0:
        raise ConfigError(f"sample.first.n_per_class: {counts} asks for no images at all")


def _imagesets(config: dict) -> None:
    for name, spec in config["imagesets"].items():
        pattern = spec["label_pattern"]
        if pattern is None:
            if spec["label_map"]:
                raise ConfigError(f"imagesets.{name}.label_map: given, but no label_pattern to read labels with")
            continue
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"imagesets.{name}.label_pattern {pattern!r}: not a regular expression ({err})") from None
        if "label" not in regex.groupindex:
            raise ConfigError(f"imagesets.{name}.label_pattern {pattern!r}: needs a named group (?P<label>...)")
        unknown = sorted(set(spec["label_map"].values()) - set(spec["class_names"]))
        if unknown and not spec["skip_unlabelled"]:
            # (with skip_unlabelled, mapping to a name outside the classes leaves those files out)
            raise ConfigError(
                f"imagesets.{name}.label_map: maps to {', '.join(unknown)}, not among "
                f"imagesets.{name}.class_names {spec['class_names']} (set skip_unlabelled to leave those out)"
            )


def _skymap(config: dict) -> None:
    from radiogen.skymap.settings import MapSettings

    MapSettings.from_mapping(config["skymap"], name="skymap")


def _skymap_interferometer(config: dict) -> None:
    # the observation's own checks (channels against channel_blocks, ...), before any measurement set is built
    from radiogen.interferometer.settings import InterferometerSettings

    InterferometerSettings.from_mapping(config["skymap"]["interferometer"], name="skymap.interferometer")


#: Section checks in config order: name -> check(config), which raises ConfigError.
SECTION_CHECKS: dict[str, Callable[[dict], None]] = {
    "lotss.source": _lotss_source,
    "lotss.simulate": _lotss_simulate,
    "lotss.selection": _lotss_selection,
    "lotss.preprocess": _lotss_preprocess,
    "first": _first,
    "model": _model,
    "train": _train,
    "sample.sampler": _sample_sampler,
    "devices": _devices,
    "sample.lotss": _sample_lotss,
    "sample.first": _sample_first,
    "sample.guide": _sample_guides,
    "imagesets": _imagesets,
    "skymap": _skymap,
    "skymap.interferometer": _skymap_interferometer,
}


def section_problems(config: dict) -> list[str]:
    """One message per section whose settings are wrong (each names its key).

    ``config`` must have passed the schemas with defaults filled
    (:func:`radiogen.config.check_settings` does both first).
    """
    problems = []
    for check in SECTION_CHECKS.values():
        try:
            check(config)
        except ConfigError as err:
            problems.append(str(err))
    return problems
