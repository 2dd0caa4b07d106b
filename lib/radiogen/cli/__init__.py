"""The ``radiogen`` command line: ``radiogen <topic> <verb>``, one verb per workflow step.

Commands for people rather than rules stand alone (:data:`COMMANDS`):
``radiogen generate`` turns a model file into images.

Each module in this package defines ``register(topics)``, which adds its verbs
to one or more topics (:class:`Topics`); every verb sets ``func`` to a callable
taking the parsed arguments.  Rules in ``workflow/rules`` call these commands
and nothing else.
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
    "model",
    "sample",
    "pybdsf",
    "evaluate",
    "skymap",
    "interferometer",
    "profile",
    "generate",
)


#: The topics of ``radiogen <topic> <verb>`` in help order, with their help lines.
TOPICS = {
    "config": "check config files before a run",
    "lotss": "LoTSS data: simulated survey, cutouts, selection (Table 1), preprocessing",
    "first": "labelled FIRST dataset (Griese et al. 2023)",
    "imageset": "image sets from other sources (folders of FITS cutouts)",
    "classifier": "ResNet-18 morphology classifier (FIRST)",
    "train": "EDM diffusion-model training and its loss curves",
    "model": "model files: import the seed paper's published networks",
    "sample": "generated image sets: shards, merge, FITS export, figures",
    "pybdsf": "PyBDSF source models of image sets",
    "stats": "image statistics: per-image mean/std and pixel histograms",
    "evaluate": "class conditioning, similarity, distances, summary tables, overview",
    "skymap": "simulated survey map from the LoTSS model",
    "interferometer": "the map's sky observed by LOFAR HBA (python-casacore) and imaged by WSClean",
    "profile": "install a Snakemake profile (e.g. for SLURM) as a named user profile",
}

#: Stand-alone commands (no verb), after the topics in help, with their help lines.
COMMANDS = {
    "generate": "images from a trained model: FITS, HDF5 or a folder of FITS files",
}


class Topics:
    """The two-level command tree: :meth:`topic` makes a topic's verb parsers on first use."""

    def __init__(self, subparsers: argparse._SubParsersAction):
        self._subparsers = subparsers
        self._verbs: dict[str, argparse._SubParsersAction] = {}

    def topic(self, name: str) -> argparse._SubParsersAction:
        """The verb subparsers of topic ``name`` (one of :data:`TOPICS`)."""
        if name not in self._verbs:
            parser = self._subparsers.add_parser(name, help=TOPICS[name], description=TOPICS[name])
            self._verbs[name] = parser.add_subparsers(dest=f"{name}_command", metavar="VERB", required=True)
        return self._verbs[name]

    def add_parser(self, topic: str, verb: str, **kwargs) -> argparse.ArgumentParser:
        """The parser of ``radiogen <topic> <verb>``."""
        return self.topic(topic).add_parser(verb, **kwargs)

    def command(self, name: str, **kwargs) -> argparse.ArgumentParser:
        """The parser of the stand-alone command ``radiogen <name>`` (one of :data:`COMMANDS`)."""
        return self._subparsers.add_parser(name, help=COMMANDS[name], description=COMMANDS[name], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiogen",
        description="Radio galaxy diffusion models: data, training, sampling, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"radiogen {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="TOPIC")
    topics = Topics(subparsers)
    for name in TOPICS:  # topics appear in help in this order, whichever module adds them first
        topics.topic(name)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"radiogen.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"radiogen.cli.{name}":
                continue
            raise
        module.register(topics)
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

