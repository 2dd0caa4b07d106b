"""One source of truth: every default is written in a schema, and the library sees it.

Each test builds a library settings object (or the CLI's parser) without any
config and compares it, key by key, with the defaults of its schema section, so
that a default changed in the schema cannot leave a stale copy in the code.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from radiogen.config import fill_defaults, load_schema, schema_dir, section_defaults


def _fields(settings) -> dict:
    """Dataclass fields with tuples as lists (the schema's YAML has lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def _schema_leaves(schema: dict, base, prefix: str = ""):
    """(dotted key, default) of every property with a scalar or list default."""
    from radiogen.config import _resolve

    schema, base = _resolve(schema, base)
    for key, sub in schema.get("properties", {}).items():
        sub, sub_base = _resolve(sub, base)
        dotted = f"{prefix}{key}"
        if "properties" in sub:
            yield from _schema_leaves(sub, sub_base, dotted + ".")
        elif "default" in sub and not isinstance(sub["default"], dict):
            yield dotted, sub["default"]


def test_section_defaults_are_what_the_workflow_fills():
    """The library's view of a section equals the workflow's filled config."""
    config = fill_defaults({k: {} for k in load_schema(schema_dir() / "config.schema.yaml")["properties"]
                            if k not in ("seed", "results")}, schema_dir() / "config.schema.yaml")
    for section in ("train", "model", "classifier", "sample", "evaluation", "lotss", "first", "skymap"):
        assert section_defaults(section) == config[section], section
    leaves = dict(_schema_leaves(load_schema(schema_dir() / "config.schema.yaml"), schema_dir()))
    assert len(leaves) > 150  # every section's settings, not just the top level
    for dotted, default in leaves.items():
        section, _, key = dotted.rpartition(".")
        assert section_defaults(section)[key] == default, dotted


def test_section_defaults_name_an_unknown_section():
    with pytest.raises(KeyError, match="no key 'selectoin'"):
        section_defaults("lotss.selectoin")


def test_settings_dataclasses_default_to_the_schema():
    from radiogen.classifier.augment import AugmentSettings
    from radiogen.lotss.preprocess import PreprocessSettings
    from radiogen.lotss.selection import SelectionSettings
    from radiogen.simulate import SurveySettings

    assert _fields(SelectionSettings()) == section_defaults("lotss.selection")
    assert _fields(PreprocessSettings()) == section_defaults("lotss.preprocess")
    assert _fields(AugmentSettings()) == section_defaults("classifier.augment")
    assert _fields(SurveySettings()) == section_defaults("lotss.simulate")


def test_interferometer_settings_default_to_the_schema():
    from radiogen.interferometer.settings import InterferometerSettings

    block = section_defaults("skymap.interferometer")
    resources = {"enabled", "mem_mb", "runtime_min"}
    assert _fields(InterferometerSettings.from_mapping(block)) == {k: v for k, v in block.items()
                                                                    if k not in resources}


def test_training_model_and_sampler_settings_default_to_the_schema():
    from radiogen.model import model_config_from
    from radiogen.model.train_settings import resolve_settings
    from radiogen.sampler.generate import sampler_settings

    train = section_defaults("train")
    for dataset in ("lotss", "first"):
        expected = {k: v for k, v in train.items() if k not in ("lotss", "first")}
        expected.update({k: v for k, v in train[dataset].items() if k != "resources"})
        assert resolve_settings({}, dataset) == expected
    model = model_config_from({}, image_channels=1, image_size=[80, 80], context_dim=1)
    assert {k: model[k] for k in section_defaults("model")} == section_defaults("model")
    assert sampler_settings({}) == section_defaults("sample.sampler")


def test_classifier_and_evaluation_settings_default_to_the_schema():
    from radiogen.classifier.train import merged_settings
    from radiogen.cli import evaluate
    from radiogen.evaluation.pybdsf import DEFAULT_SETTINGS

    classifier = section_defaults("classifier")
    classifier.pop("threads")  # the job's cores, given to torch by the CLI
    assert merged_settings({}) == classifier
    assert evaluate.CLASSES_DEFAULTS == section_defaults("evaluation.classes")
    assert evaluate.SUMMARY_DEFAULTS == section_defaults("evaluation.summary")
    pybdsf = section_defaults("evaluation.pybdsf")
    assert DEFAULT_SETTINGS == {k: pybdsf[k] for k in DEFAULT_SETTINGS}


def _subparser(parser: argparse.ArgumentParser, *words: str) -> argparse.ArgumentParser:
    """The parser of ``radiogen <topic> <verb>``."""
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


@pytest.mark.parametrize("command, option, key", [
    ("lotss assign", "sources", "lotss.sources"),
    ("lotss assign", "duplicates", "lotss.duplicate_names"),
    ("lotss cutouts", "size", "lotss.cutout_size"),
    ("sample export-fits", "ra", "sample.fits.ra_deg"),
    ("sample export-fits", "dec", "sample.fits.dec_deg"),
    ("sample export-fits", "layout", "sample.fits.layout"),
    ("sample export-fits", "freq_stokes_axes", "sample.fits.freq_stokes_axes"),
    ("generate", "ra", "sample.fits.ra_deg"),
    ("generate", "dec", "sample.fits.dec_deg"),
    ("generate", "freq_stokes_axes", "sample.fits.freq_stokes_axes"),
    ("generate", "range_space", "sample.lotss.range_space"),
    ("generate", "seed", "seed"),
    ("generate", "solver", "sample.sampler.solver"),
    ("generate", "rho", "sample.sampler.rho"),
    ("generate", "schedule", "sample.sampler.schedule"),
    ("sample schedule", "images", "sample.gits.n_images"),
    ("sample schedule", "grid_points", "sample.gits.grid_points"),
    ("sample schedule", "grid_rho", "sample.gits.grid_rho"),
    ("sample schedule", "teacher_substeps", "sample.gits.teacher_substeps"),
    ("sample schedule", "sigma_min", "sample.sampler.sigma_min"),
    ("sample schedule", "sigma_max", "sample.sampler.sigma_max"),
    ("generate", "device", "sample.device"),
    ("generate", "precision", "sample.precision"),
    ("generate", "batch_size", "sample.batch_size"),
    ("generate", "slurm_cpus", "sample.threads"),
    ("generate", "slurm_mem_mb", "sample.mem_mb"),
    ("generate", "slurm_time_min", "sample.runtime_min"),
])
def test_cli_options_that_stand_for_a_config_key_default_to_it(command, option, key):
    from radiogen.cli import build_parser

    section, _, name = key.rpartition(".")
    parser = _subparser(build_parser(), *command.split())
    assert parser.get_default(option) == section_defaults(section)[name]


def test_every_command_is_topic_then_verb():
    """`radiogen <topic> <verb>` throughout: no flat commands beside the topics, except the
    stand-alone user commands listed in radiogen.cli.COMMANDS (`radiogen generate`, issue 24)."""
    from radiogen.cli import COMMANDS, TOPICS, build_parser

    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(top.choices) == list(TOPICS) + list(COMMANDS)
    assert list(COMMANDS) == ["generate"]
    for topic in TOPICS:
        verbs = _subparser(parser, topic)
        assert any(isinstance(a, argparse._SubParsersAction) for a in verbs._actions), topic
    for command in COMMANDS:
        assert not any(isinstance(a, argparse._SubParsersAction) for a in _subparser(parser, command)._actions)
