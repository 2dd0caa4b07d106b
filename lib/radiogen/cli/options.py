"""Option parsing shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import math

from radiogen.config import section_defaults
from radiogen.errors import ConfigError


def config_default(dotted_key: str):
    """The schema default of one config key (``"lotss.cutout_size"``): CLI options
    that stand for a config key take their default from there, never a copy."""
    section, _, key = dotted_key.rpartition(".")
    return section_defaults(section)[key]


def json_object(text: str | None, *, option: str = "--settings") -> dict:
    """Parse a JSON object given on the command line; empty or None gives ``{}``."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{option}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: expected a JSON object")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (NaN and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (e.g. guidance strength w)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (e.g. a timeout in seconds)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = finite_float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return value
