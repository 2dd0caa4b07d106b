"""The real test data: skipped with the reason where absent, a failure where CI requires it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_shared_data_holds_the_real_surveys(shared_data):
    assert (shared_data / "first" / "galaxy_data.zip").is_file()
    assert sorted((shared_data / "first_fits").glob("*.fits"))
    assert (shared_data / "lotss_dr1").is_dir()


def _pytest(tmp_path, *, require: str | None):
    env = {**os.environ, "RADIOGEN_SHARED_DATA": str(tmp_path / "no-shared" / "data")}
    env.pop("RADIOGEN_REQUIRE_SHARED", None)
    if require is not None:
        env["RADIOGEN_REQUIRE_SHARED"] = require
    node = "tests/test_shared_data.py::test_shared_data_holds_the_real_surveys"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", node],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_missing_shared_data_skips_with_the_reason(tmp_path):
    run = _pytest(tmp_path, require=None)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "1 skipped" in run.stdout
    assert f"{tmp_path / 'no-shared' / 'data'} is missing" in run.stdout


def test_missing_shared_data_fails_where_required(tmp_path):
    run = _pytest(tmp_path, require="1")
    assert run.returncode not in (0, 5), run.stdout[-2000:]
    out = run.stdout + run.stderr
    assert f"RADIOGEN_REQUIRE_SHARED=1 but the real test data folder {tmp_path / 'no-shared' / 'data'} is missing" in out
    assert "passed" not in out and "skipped" not in out
