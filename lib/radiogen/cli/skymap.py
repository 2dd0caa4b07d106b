"""``radiogen skymap STEP``: a simulated survey map from the trained LoTSS model.

Steps as the workflow runs them (``workflow/rules/skymap.smk``): ``sources``
(grid and input catalogue), ``tile`` (one job per tile), ``assemble`` (sky
model, map, truth catalogue), ``find`` (PyBDSF on the map), ``validate``
(truth vs recovered), ``compare`` (validation tables of two maps of one
sky side by side: the image-plane and the interferometric map).  ``--settings`` is the config's ``skymap`` block as
JSON with every key (the workflow fills the schema's defaults).
"""

from __future__ import annotations

import argparse

from radiogen.cli.options import config_default, json_object, nonnegative_float
from radiogen.errors import ConfigError


def _settings(args: argparse.Namespace):
    from radiogen.skymap.settings import MapSettings

    return MapSettings.from_mapping(json_object(args.settings), name="skymap")


def cmd_sources(args: argparse.Namespace) -> int:
    from radiogen.skymap.catalogue import write_map_sources

    write_map_sources(args.model, _settings(args), seed=args.seed, name=args.name,
                      sources_csv=args.output, header_path=args.header)
    return 0


def cmd_tile(args: argparse.Namespace) -> int:
    from radiogen.skymap.stamps import generate_tile

    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    sampling = json_object(args.sampling, option="--sampling")
    generate_tile(args.model, args.sources, args.output, tile=args.tile, seed=args.seed,
                  guidance=args.guidance, settings=_settings(args), sampler=sampling.get("sampler"),
                  batch_size=int(sampling.get("batch_size", 32)),
                  cuda_batch_size=sampling.get("cuda_batch_size", config_default("sample.cuda_batch_size")),
                  device=sampling.get("device", "auto"),
                  precision=sampling.get("precision", "auto"), expect_context=args.context)
    return 0


def cmd_assemble(args: argparse.Namespace) -> int:
    from radiogen.skymap.assemble import assemble_map

    assemble_map(args.sources, args.header, args.tiles, settings=_settings(args), seed=args.seed,
                 name=args.name, map_path=args.map, sky_model_path=args.sky_model, truth_path=args.truth,
                 intrinsic_sky_path=args.intrinsic_sky)
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    from radiogen.skymap.validate import find_sources

    settings = _settings(args)
    find_sources(args.map, args.output, thresh_isl=settings.pybdsf_thresh_isl,
                 thresh_pix=settings.pybdsf_thresh_pix)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from radiogen.skymap.validate import validate_map

    validate_map(args.map, args.truth, args.recovered, args.sources, settings=_settings(args),
                 sky_model_path=args.sky_model, table_path=args.table, figure_path=args.figure, map_figure_path=args.map_figure,
                 name=args.name)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from radiogen.skymap.validate import compare_summaries

    tables = {}
    for item in args.validation:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise ConfigError(f"--validation {item!r}: expected LABEL=PATH")
        if label in tables:
            raise ConfigError(f"--validation: label {label!r} given twice")
        tables[label] = path
    compare_summaries(tables, table_path=args.table, figure_path=args.figure)
    return 0


def register(topics) -> None:
    sub = topics.topic("skymap")
    settings_help = "JSON: the config's skymap block, every key"

    p = sub.add_parser("sources", help="map grid (header text) and input catalogue (CSV)")
    p.add_argument("--model", required=True, help="trained LoTSS model.pt")
    p.add_argument("--settings", required=True, help=settings_help)
    p.add_argument("--seed", required=True, type=int, help="global seed (config seed)")
    p.add_argument("--name", required=True, help="map name (OBJECT, Mosaic_ID)")
    p.add_argument("--header", required=True, help="map header to write (FITS header as text)")
    p.add_argument("--output", required=True, help="source catalogue CSV to write")
    p.set_defaults(func=cmd_sources)

    p = sub.add_parser("tile", help="generate the sources of one tile (HDF5 stamps, Jy/beam)")
    p.add_argument("--model", required=True)
    p.add_argument("--sources", required=True, help="catalogue CSV from the sources step")
    p.add_argument("--tile", required=True, type=int, help="tile number (0-based, row-major)")
    p.add_argument("--settings", required=True, help=settings_help)
    p.add_argument("--sampling", default="{}",
                   help='JSON: {"sampler": {...}, "batch_size", "cuda_batch_size", "device", "precision"} '
                        '(config sample)')
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--guidance", required=True, type=nonnegative_float, help="classifier-free guidance w")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--context", choices=("peak_flux", "peak_flux+size"), default=None,
                   help="refuse a model conditioned on anything else (lotss.preprocess.context)")
    p.add_argument("--output", required=True, help="tile HDF5 to write")
    p.set_defaults(func=cmd_tile)

    p = sub.add_parser("assemble", help="place all tiles: sky model, observed map, truth catalogue")
    p.add_argument("--sources", required=True)
    p.add_argument("--header", required=True)
    p.add_argument("--settings", required=True, help=settings_help)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--name", required=True)
    p.add_argument("--map", required=True, help="observed map FITS to write")
    p.add_argument("--sky-model", required=True, help="noise-free sky model FITS to write (Jy/beam)")
    p.add_argument("--intrinsic-sky", default=None,
                   help="intrinsic sky FITS to write (Jy/pixel, before the beam; the interferometer's input)")
    p.add_argument("--truth", required=True, help="truth catalogue CSV to write")
    p.add_argument("tiles", nargs="+", help="every tile HDF5 of the map")
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("find", help="PyBDSF on the whole map -> source list CSV")
    p.add_argument("--map", required=True)
    p.add_argument("--settings", required=True, help=settings_help)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_find)

    p = sub.add_parser("validate", help="truth vs recovered: table and figures")
    for option in ("--map", "--sky-model", "--truth", "--recovered", "--sources", "--settings", "--name",
                   "--table",
                   "--figure", "--map-figure"):
        p.add_argument(option, required=True)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("compare", help="validation tables of maps of one sky side by side: table and figure")
    p.add_argument("--validation", action="append", required=True, metavar="LABEL=PATH",
                   help="a map's validation.tsv under a label (at least two)")
    p.add_argument("--table", required=True, help="comparison TSV to write")
    p.add_argument("--figure", required=True, help="comparison figure to write")
    p.set_defaults(func=cmd_compare)
