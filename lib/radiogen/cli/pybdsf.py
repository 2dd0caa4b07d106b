"""Subcommands: PyBDSF shards and merge, image statistics, flux conditioning, PyBDSF plots."""

from __future__ import annotations

import argparse
import logging

from radiogen.cli.options import fraction, json_object
from radiogen.config import section_defaults
from radiogen.errors import ConfigError
from radiogen.seeds import integer as seed_stream

log = logging.getLogger("radiogen.pybdsf")




def _labelled(pairs: list[str], *, what: str, parts: int = 2) -> dict[str, list[str]]:
    result = {}
    for item in pairs:
        fields = item.split("=", 1)
        if len(fields) != 2 or not fields[0]:
            raise ConfigError(f"{what} {item!r}: expected LABEL=PATH[,PATH...]")
        paths = fields[1].split(",")
        if parts and len(paths) != parts:
            raise ConfigError(f"{what} {item!r}: expected {parts} comma-separated paths")
        result[fields[0]] = paths
    return result


def _shard(args: argparse.Namespace) -> int:
    from radiogen.evaluation.pybdsf import DEFAULT_SETTINGS
    from radiogen.evaluation.pybdsf_shards import run_shard

    # The config section also holds workflow keys (shards, resources); keep PyBDSF's.
    section = json_object(args.settings)
    settings = {key: section.get(key, default) for key, default in DEFAULT_SETTINGS.items()}
    beam = section.get("beam_arcsec")
    run_shard(args.image_set, shard=args.shard, n_shards=args.n_shards,
              output_csv=args.output, output_models=args.models, settings=settings,
              seed=seed_stream(args.seed, "evaluation.pybdsf"), beam_arcsec=beam,
              freeze_gc=not args.no_gc_freeze)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from radiogen.evaluation.imagesets import open_image_set
    from radiogen.evaluation.pybdsf_shards import merge_shards

    n_images = None
    if args.image_set:
        with open_image_set(args.image_set) as image_set:
            n_images = image_set.n_images
    table = merge_shards(args.shards, args.output, n_images=n_images,
                         max_failed_fraction=args.max_failed_fraction)
    log.info("%s: %d images, %s", args.output, len(table),
             table["status"].value_counts().to_dict())
    return 0


def _set_stats(args: argparse.Namespace) -> int:
    from radiogen.evaluation.stats import compute_set_statistics

    compute_set_statistics(args.image_set, output_csv=args.output, output_pixels=args.pixels)
    return 0


def _stats_figure(args: argparse.Namespace) -> int:
    from radiogen.evaluation.stats import image_statistics_figure
    from radiogen.io import write_json_atomic

    settings = {**section_defaults("evaluation.stats"), **json_object(args.settings)}
    sets = {k: tuple(v) for k, v in _labelled(args.set, what="--set").items()}
    result = image_statistics_figure(sets, args.output, bins=int(settings["bins"]),
                                     pixel_bins=int(settings["pixel_bins"]),
                                     title=args.title or "")
    if args.json:
        write_json_atomic({"settings": settings, "histograms": result}, args.json)
    return 0


def _flux(args: argparse.Namespace) -> int:
    from radiogen.evaluation.flux import flux_conditioning, scatter_figure

    settings = {**section_defaults("evaluation.flux"), **json_object(args.settings)}
    tables = {k: v[0] for k, v in _labelled(args.set, what="--set", parts=1).items()}
    seed = seed_stream(args.seed, "evaluation.pybdsf")
    summary = flux_conditioning(tables, reference=args.reference, output_json=args.output,
                                seed=seed, max_points=int(settings["max_points"]),
                                floor_repeats=int(settings["floor_repeats"]))
    scatter_figure(tables, args.figure, summary=summary, max_points=int(settings["scatter_points"]), seed=seed)
    return 0


def _plots(args: argparse.Namespace) -> int:
    from radiogen.evaluation.plots_pybdsf import distribution_figure, example_figure

    settings = {**section_defaults("evaluation.pybdsf"), **json_object(args.settings)}
    sets = {}
    for item in args.set:
        label, _, rest = item.partition("=")
        fields = rest.split(",")
        if not label or len(fields) < 3:
            raise ConfigError(f"--set {item!r}: expected LABEL=IMAGES,TABLE,MODELS[,MODELS...]")
        sets[label] = {"images": fields[0], "table": fields[1], "models": fields[2:]}
    example_figure(sets, args.examples, n=int(settings["n_examples"]))
    distribution_figure({k: v["table"] for k, v in sets.items()}, args.distributions,
                        output_json=args.json, bins=int(settings["bins"]))
    return 0


def register(topics) -> None:
    p = topics.add_parser(
        "pybdsf", "shard", help="fit PyBDSF to one shard of an image set (resumable)")
    p.add_argument("--image-set", required=True, help="training or sample set HDF5")
    p.add_argument("--shard", type=int, required=True, help="shard number, 0-based")
    p.add_argument("--n-shards", type=int, required=True, help="number of shards of the set")
    p.add_argument("--output", required=True, help="per-image result CSV")
    p.add_argument("--models", required=True, help="HDF5 of the Gaussian model images")
    p.add_argument("--seed", type=int, required=True,
                   help="global seed (config seed); the stabilising noise uses its evaluation.pybdsf stream")
    p.add_argument("--settings", help="JSON of the evaluation.pybdsf config section")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="do not gc.freeze() before the loop (slow; for benchmarks)")
    p.set_defaults(func=_shard)

    p = topics.add_parser("pybdsf", "merge", help="merge PyBDSF shard tables of one image set")
    p.add_argument("--shards", nargs="+", required=True, help="shard CSVs")
    p.add_argument("--image-set", help="image set HDF5; checks that every image is covered")
    p.add_argument("--output", required=True, help="merged CSV")
    p.add_argument("--max-failed-fraction", type=fraction, default=0.05,
                   help="stop with an error when more images than this fraction failed")
    p.set_defaults(func=_merge)

    p = topics.add_parser("stats", "set",
                              help="per-image mean/std and pixel histogram of one image set")
    p.add_argument("--image-set", required=True)
    p.add_argument("--output", required=True, help="per-image statistics CSV")
    p.add_argument("--pixels", required=True, help="pixel histogram JSON (1000 bins on [0,1])")
    p.set_defaults(func=_set_stats)

    p = topics.add_parser("stats", "figure",
                              help="pixel/mean/std histograms of several sets (one figure)")
    p.add_argument("--set", action="append", required=True,
                   help="LABEL=STATS_CSV,PIXELS_JSON; the first is the real set")
    p.add_argument("--output", required=True, help="figure file")
    p.add_argument("--json", help="histograms with Poisson bounds as JSON")
    p.add_argument("--title")
    p.add_argument("--settings", help="JSON of the evaluation.stats config section")
    p.set_defaults(func=_stats_figure)

    p = topics.add_parser("evaluate", "flux-conditioning",
                              help="Delta+ vs peak flux: Spearman, 2-D distance, scatter")
    p.add_argument("--set", action="append", required=True, help="LABEL=MERGED_PYBDSF_CSV")
    p.add_argument("--reference", required=True, help="label of the real set")
    p.add_argument("--output", required=True, help="result JSON")
    p.add_argument("--figure", required=True, help="scatter figure")
    p.add_argument("--seed", type=int, required=True, help="global seed (config seed)")
    p.add_argument("--settings", help="JSON of the evaluation.flux config section")
    p.set_defaults(func=_flux)

    p = topics.add_parser("pybdsf", "plots",
                              help="PyBDSF example figure and model flux / A50 distributions")
    p.add_argument("--set", action="append", required=True,
                   help="LABEL=IMAGES_H5,MERGED_CSV,MODELS_H5[,MODELS_H5...]")
    p.add_argument("--examples", required=True, help="example figure file")
    p.add_argument("--distributions", required=True, help="distribution figure file")
    p.add_argument("--json", help="histograms and status counts as JSON")
    p.add_argument("--settings", help="JSON of the evaluation.pybdsf config section")
    p.set_defaults(func=_plots)
