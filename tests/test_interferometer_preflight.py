"""The interferometer's tools are checked when a run starts (radiogen.interferometer.preflight).

The default run observes its map with WSClean after the models are trained; a
machine without WSClean must hear so before the first job, not an hour later.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from radiogen.errors import InputFileError
from radiogen.interferometer.preflight import check_tools

REPO = Path(__file__).resolve().parents[1]


def _path_without_wsclean(tmp_path: Path) -> str:
    """A PATH with every program of the current PATH except wsclean (links in one folder)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name != "wsclean" and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry.path)
    assert shutil.which("wsclean", path=str(folder)) is None
    return str(folder)


def test_missing_wsclean_named_with_the_key_to_turn_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_without_wsclean(tmp_path))
    with pytest.raises(InputFileError, match=r"skymap\.interferometer\.enabled is true, but the imager wsclean "
                                             r"is not installed .*enabled: false"):
        check_tools()


@pytest.mark.skipif(shutil.which("wsclean") is None and not os.environ.get("RADIOGEN_REQUIRE_INTERFEROMETER"),
                    reason="wsclean is not installed here")
def test_installed_tools_pass():
    check_tools()


def test_workflow_stops_before_any_job_without_wsclean(tmp_path):
    """Through Snakemake: the run stops in its start handler; no job runs, nothing is written."""
    results = tmp_path / "results"
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"results": str(results)}))
    env = {**os.environ, "PATH": _path_without_wsclean(tmp_path)}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "--cores", "1", "--configfile", str(extra)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "the imager wsclean is not installed" in output, output[-3000:]
    assert not results.exists() or not any(p.is_file() for p in results.rglob("*")), sorted(results.rglob("*"))


@pytest.mark.skipif(shutil.which("wsclean") is None and not os.environ.get("RADIOGEN_REQUIRE_INTERFEROMETER"),
                    reason="wsclean is not installed here")
def test_conda_runs_leave_python_casacore_to_the_jobs_env(monkeypatch):
    """Without python-casacore in this Python the check names it, unless the jobs run in conda envs
    (python_packages=False, the workflow's choice under --software-deployment-method conda)."""
    monkeypatch.setitem(sys.modules, "casacore", None)  # import casacore -> ImportError
    monkeypatch.setitem(sys.modules, "casacore.tables", None)
    with pytest.raises(InputFileError, match=r"python-casacore is not importable"):
        check_tools()
    check_tools(python_packages=False)
