"""Config sections with their schema defaults filled in, for the workflow rules.

Snakemake's ``validate`` fills defaults of the top-level schema but not of the
section schemas it references with ``$ref``, so rules read their section
through :func:`section_settings` to see every documented default.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["schema_defaults", "section_settings"]


def schema_defaults(schema: dict) -> dict:
    """Defaults of every property of an object schema, nested objects included."""
    defaults = {}
    for key, spec in schema.get("properties", {}).items():
        if spec.get("type") == "object" and "properties" in spec:
            defaults[key] = {**schema_defaults(spec), **spec.get("default", {})}
        elif "default" in spec:
            defaults[key] = spec["default"]
    return defaults


def section_settings(config: dict, name: str, schema_file: str | Path) -> dict:
    """``config[name]`` over the defaults of ``schema_file`` (one level of nested dicts merged)."""
    with open(schema_file) as handle:
        merged = schema_defaults(yaml.safe_load(handle))
    for key, value in (config.get(name) or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
