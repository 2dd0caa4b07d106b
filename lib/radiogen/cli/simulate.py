"""``radiogen lotss simulate``: the classical simulated LoTSS-like survey."""

from __future__ import annotations

import argparse

from radiogen.cli.options import json_object


def register(topics) -> None:
    p = topics.add_parser(
        "lotss", "simulate",
        help="write simulated LoTSS-DR2-like mosaics and a catalogue CSV",
        description="Simulate mosaics (OUT_DIR/mosaics/SIMnnn.fits, like DR2 mosaic-blanked.fits) "
        "and OUT_DIR/catalogue.csv with classical component models (see radiogen.simulate).",
    )
    p.add_argument("--out-dir", required=True, help="output directory (e.g. results/lotss/main/raw)")
    p.add_argument("--seed", type=int, required=True, help="global seed (config seed)")
    p.add_argument("--survey", choices=("main", "classical"), default="main",
                   help="which survey: each has its own random stream (default: main)")
    p.add_argument("--settings", default="{}",
                   help="JSON object of lotss.simulate settings (n_mosaics, mosaic_size, ...)")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from radiogen.simulate import SurveySettings, simulate_survey

    mapping = json_object(args.settings)
    simulate_survey(args.out_dir, settings=SurveySettings.from_mapping(mapping), seed=args.seed,
                    survey=args.survey)
    return 0
