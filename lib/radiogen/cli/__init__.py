"""The ``radiogen`` command line: one subcommand per workflow step.

Each topic module in this package defines ``register(subparsers)``, which adds
its subcommands; every subcommand sets ``func`` to a callable taking the parsed
arguments.  Rules in ``workflow/rules`` call these subcommands and nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from radiogen import __version__
from radiogen.errors import RadiogenError

#: Topic modules of :mod:`radiogen.cli`, each contributing subcommands.
COMMAND_MODULES = (
    "config",
    "simulate",
    "lotss",
    "selection",
    "first",
    "imageset",
    "classifier",
    "train",
    "sample",
    "pybdsf",
    "evaluate",
    "skymap",
    "profile",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiogen",
        description="Radio galaxy diffusion models: data, training, sampling, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"radiogen {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"radiogen.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"radiogen.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except RadiogenError as err:
        logging.getLogger("radiogen").error("%s", err)
        return 1
    return int(result or 0)

