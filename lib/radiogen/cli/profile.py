"""``radiogen profile install``: make ``snakemake --profile slurm`` work.

Snakemake resolves a bare profile name such as ``slurm`` by looking for a folder
of that name in the current directory, in the user's configuration directory
(``$XDG_CONFIG_HOME/snakemake``, by default ``~/.config/snakemake``) and in the
site directory (``/etc/xdg/snakemake``) -- not in this repository's
``profiles/`` folder.  This command copies ``profiles/slurm/config.yaml`` to
``<dest>/<name>/config.yaml`` with the user's SLURM account and partition
filled in, once per machine.  The copy contains no paths, so it works for any
checkout; ``snakemake --profile slurm`` is then run from the repository root,
where Snakemake finds the ``Snakefile``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path

import yaml

from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path

log = logging.getLogger(__name__)

#: SLURM account and partition names: letters, digits and ``_ . -`` only,
#: which also keeps them safe to write unquoted into YAML and sbatch calls.
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

#: Placeholder lines in ``profiles/slurm/config.yaml`` that get filled in.
_PLACEHOLDER = r"^(?P<indent>[ \t]*)#[ \t]*{key}:.*$"


def register(topics) -> None:
    """Add the ``profile`` subcommands."""
    profile_sub = topics.topic("profile")
    install = profile_sub.add_parser(
        "install",
        help="copy profiles/<name> to <dest>/<name>/config.yaml, filling in account and partition",
    )
    install.add_argument(
        "--name", default="slurm", help="profile to install, a folder of profiles/ (default: slurm)"
    )
    install.add_argument("--account", help="SLURM account to charge (sbatch -A)")
    install.add_argument("--partition", help="SLURM partition to submit to (sbatch -p)")
    install.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="profile directory searched by Snakemake "
        "(default: $XDG_CONFIG_HOME/snakemake, else ~/.config/snakemake)",
    )
    install.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder holding the profile folders (default: profiles/ of this checkout)",
    )
    install.add_argument(
        "--force", action="store_true", help="overwrite an existing installed profile"
    )
    install.set_defaults(func=_install_command)


def default_profile_home() -> Path:
    """Snakemake's per-user profile directory (platformdirs' rule on Linux)."""
    config_home = os.environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(config_home) if config_home else Path.home() / ".config"
    return base / "snakemake"


def default_profiles_source() -> Path:
    """``profiles/`` of the checkout: the working directory's, else the package's."""
    candidates = [Path.cwd() / "profiles", Path(__file__).resolve().parents[3] / "profiles"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise InputFileError(
        "no profiles/ folder found in the working directory or next to the radiogen "
        f"package ({', '.join(str(c) for c in candidates)}); pass --source"
    )


def render_profile(text: str, *, account: str | None, partition: str | None, source: Path) -> str:
    """Fill ``slurm_account``/``slurm_partition`` placeholders in a profile's text.

    Parameters
    ----------
    text
        Content of the profile's ``config.yaml`` with commented placeholder
        lines ``# slurm_account: ...`` and ``# slurm_partition: ...`` inside
        ``default-resources``.
    account, partition
        Values to fill in; ``None`` keeps the placeholder commented out
        (SLURM then uses the user's default account or partition).
    source
        File the text came from, named in error messages.

    Returns
    -------
    str
        The profile text; comments are kept.
    """
    for key, value in (("slurm_account", account), ("slurm_partition", partition)):
        if value is None:
            continue
        if not _SLURM_NAME.match(value):
            raise ConfigError(
                f"--{key.removeprefix('slurm_')} {value!r}: SLURM names may contain only "
                "letters, digits, '_', '.' and '-'"
            )
        pattern = re.compile(_PLACEHOLDER.format(key=key), re.MULTILINE)
        if not pattern.search(text):
            raise InputFileError(
                f"{source}: no '# {key}: ...' placeholder line to fill in "
                "(expected in default-resources)"
            )
        text = pattern.sub(
            lambda m, key=key, value=value: f"{m['indent']}{key}: {json.dumps(value)}",
            text,
            count=1,
        )
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputFileError(f"{source}: not valid YAML: {err}") from err
    if not isinstance(parsed, dict):
        raise InputFileError(f"{source}: a profile must be a YAML mapping")
    resources = parsed.get("default-resources") or {}
    for key, value in (("slurm_account", account), ("slurm_partition", partition)):
        if value is not None and resources.get(key) != value:
            raise InputFileError(
                f"{source}: filling in {key} did not land in default-resources "
                "(is the placeholder indented under default-resources?)"
            )
    return text


def install_profile(
    *,
    name: str = "slurm",
    account: str | None = None,
    partition: str | None = None,
    dest: Path | None = None,
    source: Path | None = None,
    force: bool = False,
) -> Path:
    """Install ``<source>/<name>/config.yaml`` as ``<dest>/<name>/config.yaml``.

    Returns the written file.  Refuses to replace an existing file unless
    ``force``; the file is written atomically.
    """
    source = Path(source) if source is not None else default_profiles_source()
    dest = Path(dest).expanduser() if dest is not None else default_profile_home()
    if not re.match(r"^[A-Za-z0-9_.\-]+$", name) or name in {".", ".."}:
        raise ConfigError(f"--name {name!r}: a profile name is a plain folder name")
    if not source.is_dir():
        raise InputFileError(f"{source}: profiles folder not found")
    template = source / name / "config.yaml"
    if not template.is_file():
        available = sorted(p.name for p in source.iterdir() if (p / "config.yaml").is_file())
        raise InputFileError(
            f"{template}: no such profile (available in {source}: {', '.join(available) or 'none'})"
        )
    text = render_profile(
        template.read_text(encoding="utf-8"), account=account, partition=partition, source=template
    )
    target = dest / name / "config.yaml"
    if target.exists() and not force:
        raise InputFileError(f"{target} already exists; pass --force to overwrite it")
    header = (
        f"# Installed by `radiogen profile install --name {name}` from {template}.\n"
        f"# Use from the radiogen repository root: snakemake --profile {name}\n"
    )
    with atomic_path(target) as tmp:
        tmp.write_text(header + text, encoding="utf-8")
    return target


def _install_command(args: argparse.Namespace) -> int:
    target = install_profile(
        name=args.name,
        account=args.account,
        partition=args.partition,
        dest=args.dest,
        source=args.source,
        force=args.force,
    )
    filled = ", ".join(
        f"{key}={value}"
        for key, value in (("account", args.account), ("partition", args.partition))
        if value is not None
    )
    log.info("installed profile %r at %s (%s)", args.name, target, filled or "no account/partition")
    print(target)
    if args.account is None or args.partition is None:
        log.warning(
            "account or partition not given: sbatch uses your cluster defaults; "
            "edit %s to set them",
            target,
        )
    print(f"now run from the repository root: snakemake --profile {args.name}")
    return 0
