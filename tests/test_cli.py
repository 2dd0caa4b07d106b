"""The ``radiogen`` command line: version, help, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import radiogen
from radiogen.cli import COMMAND_MODULES, build_parser, main
from radiogen.errors import InputFileError

RADIOGEN = Path(sys.executable).with_name("radiogen")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [str(RADIOGEN)] if RADIOGEN.exists() else [sys.executable, "-m", "radiogen.cli"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_console_script_version():
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"radiogen {radiogen.__version__}"


def test_help_lists_every_topic_subcommand():
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.choices, "no subcommands registered"
    for name in subparsers.choices:
        assert name in result.stdout
    # every registered subcommand has a handler (directly or through its sub-actions)
    for name, sub in subparsers.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        handlers = [sub.get_default("func")] + [
            leaf.get_default("func") for action in nested for leaf in action.choices.values()
        ]
        assert any(callable(h) for h in handlers), f"subcommand {name!r} has no handler"


def test_topic_modules_that_exist_register_commands():
    """A topic module that is present must import cleanly and add subcommands."""
    import importlib.util

    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"radiogen.cli.{name}") is None:
            continue
        module = importlib.import_module(f"radiogen.cli.{name}")
        assert callable(getattr(module, "register", None)), f"radiogen.cli.{name} lacks register()"


def test_unknown_subcommand_exits_2():
    result = _run("no-such-subcommand")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: radiogen" in capsys.readouterr().out


def test_radiogen_error_is_one_line_and_exit_1(tmp_path):
    # A RadiogenError from a real subcommand: a profile that does not exist.
    result = _run(
        "profile", "install", "--name", "no-such-profile", "--dest", str(tmp_path / "dest")
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr
    assert "ERROR" in error_lines[0] and "no-such-profile" in error_lines[0]
    assert not (tmp_path / "dest").exists()


def test_main_turns_radiogen_error_into_exit_1(monkeypatch, caplog):
    """Any subcommand raising a RadiogenError subclass gets exit code 1, not a traceback."""
    parser = build_parser()

    def failing(args):
        raise InputFileError("some.fits: not a FITS file")

    original_parse = parser.parse_args
    monkeypatch.setattr(
        "radiogen.cli.build_parser",
        lambda: _ParserWithFunc(parser, original_parse, failing),
    )
    assert main(["fails"]) == 1
    assert "some.fits: not a FITS file" in caplog.text


class _ParserWithFunc:
    """Stands in for the real parser so that ``main`` dispatches to ``func``."""

    def __init__(self, parser, parse, func):
        self._parser, self._parse, self._func = parser, parse, func

    def parse_args(self, argv):
        return argparse.Namespace(log_level="INFO", func=self._func)

    def print_help(self):  # pragma: no cover - not reached
        self._parser.print_help()


def test_log_level_option_is_accepted():
    result = _run("--log-level", "warning", "--version")
    assert result.returncode == 0, result.stderr
