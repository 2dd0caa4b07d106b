"""Every setting is checked at start-up, before any job runs, and the error names the key.

The start-up check (:func:`radiogen.config.check_settings`) is what
workflow/rules/common.smk runs while Snakemake reads the workflow and what
``radiogen config check`` runs on config files: the schemas, NaN and reversed
ranges, and every section's own settings objects (the jobs' classes, so that a
setting they refuse is refused here first). Each case below was found, before
this check, only by the job that reads the key: after cutouts, selection or
hours of training.
"""

from __future__ import annotations

import copy
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from radiogen.cli import main as cli_main
from radiogen.config import check_settings, fill_defaults, read_config_file, schema_dir, schema_problems
from radiogen.errors import ConfigError
from radiogen.startup_check import SECTION_CHECKS, section_problems

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "workflow" / "config" / "paper.yaml"
CI_SLURM = REPO / "workflow" / "config" / "ci-slurm.yaml"


def _merged(*files: Path) -> dict:
    """config.yaml, then each file merged key by key as Snakemake's --configfile does."""
    from snakemake.utils import update_config

    config = read_config_file(REPO / "config.yaml")
    for path in files:
        update_config(config, read_config_file(path))
    return config


def _with(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return config


MIRABEST = {"inputs": ["mirabest/*.fits"], "dataset": "first"}

# name: (section check that refuses it (None: the schemas), key set, value
#        (or {key: value} for several), fragment of the message naming the key)
CASES = {
    # --- the sections' own settings objects, each the one its job builds
    "map peak threshold below the island threshold": (
        "skymap", "skymap.peak_threshold_sigma", 2.0,
        "peak_threshold_sigma must be >= island_threshold_sigma"),
    "map power-law flux range reversed": (
        "skymap", "skymap.peak_flux_range_mjy", [100.0, 1.0],
        "skymap.peak_flux_range_mjy needs 0 < low < high"),
    "simulated morphology fractions all zero": (
        "lotss.simulate", "lotss.simulate.morphology_fractions", {"compact": 0.0, "FRI": 0.0},
        "lotss.simulate.morphology_fractions: keys must be among"),
    "cutout as large as a simulated mosaic": (
        "lotss.simulate", {"lotss.cutout_size": 160, "lotss.simulate.mosaic_size": 160},
        "lotss.cutout_size (160 px) must be smaller than lotss.simulate.mosaic_size (160 px)"),
    "no FIRST images of any class": (
        "sample.first", "sample.first.n_per_class", [0, 0, 0, 0],
        "sample.first.n_per_class: [0, 0, 0, 0] asks for no images at all"),
    "FIRST crop larger than the archive images": (
        "first", {"first.crop_size": 320, "model.channel_mults": [1, 2]},
        "first.crop_size (320 px) must be at most first.image_size (300 px"),
    "norm groups do not divide the channels": (
        "model", "model.norm_groups", 3, "model.norm_groups=3 does not divide the 8 channels"),
    "decoder blocks not encoder blocks + 1": (
        "model", "model.dec_blocks", 3, "model.dec_blocks must equal enc_blocks + 1"),
    "LoTSS cutout not divisible by the U-Net levels": (
        "model", "lotss.cutout_size", 84,
        "lotss.cutout_size (84 px) and model.channel_mults: image size 84x84 cannot pass a U-Net with 4"),
    "FIRST crop not divisible by the U-Net levels": (
        "model", "first.crop_size", 76, "first.crop_size (76 px) and model.channel_mults"),
    "six U-Net levels for 80 px images": (
        "model", "model.channel_mults", [1, 2, 4, 8, 8, 8], "lotss.cutout_size (80 px) and model.channel_mults"),
    "batch not divisible by the GPUs": (
        "train", "train.lotss.resources", {"gpus": 3, "cpus": 8, "mem_mb": 32000, "runtime": 600},
        "train.lotss.batch_size (16) must be divisible by train.lotss.resources.gpus (3)"),
    "fine-tuning from the model the run writes": (
        "train", "train.first.init_from", "results/models/first/model.pt",
        "train.first.init_from (results/models/first/model.pt) is the model this run writes"),
    "churn with the deterministic solver": (
        "sample.sampler", "sample.sampler.S_churn", 0.5,
        "sample.sampler.S_churn (0.5) > 0 needs sample.sampler.solver heun"),
    "schedule file missing": (
        "sample.sampler", "sample.sampler.schedule", "no/such/gits.json",
        "sample.sampler.schedule: no/such/gits.json is neither 'karras' nor an existing schedule file"),
    "schedule file in the workflow": (
        "sample.sampler", "sample.sampler.schedule", str(REPO / "config.yaml"),
        f"sample.sampler.schedule: {REPO / 'config.yaml'} is a schedule file, made for one model, but the "
        "workflow samples several models"),
    "sample device not a device": (
        "devices", "sample.device", "gpu0", "sample.device: 'gpu0' is not a torch device"),
    "classifier device not a device": (
        "devices", "classifier.device", "cuda-1", "classifier.device: 'cuda-1' is not a torch device"),
    "peak-flux list empty for conditioning list": (
        "sample.lotss", "sample.lotss.conditioning", "list",
        "sample.lotss.peak_flux: conditioning 'list' needs a non-empty list"),
    "size request reversed": (
        "sample.lotss", "sample.lotss.size_range", [30.0, 10.0],
        "sample.lotss.size_range must be [low, high] with low <= high"),
    "size list missing for a size-conditioned model": (
        "sample.lotss", "sample.lotss", {"conditioning": "list", "peak_flux": [0.01]},
        "sample.lotss.size: conditioning 'list' of a size-conditioned model"),
    "size range missing for a size-conditioned model": (
        "sample.lotss", "sample.lotss.conditioning", "range",
        "sample.lotss.size_range: conditioning 'range' of a size-conditioned model"),
    "size request for a peak-flux-only model": (
        "sample.lotss", {"lotss.preprocess.context": "peak_flux", "sample.lotss.size": [20.0]},
        "sample.lotss.size: given, but lotss.preprocess.context (peak_flux) trains a model without size"),
    "guide snapshot the training run does not keep": (
        "sample.guide", "sample.first.guide", "checkpoint 700",
        "sample.first.guide: 'checkpoint 700' needs 700 in train.first.snapshot_steps (now [])"),
    "LoTSS files without a catalogue": (
        "lotss.source", "lotss.source", "files", "lotss.files.catalogue: lotss.source is 'files'"),
    "LoTSS download without mosaics": (
        "lotss.source", "lotss.source", "download", "lotss.download.mosaics: lotss.source is 'download'"),
    "label pattern without a label group": (
        "imagesets", "imagesets", {"mb": {**MIRABEST, "label_pattern": "^([0-9])"}},
        "imagesets.mb.label_pattern '^([0-9])': needs a named group (?P<label>...)"),
    "label pattern not a regular expression": (
        "imagesets", "imagesets", {"mb": {**MIRABEST, "label_pattern": "^(?P<label>[0-9]"}},
        "imagesets.mb.label_pattern '^(?P<label>[0-9]': not a regular expression"),
    "label map to an unknown class": (
        "imagesets", "imagesets",
        {"mb": {**MIRABEST, "label_pattern": "^(?P<label>[0-9])", "label_map": {"1": "FRIII"}}},
        "imagesets.mb.label_map: maps to FRIII, not among imagesets.mb.class_names"),
    "label map without a pattern": (
        "imagesets", "imagesets", {"mb": {**MIRABEST, "label_map": {"1": "FRI"}}},
        "imagesets.mb.label_map: given, but no label_pattern"),
    "interferometer channels not a multiple of its channel blocks": (
        "skymap.interferometer", {"skymap.interferometer.channels": 24, "skymap.interferometer.channel_blocks": 5},
        "skymap.interferometer.channels (24) must be a multiple of skymap.interferometer.channel_blocks (5)"),
    # --- the schemas, through the same function (``radiogen config check`` had none)
    "map smaller than nothing": (None, "skymap.size_deg", 0.0, "skymap.size_deg: 0.0 is less than or equal to"),
    "map tile below 16 px": (None, "skymap.tile_px", 8, "skymap.tile_px: 8 is less than the minimum of 16"),
    "LoTSS shard of no images": (None, "sample.lotss.images_per_shard", 0,
                                 "sample.lotss.images_per_shard: 0 is less than the minimum of 1"),
    "empty guidance sweep": (None, "sample.first.guidance_values", [], "sample.first.guidance_values: [] should be non-empty"),
    "per-class sizes of three classes": (None, "sample.first.n_per_class", [10, 10, 10],
                                         "sample.first.n_per_class: [10, 10, 10] is not valid"),
    "zero batch": (None, "train.first.batch_size", 0, "train.first.batch_size: 0 is less than the minimum of 1"),
    "unknown solver": (None, "sample.sampler.solver", "euler", "sample.sampler.solver: 'euler' is not one of"),
    "blank radius out of range": (None, "lotss.simulate.blank_radius", 3.0,
                                  "lotss.simulate.blank_radius: 3.0 is greater than the maximum of 1.5"),
    "simulated morphology unknown": (None, "lotss.simulate.morphology_fractions", {"spiral": 1.0},
                                     "lotss.simulate.morphology_fractions: Additional properties are not allowed"),
    "typo in a key": (None, "train.first.batchsize", 8, "train.first: Additional properties are not allowed ('batchsize'"),
    # --- check_config (already at start-up; here through the same entry point)
    "sigma_min above sigma_max": (None, "sample.sampler.sigma_min", 100.0,
                                  "sample.sampler.sigma_min (100.0) must be < sample.sampler.sigma_max"),
}


def _bad_config(case: str) -> dict:
    config = _merged()
    for key, value in _settings(case).items():
        config = _with(config, key, value)
    return config


def _settings(case: str) -> dict:
    fields = CASES[case]
    return fields[1] if len(fields) == 3 else {fields[1]: fields[2]}


def _message(case: str) -> str:
    return CASES[case][-1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_setting_refused_at_start_naming_the_key(case):
    with pytest.raises(ConfigError, match=re.escape(_message(case))):
        check_settings(_bad_config(case))


def test_every_section_check_has_a_case():
    """Each section check refuses at least one case above that the schemas let through
    (and no other check refuses it)."""
    covered = set()
    for case, (check, *_rest) in CASES.items():
        if check is None:
            continue
        config = _bad_config(case)
        assert schema_problems(config) == [], case
        fill_defaults(config, schema_dir() / "config.schema.yaml")
        refused_by = set()
        for name, function in SECTION_CHECKS.items():
            try:
                function(config)
            except ConfigError:
                refused_by.add(name)
        assert refused_by == {check}, f"{case}: refused by {refused_by}"
        assert len(section_problems(config)) == 1
        covered.add(check)
    # Every rule of these two settings classes is also a bound in their schemas, so
    # no config reaches them with a value they refuse (test_schema_only_checks_run).
    assert covered | set(SCHEMA_ONLY) == set(SECTION_CHECKS)


#: Section checks whose settings class refuses only what the schema refuses first.
SCHEMA_ONLY = {"lotss.selection": ("lotss.selection.edge_fraction", 1.5),
               "lotss.preprocess": ("lotss.preprocess.context", "size")}


@pytest.mark.parametrize("check", sorted(SCHEMA_ONLY))
def test_schema_only_checks_run(check):
    """Called directly (the schemas would stop these values first), they refuse naming the key."""
    key, value = SCHEMA_ONLY[check]
    config = fill_defaults(_with(_merged(), key, value), schema_dir() / "config.schema.yaml")
    with pytest.raises(ConfigError, match=re.escape(key)):
        SECTION_CHECKS[check](config)


def test_all_problems_reported_at_once():
    config = _with(_with(_merged(), "skymap.peak_threshold_sigma", 2.0), "sample.sampler.S_churn", 0.5)
    with pytest.raises(ConfigError) as error:
        check_settings(config)
    assert "peak_threshold_sigma" in str(error.value) and "sample.sampler.S_churn" in str(error.value)


def test_label_map_to_a_non_class_leaves_files_out_with_skip_unlabelled():
    spec = {**MIRABEST, "label_pattern": "^(?P<label>[0-9])", "label_map": {"3": "Hybrid"}, "skip_unlabelled": True}
    check_settings(_with(_merged(), "imagesets", {"mb": spec}))


@pytest.mark.parametrize("overlays", [(), (PAPER,), (CI_SLURM,)], ids=["demo", "paper", "ci-slurm"])
def test_shipped_configs_pass(overlays):
    config = check_settings(_merged(*overlays))
    # defaults of every section filled in, as the workflow's rules read them
    assert config["skymap"]["match_radius_arcsec"] == 6.0
    assert config["train"]["first"]["resources"]["gpus"] == (1 if overlays == (PAPER,) else 0)
    assert cli_main(["config", "check", str(REPO / "config.yaml"), *map(str, overlays)]) == 0


def test_config_check_cli_refuses_naming_the_key(tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  norm_groups: 3\n")
    with caplog.at_level(logging.ERROR):
        assert cli_main(["config", "check", str(REPO / "config.yaml"), str(bad)]) == 1
    assert "model.norm_groups=3 does not divide" in caplog.text


@pytest.mark.parametrize("overlay, message", [
    ({"train": {"first": {"resources": {"gpus": 3}}}},
     "train.first.batch_size (16) must be divisible by train.first.resources.gpus (3)"),
    ({"skymap": {"peak_threshold_sigma": 2.0}}, "peak_threshold_sigma must be >= island_threshold_sigma"),
], ids=["batch vs gpus", "map thresholds"])
def test_snakemake_dry_run_refuses_before_any_job(tmp_path, overlay, message):
    """Through Snakemake itself: `snakemake -n` stops while reading the workflow, so a
    model trained earlier is untouched and no job is even planned."""
    results = tmp_path / "results"
    model = results / "models" / "first" / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"trained earlier")
    extra = tmp_path / "bad.yaml"
    extra.write_text(yaml.safe_dump({"results": str(results), **overlay}))
    run = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "--configfile", str(extra)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert message in output, output[-3000:]
    assert "Building DAG of jobs" not in output, output[-3000:]
    assert model.read_bytes() == b"trained earlier"
