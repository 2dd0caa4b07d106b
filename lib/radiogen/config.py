"""Configuration: YAML reading, schema defaults and the checks a schema cannot express.

Snakemake's ``validate`` checks ``$ref``'d schema files but fills defaults only
at the top level, so every section would otherwise need its own fallbacks.
:func:`fill_defaults` walks the schema, follows relative ``$ref`` files and
sets every missing key to its documented default.  :func:`check_config` adds
what JSON schema lets through (NaN passes ``minimum``), cross-key conditions
and safe mosaic IDs; :func:`read_config_file` names file, line and column of a
YAML syntax error.  :func:`check_settings` is the start-up check that the
workflow (``workflow/rules/common.smk``) and ``radiogen config check`` run: the
schemas, :func:`check_config` and every section's own settings checks
(:mod:`radiogen.startup_check`), so that no setting is first found wrong by the
job that reads it.

The schemas in ``workflow/schemas`` are the only place a default is written:
:func:`section_defaults` gives the library the defaults of one section, so
that code called without the workflow (tests, notebooks, the CLI) sees the
same values as a workflow run.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from pathlib import Path

import yaml

from radiogen.errors import ConfigError

__all__ = [
    "check_config",
    "check_settings",
    "schema_problems",
    "fill_defaults",
    "load_schema",
    "read_config_file",
    "schema_dir",
    "section_defaults",
    "SAFE_ID",
    "block_values",
]

#: Mosaic (pointing) IDs become file names and shell words: letters, digits, + - . _
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*$")


def block_values(mapping, settings_class, *, name: str, ignored=(), optional=()) -> dict:
    """The values of a config block for the fields of the dataclass ``settings_class``.

    Keys in ``ignored`` (switches, job resources, sub-sections) are skipped; an
    unknown or a missing key is a :class:`ConfigError` naming the block ``name``;
    fields in ``optional`` may be missing and are then left out.
    """
    import dataclasses

    known = {f.name for f in dataclasses.fields(settings_class)}
    unknown = sorted(set(mapping) - known - set(ignored))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(known - set(mapping) - set(optional))
    if missing:
        raise ConfigError(f"{name}: missing key(s) {', '.join(missing)}")
    return {key: mapping[key] for key in known if key in mapping}


def load_schema(path: str | Path) -> dict:
    """Read a YAML/JSON schema file."""
    with open(path) as handle:
        return yaml.safe_load(handle)


@functools.lru_cache(maxsize=None)
def _parsed_schema(path: str, mtime_ns: int) -> dict:
    # Parsed once per file version: every settings module asks for its section's
    # defaults at import, and most sections share config.schema.yaml and a $ref file.
    return load_schema(path)


def _schema(path: Path) -> dict:
    """A schema file, parsed once (read-only: callers never modify it)."""
    return _parsed_schema(str(path), path.stat().st_mtime_ns)


def _resolve(schema: dict, base_dir: Path) -> tuple[dict, Path]:
    ref = schema.get("$ref")
    if ref and not ref.startswith("#"):
        ref_path = (base_dir / ref).resolve()
        resolved = _schema(ref_path)
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return {**resolved, **extra}, ref_path.parent
    return schema, base_dir


def fill_defaults(instance: dict, schema_path: str | Path) -> dict:
    """Set every missing key of ``instance`` (in place) to its schema default.

    Nested objects are filled recursively, following ``$ref`` to sibling
    schema files.  Returns ``instance``.
    """
    schema_path = Path(schema_path).resolve()
    _fill(instance, _schema(schema_path), schema_path.parent)
    return instance


def _fill(instance: dict, schema: dict, base_dir: Path) -> None:
    schema, base_dir = _resolve(schema, base_dir)
    for key, sub in schema.get("properties", {}).items():
        sub, sub_dir = _resolve(sub, base_dir)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and (
            "properties" in sub or "$ref" in sub or isinstance(sub.get("additionalProperties"), dict)
        ):
            _fill(instance[key], sub, sub_dir)
    # maps of named entries (e.g. imagesets: {name: {...}}): fill each entry
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in extra:
        for key, value in instance.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                _fill(value, extra, base_dir)


def schema_dir() -> Path:
    """Directory of the workflow's config schemas (``RADIOGEN_SCHEMAS`` overrides it).

    radiogen is installed editable from its checkout (``scripts/setup``, the conda
    envs' post-deploy script), so the schemas sit two levels above the package.
    """
    override = os.environ.get("RADIOGEN_SCHEMAS")
    path = Path(override) if override else Path(__file__).resolve().parents[2] / "workflow" / "schemas"
    if not (path / "config.schema.yaml").is_file():
        raise ConfigError(
            f"{path}: no config.schema.yaml here; radiogen reads its defaults from the workflow's "
            "schemas (install it editable from the checkout, or set RADIOGEN_SCHEMAS)"
        )
    return path


@functools.lru_cache(maxsize=None)
def _section_defaults(dotted: str) -> dict:
    schema_path = schema_dir() / "config.schema.yaml"
    schema, base_dir = _schema(schema_path), schema_path.parent
    for part in dotted.split(".") if dotted else ():
        schema, base_dir = _resolve(schema, base_dir)
        if part not in schema.get("properties", {}):
            raise KeyError(f"config schema has no section {dotted!r} (no key {part!r})")
        schema, base_dir = _resolve(schema["properties"][part], base_dir)
    defaults = copy.deepcopy(schema.get("default", {}))
    if not isinstance(defaults, dict):
        raise KeyError(f"config schema: {dotted!r} is a setting, not a section")
    _fill(defaults, schema, base_dir)
    return defaults


def section_defaults(dotted: str) -> dict:
    """Defaults of one config section, from its schema (a fresh copy each call).

    Parameters
    ----------
    dotted : str
        Section path in the config, e.g. ``"train"``, ``"train.first"``,
        ``"lotss.selection"`` or ``"evaluation.summary"``; ``""`` is the whole config.

    Returns
    -------
    dict
        Every key of the section that has a default, nested sections filled.
    """
    return copy.deepcopy(_section_defaults(dotted))


def read_config_file(path: str | Path) -> dict:
    """Read a YAML (or JSON) config file; a syntax error names the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from err
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from err
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: a config file must map keys to values, got a {type(value).__name__}")
    return value


def _non_finite(value, key: str):
    """(key, value) of every NaN or infinite number under ``value``."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        yield key, value
    elif isinstance(value, dict):
        for sub, item in value.items():
            yield from _non_finite(item, f"{key}.{sub}" if key else str(sub))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _non_finite(item, f"{key}[{i}]")


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _less(config: dict, low: str, high: str, *, strict: bool = True) -> str | None:
    a, b = _get(config, low), _get(config, high)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if (a >= b) if strict else (a > b):
            return f"{low} ({a}) must be {'<' if strict else '<='} {high} ({b})"
    return None


def check_config(config: dict) -> dict:
    """Raise :class:`ConfigError` for what the schemas cannot catch; return ``config``.

    * NaN or infinite numbers anywhere (JSON schema's ``minimum`` lets NaN pass);
    * ranges given the wrong way round (sampler sigma_min/sigma_max, S_min/S_max,
      peak-flux ranges, the simulated flux range);
    * mosaic IDs that are not safe as file names and shell words.
    """
    problems = [f"{key} must be a finite number, got {value}" for key, value in _non_finite(config, "")]
    for low, high, strict in (
        ("sample.sampler.sigma_min", "sample.sampler.sigma_max", True),
        ("sample.sampler.S_min", "sample.sampler.S_max", False),
        ("lotss.simulate.flux_min_mjy", "lotss.simulate.flux_max_mjy", True),
    ):
        problem = _less(config, low, high, strict=strict)
        if problem:
            problems.append(problem)
    flux_range = _get(config, "sample.lotss.peak_flux_range")
    if isinstance(flux_range, list) and len(flux_range) == 2 and not flux_range[0] < flux_range[1]:
        problems.append(f"sample.lotss.peak_flux_range must be [low, high] with low < high, got {flux_range}")
    for key in ("lotss.files.mosaics", "lotss.download.mosaics"):
        ids = _get(config, key)
        for mosaic in ids or []:
            if not SAFE_ID.match(str(mosaic)):
                problems.append(
                    f"{key}: mosaic ID {str(mosaic)!r} may only contain letters, digits and + - . _ "
                    "(it names files and appears in shell commands)"
                )
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return config


def _dotted(path) -> str:
    """A JSON-schema error path as a config key: ``train.lotss.batch_size``, ``x.list[1]``."""
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def schema_problems(config: dict) -> list[str]:
    """Every violation of ``config.schema.yaml`` (with its ``$ref`` files), one line each.

    Each line starts with the dotted key, e.g. ``train.lotss.batch_size: 0 is less than
    the minimum of 1``; the same rules Snakemake's ``validate`` applies.
    """
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schema_path = (schema_dir() / "config.schema.yaml").resolve()

    def retrieve(uri: str) -> Resource:
        # Relative $ref's resolve against the referring file's file:// URI.
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Resource.from_contents(_schema(Path(url2pathname(urlparse(uri).path))))

    root = {**_schema(schema_path), "$id": schema_path.as_uri()}
    validator = Draft202012Validator(root, registry=Registry(retrieve=retrieve))
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_dotted(error.absolute_path)}: {error.message}" for error in errors]


def check_settings(config: dict, *, sections: bool = True) -> dict:
    """The start-up check: refuse any setting that is out of range or contradicts another.

    Runs, in order, the JSON schemas (:func:`schema_problems`), fills every missing
    key with its schema default (in place), :func:`check_config`, and each section's
    own settings checks (:func:`radiogen.startup_check.section_problems`: the typed
    settings objects of the jobs, the network shape against the image sizes, the
    batch against the GPUs, the sample requests against the model's context, ...).
    The workflow runs it before it builds the job graph (so ``snakemake -n`` refuses a
    bad config), and ``radiogen config check`` runs it on config files.

    Parameters
    ----------
    config : dict
        The merged configuration (``config.yaml`` and every ``--configfile``).
    sections : bool, keyword-only
        Run the sections' settings checks (they import torch, ~2 s). The workflow
        turns them off only in the Snakemake processes that run single jobs (on a
        cluster node), whose config the main process has already checked.

    Returns
    -------
    dict
        ``config``, with schema defaults filled in.

    Raises
    ------
    ConfigError
        Naming every problem found, each with its dotted key.
    """
    problems = schema_problems(config)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    fill_defaults(config, schema_dir() / "config.schema.yaml")
    check_config(config)
    if not sections:
        return config
    from radiogen.startup_check import section_problems

    problems = section_problems(config)
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return config
