"""Option parsing shared by the subcommands."""

from __future__ import annotations

import json

from radiogen.errors import ConfigError


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
