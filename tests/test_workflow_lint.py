"""Workflow hygiene: snakemake --lint, snakefmt, and the configuration schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "workflow" / "schemas"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def _snakemake(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [_tool("snakemake"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_snakemake_lint_is_clean():
    result = _snakemake("--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Lints for" not in output, output


def test_every_rule_has_log_benchmark_and_conda():
    """Workflow-catalog conventions: each rule logs, is benchmarked and names its conda env."""
    import re

    rules = 0
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule \w+:|    rule:)", path.read_text())[1:]:
            rules += 1
            name = re.match(r"(?:rule (\w+):|    rule:\n\s+name:\n\s+(.+))", block)
            for directive in ("log:", "benchmark:", "conda:"):
                assert re.search(rf"^\s+{directive}$", block, re.M), f"{path.name}: {name.group(0)} lacks {directive}"
    assert rules > 40


def test_snakefmt_check_is_clean():
    result = subprocess.run(
        [_tool("snakefmt"), "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- invalid configuration fails before any job, naming the key -----------------


def _assert_config_rejected(result: subprocess.CompletedProcess, *names: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Error validating config file" in output, output
    for name in names:
        assert name in output, f"{name!r} not named in:\n{output[:3000]}"


def test_negative_seed_is_rejected_before_any_job(tmp_path):
    results = tmp_path / "results"
    # Not a dry run: nothing may be created if validation works.
    result = _snakemake("--cores", "1", "--config", "seed=-1", f"results={results}")
    _assert_config_rejected(result, "seed", "-1")
    assert not results.exists(), "jobs ran although the config is invalid"


def test_unknown_top_level_key_is_rejected(tmp_path):
    result = _snakemake("-n", "--config", "no_such_key=1", f"results={tmp_path}")
    _assert_config_rejected(result, "no_such_key")


def _sections() -> list[str]:
    top = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())
    return [k for k, v in top["properties"].items() if "$ref" in v or v.get("type") == "object"]


@pytest.mark.parametrize("section", _sections())
def test_unknown_key_in_a_section_is_rejected(section):
    """A typo inside a config section of config.yaml names the key.

    Runs the same ``snakemake.utils.validate`` call as workflow/rules/common.smk,
    in-process (one Snakemake start-up per section would take minutes).
    """
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    section_config = config.get(section) or {}
    section_config["no_such_option"] = 1
    config[section] = section_config
    with pytest.raises(WorkflowError) as error:
        validate(config, str(SCHEMAS / "config.schema.yaml"))
    assert "no_such_option" in str(error.value)


# --- every schema property documents itself and has a default -------------------


def _load_schema(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _resolve(ref: str, path: Path) -> tuple[dict, Path]:
    """Schema that ``ref`` (``file.yaml``, ``#/$defs/x`` or both) points at from ``path``."""
    file_part, _, pointer = ref.partition("#")
    target_path = (path.parent / file_part).resolve() if file_part else path
    node = _load_schema(target_path)
    for token in filter(None, pointer.split("/")):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node, target_path


def _walk_properties(schema: dict, path: Path, where: str):
    """Yield (location, property schema, file, parent schema) for every property.

    Follows ``$ref`` (other files and ``#/...`` pointers), ``items`` and
    ``additionalProperties``; a parent that describes entries of a
    user-supplied list or map is marked ``_entry``.
    """
    for name, sub in (schema.get("properties") or {}).items():
        location = f"{where}.{name}" if where else name
        yield location, sub, path, schema
        target, target_path = sub, path
        if "$ref" in sub:
            resolved, target_path = _resolve(sub["$ref"], path)
            target = {**resolved, **{k: v for k, v in sub.items() if k != "$ref"}}
        yield from _walk_properties(target, target_path, location)
        for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
            entry = target.get(key)
            if isinstance(entry, dict):
                if "$ref" in entry:
                    resolved, entry_path = _resolve(entry["$ref"], target_path)
                    entry = {**resolved, **{k: v for k, v in entry.items() if k != "$ref"}}
                else:
                    entry_path = target_path
                yield from _walk_properties(
                    {**entry, "_entry": True}, entry_path, location + suffix
                )


def test_every_schema_file_is_reached_from_the_top_schema():
    reached = {SCHEMAS / "config.schema.yaml"}
    top = _load_schema(SCHEMAS / "config.schema.yaml")
    for _, sub, path, _ in _walk_properties(top, SCHEMAS / "config.schema.yaml", ""):
        if "$ref" in sub:
            reached.add(_resolve(sub["$ref"], path)[1])
    files = {p.resolve() for p in SCHEMAS.glob("*.yaml")}
    assert files <= {p.resolve() for p in reached}, f"unused schema files: {files - reached}"


def test_every_schema_property_has_description_and_default():
    """Each key documents itself; its default is its own or its parent's default.

    Entries of user-supplied maps and lists (``additionalProperties``/``items``)
    need no default for the fields they must give (``required``).
    """
    top_path = SCHEMAS / "config.schema.yaml"
    problems = []
    count = 0
    for location, sub, path, parent in _walk_properties(_load_schema(top_path), top_path, ""):
        count += 1
        if "$ref" in sub:
            sub = {**_resolve(sub["$ref"], path)[0], **sub}
        described = sub.get("description")
        if not (isinstance(described, str) and described.strip()):
            problems.append(f"{location} ({path.name}): no description")
        name = location.rsplit(".", 1)[-1]
        parent_default = parent.get("default")
        has_default = "default" in sub or (
            isinstance(parent_default, dict) and name in parent_default
        )
        if not has_default and not (parent.get("_entry") and name in parent.get("required", [])):
            problems.append(f"{location} ({path.name}): no default")
    assert count > 2, "schema walk found almost nothing"
    assert not problems, "\n".join(problems)


def test_defaults_validate_against_the_schema():
    """The defaults alone (no config.yaml) make a valid configuration."""
    from snakemake.utils import validate

    config: dict = {}
    validate(config, str(SCHEMAS / "config.schema.yaml"))
    assert config["seed"] >= 0 and config["results"]
