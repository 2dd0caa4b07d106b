"""Subcommands: ``lotss select`` (paper's selection cuts) and ``lotss preprocess`` (training set)."""

from __future__ import annotations

import argparse

from radiogen.cli.options import json_object


def _select(args: argparse.Namespace) -> int:
    from radiogen.lotss.selection import SelectionSettings, run_selection

    settings = SelectionSettings.from_mapping(json_object(args.settings), source="lotss.selection")
    run_selection(
        args.cutouts,
        table_path=args.table,
        per_image_path=args.per_image,
        selected_path=args.selected,
        figure_path=args.figure,
        examples_path=args.examples,
        settings=settings,
        threads=args.threads,
        seed=args.seed,
    )
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from radiogen.lotss.preprocess import PreprocessSettings, run_preprocess

    settings = PreprocessSettings.from_mapping(json_object(args.settings), source="lotss.preprocess")
    run_preprocess(
        args.selected, args.output, settings=settings, seed=args.seed, figure_path=args.figure
    )
    return 0


def register(topics) -> None:
    """Add the ``lotss select`` and ``lotss preprocess`` subcommands."""
    p = topics.add_parser(
        "lotss", "select",
        help="apply the paper's selection cuts (broken, S/N_sigma, edge, coverage) to cutouts.h5",
    )
    p.add_argument("--cutouts", required=True, help="aggregate cutouts.h5")
    p.add_argument("--table", required=True, help="output CSV: step, removed, remaining")
    p.add_argument("--per-image", required=True, help="output CSV: statistics and removal step per cutout")
    p.add_argument("--selected", required=True, help="output HDF5 with the kept raw cutouts")
    p.add_argument("--figure", help="output PNG: S/N_sigma histogram with examples (paper Fig. 1)")
    p.add_argument("--examples", help="output PNG: examples removed at each step")
    p.add_argument("--settings", help="JSON of the lotss.selection config section")
    p.add_argument("--threads", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for the example cutouts in figures")
    p.set_defaults(func=_select)

    p = topics.add_parser(
        "lotss", "preprocess",
        help="negatives to 0, min-max scaling, Box-Cox peak-flux context, train/validation split",
    )
    p.add_argument("--selected", required=True, help="selected.h5 from lotss-select")
    p.add_argument("--output", required=True, help="output training_set.h5")
    p.add_argument("--figure", help="output PNG: peak flux before/after Box-Cox (paper Fig. 4)")
    p.add_argument("--settings", help="JSON of the lotss.preprocess config section")
    p.add_argument("--seed", type=int, required=True, help="global seed (config seed)")
    p.set_defaults(func=_preprocess)
