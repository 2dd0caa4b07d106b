"""Shared fixtures: the real data in ../shared/data, skipped with a reason when absent.

Where the data must be there (CI: ``.ci/run`` sets ``RADIOGEN_REQUIRE_SHARED=1``),
a missing folder stops the session before any test runs, and a missing file fails
the test that needs it, instead of skipping about a quarter of the suite.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RADIOGEN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
#: Set to 1 where the real data must be present (CI): missing data fails instead of skipping.
REQUIRE_SHARED = os.environ.get("RADIOGEN_REQUIRE_SHARED") == "1"


def pytest_configure(config):
    if REQUIRE_SHARED and not SHARED_DATA.is_dir():
        raise pytest.UsageError(
            f"RADIOGEN_REQUIRE_SHARED=1 but the real test data folder {SHARED_DATA} is missing "
            "(put ../shared next to the repository or set RADIOGEN_SHARED_DATA)")


def _require(path: Path) -> Path:
    if not path.exists():
        reason = f"real data not available: {path} is missing (set RADIOGEN_SHARED_DATA)"
        if REQUIRE_SHARED:
            pytest.fail(f"RADIOGEN_REQUIRE_SHARED=1 but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real radio data (FIRST, LoTSS DR1); skips when missing."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def first_zip() -> Path:
    """The Griese et al. (2023) FIRST dataset zip."""
    return _require(SHARED_DATA / "first" / "galaxy_data.zip")


@pytest.fixture(scope="session")
def first_fits_dir() -> Path:
    """32 real FIRST FITS cutouts without beam keywords."""
    return _require(SHARED_DATA / "first_fits")


@pytest.fixture(scope="session")
def lotss_dr1_dir() -> Path:
    """Real LoTSS DR1 mosaic pieces, the DR1 catalogue rows and DR2 headers."""
    return _require(SHARED_DATA / "lotss_dr1")


@pytest.fixture(scope="session")
def lofar_diffusion_dir() -> Path:
    """The authors' model-file formats at small width with their reference outputs (README there)."""
    return _require(SHARED_DATA / "lofar_diffusion" / "reference_tiny.npz").parent


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (the suite runs 2 workers on 2 cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib figures the test writes, by output file name, to check what they show.

    Every figure is still written for real (``Figure.savefig`` runs); the fixture keeps the
    Figure object.  :func:`radiogen.io.save_figure` writes to ``.<name>.<random>.tmp``
    first, so a figure is found by the name of the file it ends up in.
    """
    from matplotlib.figure import Figure

    saved: dict[str, object] = {}
    original = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        name = Path(str(fname)).name
        temporary = re.fullmatch(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}(\.[^.]+)*\.tmp", name)
        saved[temporary["name"] if temporary else name] = self
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved
