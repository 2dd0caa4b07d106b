"""Configuration defaults from the workflow's JSON schemas.

Snakemake's ``validate`` checks ``$ref``'d schema files but fills defaults only
at the top level, so every section would otherwise need its own fallbacks.
:func:`fill_defaults` walks the schema, follows relative ``$ref`` files and
sets every missing key to its documented default.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

__all__ = ["fill_defaults", "load_schema"]


def load_schema(path: str | Path) -> dict:
    """Read a YAML/JSON schema file."""
    with open(path) as handle:
        return yaml.safe_load(handle)


def _resolve(schema: dict, base_dir: Path) -> tuple[dict, Path]:
    ref = schema.get("$ref")
    if ref and not ref.startswith("#"):
        ref_path = (base_dir / ref).resolve()
        resolved = load_schema(ref_path)
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return {**resolved, **extra}, ref_path.parent
    return schema, base_dir


def fill_defaults(instance: dict, schema_path: str | Path) -> dict:
    """Set every missing key of ``instance`` (in place) to its schema default.

    Nested objects are filled recursively, following ``$ref`` to sibling
    schema files.  Returns ``instance``.
    """
    schema_path = Path(schema_path).resolve()
    _fill(instance, load_schema(schema_path), schema_path.parent)
    return instance


def _fill(instance: dict, schema: dict, base_dir: Path) -> None:
    schema, base_dir = _resolve(schema, base_dir)
    for key, sub in schema.get("properties", {}).items():
        sub, sub_dir = _resolve(sub, base_dir)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and (
            "properties" in sub or "$ref" in sub
        ):
            _fill(instance[key], sub, sub_dir)
