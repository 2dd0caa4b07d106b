# Validates the configuration and defines input functions; no rules here.
import json
import os
import shlex
import sys

from snakemake.utils import min_version, validate

# The workflow reads its own library from the checkout (radiogen.config and the
# settings classes its start-up check builds, which need numpy, astropy and torch:
# Snakemake runs from the environment of scripts/setup).
sys.path.insert(0, os.path.join(workflow.basedir, "lib"))
from radiogen.config import check_settings, read_config_file

min_version("9.0")

# Snakemake reports a YAML syntax error without file or line; read the file first
# so that the message names both (`radiogen config check FILE` does the same for
# files given with --configfile, which Snakemake reads before this line).
if os.path.exists("config.yaml"):
    read_config_file("config.yaml")


configfile: "config.yaml"


validate(config, schema="../schemas/config.schema.yaml")
# The start-up check, before any job: fills the defaults of the $ref'd section
# schemas (validate sets top-level ones only), then refuses NaN, ranges the wrong
# way round, unsafe mosaic IDs and every setting that a section's own settings
# object refuses or that contradicts another (radiogen.config.check_settings;
# `radiogen config check` runs the same). The Snakemake processes that run one job
# each on a cluster node skip the settings objects (torch's import): the main
# process has checked the same config.
check_settings(config, sections=workflow.is_main_process)


# The interferometer's tools (WSClean, python-casacore, casacore's measures data) are
# checked when a run starts, not when its first interferometer job does (after training).
onstart:
    if (
        config["skymap"]["enabled"]
        and config["skymap"]["interferometer"]["enabled"]
    ):
        from snakemake.settings.types import DeploymentMethod
        from radiogen.interferometer.preflight import check_tools

        # With conda, python-casacore is in the jobs' env, not necessarily in this one.
        check_tools(
            python_packages=DeploymentMethod.CONDA
            not in workflow.deployment_settings.deployment_method
        )


RESULTS = config["results"]

# Targets of the default `all` rule; each rule file appends its final outputs.
ALL_TARGETS = []


def results(*parts):
    """Path under the configured results directory."""
    return os.path.join(RESULTS, *parts)


def named_option(option, name, value):
    """Shell words `option name=value`, quoted so that no path can split them."""
    return f"{option} {shlex.quote(f'{name}={value}')}"


# Image sets compared in evaluation: name -> HDF5 file with /images in [0, 1]
# (training sets and generated sets share that layout; see README).
def image_set_file(name):
    if name == "lotss_real":
        return results("lotss", "main", "training_set.h5")
    if name == "lotss_classical":
        return results("lotss", "classical", "training_set.h5")
    if name == "lotss_generated":
        return results("samples", "lotss", "samples.h5")
    if name == "first_real":
        return results("first", "training_set.h5")
    if name.startswith("fits_"):
        return results("imagesets", f"{name.removeprefix('fits_')}.h5")
    if name.startswith("first_generated_guidance"):
        guidance = name.removeprefix("first_generated_guidance")
        return results("samples", "first", f"guidance{guidance}", "samples.h5")
    raise ValueError(f"unknown image set {name!r}")


# FIRST guidance: one key, sample.first.guidance, names the set that every
# evaluation compares with the real one; sample.first.guidance_values adds the
# sweep of the class-accuracy table. Paths carry the value as float text
# (guidance0.75), as radiogen.sampler.workflow.guidance_tag writes it.
FIRST_MAIN_GUIDANCE = float(config["sample"]["first"]["guidance"])
FIRST_GUIDANCE = sorted(
    {float(w) for w in config["sample"]["first"]["guidance_values"]}
    | {FIRST_MAIN_GUIDANCE}
)


# FITS image sets (imagesets.smk): name -> settings, schema defaults filled.
IMAGESETS = config["imagesets"]


def imageset_options(name):
    """CLI options of one configured set (defaults filled from its schema)."""
    spec = IMAGESETS[name]
    words = ["--dataset", spec["dataset"], "--size", str(spec["size"])]
    for key, option in (
        ("pixel_scale_arcsec", "--pixel-scale"),
        ("beam_arcsec", "--beam-arcsec"),
        ("target_beam_arcsec", "--target-beam-arcsec"),
        ("unit", "--unit"),
        ("frequency_hz", "--frequency-hz"),
        ("label_pattern", "--label-pattern"),
    ):
        if spec.get(key) is not None:
            words += [option, str(spec[key])]
    if spec.get("label_map"):
        words += ["--label-map", *(f"{k}={v}" for k, v in spec["label_map"].items())]
    words += ["--class-names", *spec["class_names"]]
    if spec["skip_unlabelled"]:
        words.append("--skip-unlabelled")
    words += ["--on-blank", spec["on_blank"]]
    return " ".join(shlex.quote(w) for w in words)


def overview_extra_inputs():
    """Optional inputs of the overview: option -> file (size conditioning, simulated map)."""
    extra = {}
    if "size" in config["lotss"]["preprocess"]["context"]:
        extra["--size-json"] = results("evaluation", "size_conditioning.json")
    if config["skymap"]["enabled"]:
        extra["--skymap"] = results("skymap", "validation.tsv")
    return extra


# Training inputs per model (the LoTSS model trains on the main survey's set).
TRAINING_SET = {
    "lotss": results("lotss", "main", "training_set.h5"),
    "first": results("first", "training_set.h5"),
}


def train_settings(dataset):
    """JSON of the train section for one model: shared keys + that model's block.

    `resources` is the job's, not the training's, and stays out, so that a
    change of wall time or memory does not rerun the training.
    """
    section = config["train"]
    shared = {k: v for k, v in section.items() if k not in TRAINING_SET}
    own = {k: v for k, v in section[dataset].items() if k != "resources"}
    return json.dumps({**shared, dataset: own}, sort_keys=True)


def snapshot_files(dataset):
    """The EMA snapshots a training run keeps (train.{dataset}.snapshot_steps)."""
    from radiogen.sampler.workflow import snapshot_path

    steps = config["train"][dataset].get("snapshot_steps", [])
    model = results("models", dataset, "model.pt")
    return [str(snapshot_path(model, step)) for step in steps]


def init_from_input(dataset):
    """The model a training run fine-tunes (train.{dataset}.init_from) as a named input, or none."""
    path = config["train"][dataset].get("init_from")
    return {"init_from": path} if path else {}


def guide_input(dataset):
    """The guide model of sample.{dataset}.guide as a named input (none: classifier-free)."""
    from radiogen.sampler.workflow import parse_guide, snapshot_path

    kind, value = parse_guide(
        config["sample"][dataset]["guide"],
        dataset=dataset,
        snapshot_steps=config["train"][dataset].get("snapshot_steps", []),
    )
    if kind == "checkpoint":
        return {
            "guide": str(snapshot_path(results("models", dataset, "model.pt"), value))
        }
    if kind == "model":
        return {"guide": value}
    return {}


def guide_option(dataset):
    """`--guide PATH` for `radiogen sample shard`, or nothing (classifier-free guidance)."""
    guide = guide_input(dataset).get("guide")
    return f"--guide {shlex.quote(guide)}" if guide else ""


def interferometer_resources(step):
    """mem_mb and runtime (minutes) of one interferometer job (rule skymap_interferometer_<step>).

    Estimated from the observation's size (visibilities per channel block, map
    pixels) with the measured per-unit costs (radiogen.interferometer.costs);
    skymap.interferometer.mem_mb and runtime_min are floors.
    """
    from radiogen.interferometer.costs import job_resources
    from radiogen.interferometer.settings import InterferometerSettings
    from radiogen.skymap.geometry import map_size_px

    block = config["skymap"]["interferometer"]
    return job_resources(
        step,
        InterferometerSettings.from_mapping(block),
        size_px=map_size_px(config["skymap"]["size_deg"]),
        floor_mem_mb=block["mem_mb"],
        floor_runtime_min=block["runtime_min"],
    )


def interferometer_block_sets(kind):
    """Every channel block's measurement set of one kind (predicted or observed)."""
    blocks = range(config["skymap"]["interferometer"]["channel_blocks"])
    return [
        results("skymap", "interferometer", "blocks", str(block), f"{kind}.ms")
        for block in blocks
    ]
