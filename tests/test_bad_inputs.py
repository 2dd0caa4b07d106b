"""Bad inputs end in a clear error before work starts, and computed outputs survive.

One parametrised case per bad input (issue 10): each asserts a non-zero exit
(or the library's error), a message that names the file or the config key, and
that an output already on disk is left byte for byte as it was.  Inputs that
are accepted with a warning assert the warning.
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from astropy.io import fits

from radiogen.cli import main as cli_main
from radiogen.config import check_config, fill_defaults, read_config_file
from radiogen.errors import CatalogueError, ConfigError
from radiogen.model import build_network, save_model
from radiogen.sampler import generate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MOSAIC = "P205+55_400px.fits"
CATALOGUE = "LoTSS_DR1_srl_P205+55_P218+55.fits"
TINY = {"base_channels": 8, "channel_mults": [1, 2], "enc_blocks": 1, "dec_blocks": 2,
        "attention_levels": 1, "attention_heads": 1, "attention_head_channels": 8,
        "norm_groups": 4, "image_channels": 1, "image_size": [16, 16]}


@pytest.fixture(scope="module")
def default_config():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return fill_defaults(config, SCHEMA)


def _with(config: dict, dotted: str, value) -> dict:
    config = json.loads(json.dumps(config))  # deep copy (no NaN in the defaults)
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return config


class Sentinel:
    """An output already on disk; ``intact()`` says it was not touched."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"computed earlier, must survive")

    def intact(self) -> bool:
        return self.path.read_bytes() == b"computed earlier, must survive"


# --------------------------------------------------------------------------- config values

CONFIG_CASES = {
    "nan guidance value": ("sample.first.guidance_values", [0.0, float("nan")],
                           r"sample\.first\.guidance_values\[1\] must be a finite number, got nan"),
    "inf LoTSS guidance": ("sample.lotss.guidance", float("inf"),
                           r"sample\.lotss\.guidance must be a finite number, got inf"),
    "nan learning rate": ("train.lr", float("nan"), r"train\.lr must be a finite number"),
    "nan sampler rho": ("sample.sampler.rho", float("nan"), r"sample\.sampler\.rho must be a finite"),
    "sigma_min above sigma_max": ("sample.sampler.sigma_min", 100.0,
                                  r"sample\.sampler\.sigma_min \(100.0\) must be < sample\.sampler\.sigma_max"),
    "S_min above S_max": ("sample.sampler.S_min", 2e6, r"sample\.sampler\.S_min .* must be <= sample\.sampler\.S_max"),
    "flux range reversed": ("lotss.simulate.flux_min_mjy", 5000.0,
                            r"lotss\.simulate\.flux_min_mjy \(5000.0\) must be < lotss\.simulate\.flux_max_mjy"),
    "peak-flux range reversed": ("sample.lotss.peak_flux_range", [1.0, 0.01],
                                 r"sample\.lotss\.peak_flux_range must be \[low, high\]"),
    "mosaic ID with a slash": ("lotss.files.mosaics", {"P000/23": "/data/m.fits"},
                               r"lotss\.files\.mosaics: mosaic ID 'P000/23' may only contain"),
    "mosaic ID with a space": ("lotss.download.mosaics", ["P 124"],
                               r"lotss\.download\.mosaics: mosaic ID 'P 124'"),
    "mosaic ID with a quote": ("lotss.download.mosaics", ["P1'; rm -rf ~"],
                               r"lotss\.download\.mosaics: mosaic ID"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_value_rejected_naming_the_key(default_config, case):
    key, value, message = CONFIG_CASES[case]
    with pytest.raises(ConfigError, match=message):
        check_config(_with(default_config, key, value))


def _paper_over_demo() -> tuple[dict, dict, dict]:
    """(config.yaml, paper.yaml, paper.yaml merged over config.yaml key by key as
    Snakemake's --configfile merges it)."""
    from snakemake.utils import update_config

    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "workflow" / "config" / "paper.yaml").read_text())
    merged = copy.deepcopy(demo)
    update_config(merged, paper)
    return demo, paper, merged


def test_default_and_paper_configs_pass(default_config):
    check_config(default_config)
    check_config(fill_defaults(_paper_over_demo()[2], SCHEMA))


def test_paper_config_overrides_every_demo_setting():
    """Snakemake merges --configfile paper.yaml key by key over config.yaml, so a
    setting that only the demo sets would leak into the paper's run: after the
    merge every demo value is the schema default (the paper's) or one paper.yaml
    sets itself. The LoTSS data source is the user's choice, not a setting."""
    from radiogen.config import section_defaults

    def leaves(tree, path=()):
        for key, value in tree.items():
            if isinstance(value, dict):  # an empty block sets nothing
                yield from leaves(value, (*path, key))
            else:
                yield (*path, key)

    def lookup(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    demo, paper, merged = _paper_over_demo()
    defaults = section_defaults("")
    data_source = {"source", "simulate", "files", "download"}
    leaked = {}
    for path in leaves(demo):
        if path[0] == "lotss" and path[1] in data_source:
            continue
        try:
            lookup(paper, path)
            continue  # set by paper.yaml itself
        except (KeyError, TypeError):
            pass
        if lookup(merged, path) != lookup(defaults, path):
            leaked[".".join(path)] = lookup(merged, path)
    assert not leaked, f"paper.yaml leaves demo settings in place: {leaked}"


# Bounds of meaning in the schemas (Snakemake's validate, as the Snakefile runs it).
SCHEMA_CASES = {
    "negative S/N threshold": ("lotss.selection.snr_min", -5, "snr_min"),
    "negative tau": ("lotss.selection.tau_start", -100, "tau_start"),
    "P_mean out of range": ("train.p_mean", 50, "p_mean"),
    "negative main guidance": ("sample.first.guidance", -1.0, "guidance"),
    "negative guidance in sweep": ("sample.first.guidance_values", [0.0, -0.5], "guidance_values"),
    "unknown stale-checkpoint policy": ("train.stale_checkpoints", "keep", "stale_checkpoints"),
    "rotation fill outside image range": ("classifier.augment.fill", 3.0, "fill"),
    "failure fraction above one": ("evaluation.pybdsf.max_failed_fraction", 1.5, "max_failed_fraction"),
    "Box-Cox lambda absurd": ("lotss.preprocess.boxcox_lambda", 40.0, "boxcox_lambda"),
    "non-positive fallback beam": ("lotss.beam_arcsec", 0.0, "beam_arcsec"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_schema_bound_rejected_naming_the_key(case):
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    key, value, name = SCHEMA_CASES[case]
    config = _with(yaml.safe_load((REPO / "config.yaml").read_text()), key, value)
    with pytest.raises(WorkflowError, match=name):
        validate(config, str(SCHEMA))
        fill_defaults(config, SCHEMA)
        check_config(config)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("seed: 1\nsample:\n  first: {guidance: [0.1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml, line 4, column 1: YAML syntax error"):
        read_config_file(bad)
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("train:\n\tlr: 0.1\n")
    with pytest.raises(ConfigError, match=r"tabs\.yaml, line 2, column 1"):
        read_config_file(tabs)
    assert cli_main(["config", "check", str(bad)]) == 1


def test_config_that_is_not_a_mapping(tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- seed\n- 1\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: a config file must map keys to values"):
        read_config_file(listed)
    assert cli_main(["config", "check", str(tmp_path / "missing.yaml")]) == 1


def test_workflow_refuses_nan_before_any_job(tmp_path):
    """End to end through Snakemake: the Snakefile runs check_config at parse time."""
    results = tmp_path / "results"
    sentinel = Sentinel(results / "models" / "first" / "model.pt")
    extra = tmp_path / "nan.yaml"
    extra.write_text(f"results: {results}\nsample:\n  first:\n    guidance_values: [0.0, .nan]\n")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "--configfile", str(extra)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode != 0
    assert "sample.first.guidance_values[1] must be a finite number" in run.stdout + run.stderr
    assert sentinel.intact()


# --------------------------------------------------------------------------- sampling


def _model(path: Path, dataset: str) -> Path:
    config = {**TINY, "context_dim": 1 if dataset == "lotss" else 4}
    torch.manual_seed(0)
    extra = (
        {"normalisation": {"boxcox_lambda": -0.2, "boxcox_mean": 1.0, "boxcox_std": 1.0},
         "context_histogram": {"edges": np.linspace(-2, 2, 11), "counts": np.ones(10, int)}}
        if dataset == "lotss" else {"class_names": ["FRI", "FRII", "Compact", "Bent"]}
    )
    save_model(path, model_config=config, state_dict=build_network(config).state_dict(),
               dataset=dataset, train_config={}, step=0, **extra)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {name: _model(folder / f"{name}.pt", name) for name in ("lotss", "first")}


SHARD_CASES = {
    "NaN guidance": (["--guidance", "nan"], "argument --guidance: must be a finite number"),
    "infinite guidance": (["--guidance", "inf"], "argument --guidance: must be a finite number"),
    "negative guidance": (["--guidance", "-0.5"], "argument --guidance: must be >= 0"),
    "guidance not a number": (["--guidance", "strong"], "argument --guidance: expected a number"),
    "FIRST model for LoTSS": (["--model-of", "first", "--dataset", "lotss"],
                              "first.pt: this is a first model, but lotss images were asked for"),
    "LoTSS model for FIRST": (["--model-of", "lotss", "--dataset", "first"],
                              "lotss.pt: this is a lotss model, but first images were asked for"),
    "model of another image size": (["--image-size", "80"],
                                    "first.pt: model makes [16, 16] px images, expected 80x80"),
    "model file missing": (["--model-of", "missing"], "missing.pt: model file does not exist"),
    "settings not JSON": (["--settings", "{n_per_class: 2"], "--settings: not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(SHARD_CASES))
def test_sample_shard_refuses(models, tmp_path, caplog, capsys, case):
    args, message = SHARD_CASES[case]
    args = list(args)
    which = "first"
    if "--model-of" in args:
        at = args.index("--model-of")
        which = args[at + 1]
        del args[at:at + 2]
    model = models.get(which, models["first"].with_name(f"{which}.pt"))
    out = Sentinel(tmp_path / "shard.h5")
    defaults = {"--guidance": "0.5", "--settings": json.dumps({"dataset": {"n_per_class": 1},
                                                                "sampler": {"num_steps": 2}})}
    for option, value in defaults.items():
        if option not in args:
            args += [option, value]
    argv = ["sample", "shard", "--model", str(model), "--shard", "0", "--seed", "1",
            "--output", str(out.path), *args]
    try:
        rc = cli_main(argv)
    except SystemExit as exit_:  # argparse: exit 2 with the option named on stderr
        rc = exit_.code
    assert rc != 0
    assert message in caplog.text + capsys.readouterr().err
    assert out.intact()


def test_library_refuses_bad_guidance(models):
    net, meta = generate.load_sampling_model(models["first"])
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ConfigError, match="guidance w must be a finite number >= 0"):
            generate.generate_images(net, meta, [0], seed=1, guidance=bad, sampler={"num_steps": 2},
                                     settings={"n_per_class": 1})


def test_trajectory_refuses_nan_guidance_and_foreign_model(models, tmp_path, capsys, caplog):
    out = Sentinel(tmp_path / "trajectory.png")
    with pytest.raises(SystemExit):
        cli_main(["sample", "trajectory", "--model", str(models["first"]), "--seed", "1",
                  "--guidance", "nan", "--output", str(out.path)])
    assert "argument --guidance" in capsys.readouterr().err
    assert cli_main(["sample", "trajectory", "--model", str(models["lotss"]), "--seed", "1",
                     "--dataset", "first", "--output", str(out.path)]) == 1
    assert "lotss.pt: this is a lotss model" in caplog.text
    assert out.intact()


def test_fits_export_refuses_nan_position(tmp_path, capsys):
    out = Sentinel(tmp_path / "fits" / "sample_000000.fits")
    with pytest.raises(SystemExit):
        cli_main(["sample", "export-fits", "--samples", str(tmp_path / "s.h5"), "--output-dir",
                  str(out.path.parent), "--dec", "nan"])
    assert "argument --dec: must be a finite number" in capsys.readouterr().err
    assert out.intact()


# --------------------------------------------------------------------------- catalogues and mosaics


def _catalogue(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _row(name="S1", ra=205.0553, dec=54.8982, **extra):
    return {"Source_Name": name, "RA": ra, "DEC": dec, "Peak_flux": 1.0, "Total_flux": 2.0, **extra}


CATALOGUE_CASES = {
    "empty catalogue": ([], r"cat\.csv: the catalogue has no rows"),
    "DEC beyond the pole": ([_row(), _row("BAD", dec=95.0)],
                            r"cat\.csv: DEC outside \[-90, 90\] deg for 1 source\(s\) BAD"),
    "negative RA": ([_row("NEG", ra=-5.0)], r"cat\.csv: RA outside \[0, 360\] deg .* NEG"),
    "RA above 360": ([_row("BIG", ra=400.0)], r"cat\.csv: RA outside \[0, 360\] deg .* BIG"),
    "optical Dec beyond the pole": ([_row("OPT", optRA=205.05, optDec=-100.0)],
                                    r"cat\.csv: optDec outside \[-90, 90\] deg .* OPT"),
    "no source on any mosaic": ([_row("FAR", ra=20.0, dec=-30.0)],
                                r"cat\.csv: none of its 1 sources lies on any of the mosaics P205\+55"),
    "position not a number": ([_row("TXT", ra="12h30m")], r"cat\.csv: non-numeric RA for source\(s\) TXT"),
    "name missing": ([_row(name="")], r"cat\.csv: 1 row\(s\) without Source_Name"),
}


@pytest.mark.parametrize("case", sorted(CATALOGUE_CASES))
def test_catalogue_refused_before_cutouts(lotss_dr1_dir, tmp_path, caplog, case):
    rows, message = CATALOGUE_CASES[case]
    path = tmp_path / "cat.csv"
    if rows:
        _catalogue(path, rows)
    else:
        path.write_text("Source_Name,RA,DEC,Peak_flux,Total_flux\n")
    out = Sentinel(tmp_path / "sources.h5")
    rc = cli_main(["lotss", "assign", "--catalogue", str(path), "--mosaic", "P205+55",
                   str(lotss_dr1_dir / MOSAIC), "--out", str(out.path)])
    assert rc == 1
    assert out.intact()
    from radiogen.lotss.sources import assign_sources

    with pytest.raises(CatalogueError, match=message):
        assign_sources(path, {"P205+55": lotss_dr1_dir / MOSAIC}, tmp_path / "other.h5")


def test_ra_in_hours_is_accepted_with_a_warning(lotss_dr1_dir, tmp_path, caplog):
    from radiogen.lotss.catalogue import normalise_catalogue, read_catalogue

    rows = [_row(f"H{i}", ra=13.6 + 0.01 * i, dec=50.0 + i) for i in range(12)]
    path = _catalogue(tmp_path / "hours.csv", rows)
    with caplog.at_level(logging.WARNING):
        table = normalise_catalogue(read_catalogue(path), source=path)
    assert len(table) == 12
    assert "hours.csv: all 12 RA values lie in [13.6, 13.7]" in caplog.text
    assert "convert it to degrees (x 15)" in caplog.text


def _mosaic_variant(lotss_dr1_dir: Path, path: Path, **header) -> Path:
    with fits.open(lotss_dr1_dir / MOSAIC) as hdul:
        data, hdr = hdul[0].data, hdul[0].header.copy()
    for key, value in header.items():
        if value is None:
            hdr.remove(key, ignore_missing=True)
        else:
            hdr[key] = value
    fits.PrimaryHDU(data, header=hdr).writeto(path)
    return path


@pytest.fixture
def sources(lotss_dr1_dir, tmp_path):
    from radiogen.lotss.sources import assign_sources

    cat = _catalogue(tmp_path / "cat.csv", [_row()])
    assign_sources(cat, {"P205+55": lotss_dr1_dir / MOSAIC}, tmp_path / "sources.h5")
    return tmp_path / "sources.h5"


@pytest.mark.parametrize("bmaj, message", [
    (None, r"nobeam\.fits: header has no BMAJ \(restoring beam\).*Set lotss\.beam_arcsec"),
    (-0.001, r"nobeam\.fits: header BMAJ = -0\.001 deg is not a beam size"),
])
def test_mosaic_without_a_usable_beam_stops_the_cutout_job(lotss_dr1_dir, tmp_path, sources, caplog,
                                                           bmaj, message):
    import re

    mosaic = _mosaic_variant(lotss_dr1_dir, tmp_path / "nobeam.fits", BMAJ=bmaj, BMIN=None)
    out = Sentinel(tmp_path / "cutouts" / "P205+55.h5")
    rc = cli_main(["lotss", "cutouts", "--mosaic", str(mosaic), "--mosaic-id", "P205+55",
                   "--sources", str(sources), "--out", str(out.path)])
    assert rc == 1 and re.search(message, caplog.text)
    assert out.intact()


def test_missing_beam_taken_from_config_with_a_warning(lotss_dr1_dir, tmp_path, sources, caplog):
    import h5py

    mosaic = _mosaic_variant(lotss_dr1_dir, tmp_path / "nobeam.fits", BMAJ=None, BMIN=None)
    out = tmp_path / "P205+55.h5"
    with caplog.at_level(logging.WARNING):
        rc = cli_main(["lotss", "cutouts", "--mosaic", str(mosaic), "--mosaic-id", "P205+55",
                       "--sources", str(sources), "--out", str(out), "--beam-arcsec", "6.0"])
    assert rc == 0
    assert "header has no BMAJ; using lotss.beam_arcsec = 6 arcsec" in caplog.text
    with h5py.File(out) as h5:
        assert h5.attrs["beam_arcsec"] == 6.0 and h5.attrs["beam_source"] == "config"
    # the origin travels on with the cutouts (selection and preprocessing copy these attributes)
    from radiogen.lotss.cutouts import aggregate_shards

    aggregate_shards([out], tmp_path / "cutouts.h5")
    with h5py.File(tmp_path / "cutouts.h5") as h5:
        assert h5.attrs["beam_source"] == "config" and h5.attrs["frequency_source"] == "header"


def test_cutouts_refuse_nonpositive_fallback_beam(lotss_dr1_dir, tmp_path, sources, capsys):
    with pytest.raises(SystemExit):
        cli_main(["lotss", "cutouts", "--mosaic", str(lotss_dr1_dir / MOSAIC), "--mosaic-id", "P205+55",
                  "--sources", str(sources), "--out", str(tmp_path / "x.h5"), "--beam-arcsec", "-6"])
    assert "argument --beam-arcsec: must be > 0" in capsys.readouterr().err


# --------------------------------------------------------------------------- PyBDSF merge


def _pybdsf_shard(path: Path, statuses: list[str], start: int) -> str:
    from radiogen.evaluation.pybdsf import RESULT_COLUMNS

    rows = []
    for offset, status in enumerate(statuses):
        row = {c: 0.0 for c in RESULT_COLUMNS}
        row.update(index=start + offset, status=status,
                   error="ValueError: numpy 2.5 removed np.product" if status == "failed" else "")
        rows.append(row)
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(path, index=False)
    return str(path)


def test_pybdsf_set_with_most_images_failed_stops_at_merge(tmp_path, caplog):
    shards = [_pybdsf_shard(tmp_path / "0.csv", ["failed"] * 8 + ["ok"] * 2, 0),
              _pybdsf_shard(tmp_path / "1.csv", ["failed"] * 5 + ["ok"] * 5, 10)]
    out = Sentinel(tmp_path / "first_generated_guidance0.75.csv")
    assert cli_main(["pybdsf", "merge", "--shards", *shards, "--output", str(out.path)]) == 1
    assert ("first_generated_guidance0.75.csv: PyBDSF failed on 13 of 20 images (65.0%), more than "
            "evaluation.pybdsf.max_failed_fraction = 0.05") in caplog.text
    assert "most common reason (13 images): 'ValueError: numpy 2.5 removed np.product'" in caplog.text
    assert out.intact()
    # the shard tables are kept: raising the limit merges without refitting
    assert cli_main(["pybdsf", "merge", "--shards", *shards, "--max-failed-fraction", "0.7",
                     "--output", str(out.path)]) == 0


def test_pybdsf_merge_refuses_a_fraction_outside_0_1(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["pybdsf", "merge", "--shards", "x.csv", "--max-failed-fraction", "1.5",
                  "--output", str(tmp_path / "m.csv")])
    assert "argument --max-failed-fraction: must lie in [0, 1]" in capsys.readouterr().err


def test_pybdsf_shard_table_without_columns_is_named(tmp_path, caplog):
    bad = tmp_path / "0.csv"
    bad.write_text("index,status\n0,ok\n")
    out = Sentinel(tmp_path / "merged.csv")
    assert cli_main(["pybdsf", "merge", "--shards", str(bad), "--output", str(out.path)]) == 1
    assert "0.csv: shard table lacks columns error" in caplog.text
    assert out.intact()


# --------------------------------------------------------------------------- training and fetching


def test_train_refuses_unknown_setting_and_bad_policy(tmp_path, caplog):
    from radiogen.model.data import write_synthetic_training_set

    data = write_synthetic_training_set(tmp_path / "toy.h5", n=8, size=16, dataset="first")
    out = Sentinel(tmp_path / "model.pt")
    for settings, message in (({"lerning_rate": 1e-3}, "train: unknown setting(s) lerning_rate"),
                              ({"stale_checkpoints": "keep"}, "train.stale_checkpoints must be one of")):
        rc = cli_main(["train", "run", "--data", str(data), "--out", str(out.path), "--settings",
                       json.dumps(settings), "--device", "cpu"])
        assert rc == 1 and message in caplog.text
    assert out.intact()


def test_first_fetch_refuses_nonpositive_timeout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["first", "fetch", "--source", "x.zip", "--output", str(tmp_path / "z.zip"),
                  "--timeout", "0"])
    assert "argument --timeout: must be > 0" in capsys.readouterr().err



def _bounded_numbers(schema: dict, base: Path, path: tuple = ()):
    """(config path, bound keyword, bound) of every bounded number in the schemas."""
    from radiogen.config import load_schema

    ref = schema.get("$ref")
    if ref and not ref.startswith("#"):
        target = (base / ref).resolve()
        yield from _bounded_numbers({**load_schema(target), **{k: v for k, v in schema.items() if k != "$ref"}},
                                    target.parent, path)
        return
    if ref:
        return  # internal $defs references: their keys are covered where defined inline
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if {"number", "integer"} & set(types) and "default" in schema:
        for keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            if keyword in schema:
                yield path, keyword, schema[keyword], "integer" in types and "number" not in types
    for key, sub in schema.get("properties", {}).items():
        yield from _bounded_numbers(sub, base, (*path, key))


BOUNDED = sorted({(".".join(p), k, b, i) for p, k, b, i in _bounded_numbers(
    yaml.safe_load(SCHEMA.read_text()), SCHEMA.parent)})


def test_every_bounded_number_is_found():
    keys = {key for key, *_ in BOUNDED}
    assert len(keys) >= 60, len(keys)
    assert {"lotss.selection.snr_min", "train.p_mean", "sample.sampler.sigma_min"} <= keys


@pytest.mark.parametrize("key, keyword, bound, integer", BOUNDED, ids=[f"{k}-{w}" for k, w, *_ in BOUNDED])
def test_every_schema_bound_is_enforced(key, keyword, bound, integer):
    """A value just outside each documented bound is refused, naming the key."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    step = 1 if integer else max(abs(bound) * 1e-3, 1e-6)
    outside = {"minimum": bound - step, "exclusiveMinimum": bound, "maximum": bound + step,
               "exclusiveMaximum": bound}[keyword]
    if integer:
        outside = int(outside)
    config = _with(yaml.safe_load((REPO / "config.yaml").read_text()), key, outside)
    with pytest.raises(WorkflowError, match=key.split(".")[-1]):
        validate(config, str(SCHEMA))


def test_mosaic_without_frequency_stops_or_takes_the_config_value(lotss_dr1_dir, tmp_path, sources, caplog):
    import h5py

    with fits.open(lotss_dr1_dir / MOSAIC) as hdul:
        header = hdul[0].header
        frequency_keys = [k for k in ("RESTFRQ", "RESTFREQ", "FREQ") if k in header]
        frequency_keys += [f"CTYPE{i}" for i in range(3, header["NAXIS"] + 1)
                           if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ")]
    mosaic = _mosaic_variant(lotss_dr1_dir, tmp_path / "nofreq.fits", **{k: None for k in frequency_keys})
    out = Sentinel(tmp_path / "cutouts" / "P205+55.h5")
    args = ["lotss", "cutouts", "--mosaic", str(mosaic), "--mosaic-id", "P205+55", "--sources", str(sources),
            "--out", str(out.path)]
    assert cli_main(args) == 1
    assert "nofreq.fits: header gives no frequency (RESTFRQ, FREQ or a FREQ axis)" in caplog.text
    assert out.intact()
    with caplog.at_level(logging.WARNING):
        assert cli_main(args + ["--frequency-hz", "1.44e8"]) == 0
    assert "using lotss.frequency_hz = 1.44e+08 Hz" in caplog.text
    with h5py.File(out.path) as h5:
        assert h5.attrs["frequency_hz"] == 1.44e8 and h5.attrs["frequency_source"] == "config"
        assert h5.attrs["beam_source"] == "header"
