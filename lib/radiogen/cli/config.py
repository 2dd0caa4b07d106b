"""``radiogen config check``: read config files as the workflow would and report problems."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("radiogen.config")


def _merge(base: dict, update: dict) -> dict:
    """Nested update, as Snakemake merges --configfile files into the config."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _check(args: argparse.Namespace) -> int:
    from radiogen.config import check_settings, read_config_file

    merged: dict = {}
    for path in args.files:
        _merge(merged, read_config_file(path))
    check_settings(merged)
    log.info("%s: no problems found", ", ".join(args.files))
    return 0


def register(topics) -> None:
    p = topics.add_parser(
        "config", "check",
        help=("check config files as the workflow's start-up check does: YAML syntax (file and line), "
              "schemas, NaN, ranges and every section's settings against each other"),
    )
    p.add_argument("files", nargs="+", help="config files in the order given to Snakemake")
    p.set_defaults(func=_check)
