"""Every report caption renders under every shipped configuration.

Snakemake renders a caption (Jinja) only when ``snakemake --report`` runs, after
the whole workflow: a caption that fails on one configuration's values (a
setting that may be null, say) loses the report at the very end of a run.  This
renders each caption as Snakemake does, with the real merged and default-filled
config; the job's own params and wildcards, which the report fills per file, are
stand-ins here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jinja2
import pytest

from radiogen.config import check_settings, read_config_file

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = sorted((REPO / "workflow" / "report").glob("*.rst"))
OVERLAYS = {"default": [], **{path.stem: [path] for path in sorted((REPO / "workflow" / "config").glob("*.yaml"))}}


class _JobValues:
    """``snakemake.params`` / ``wildcards`` / ``input`` / ``output``: any name is a placeholder."""

    def __getattr__(self, name: str) -> str:
        return f"<{name}>"

    def __getitem__(self, name: str) -> str:
        return f"<{name}>"


class _Snakemake:
    def __init__(self, config: dict):
        self.config = config
        self.params = self.wildcards = self.input = self.output = _JobValues()


def _config(overlays: list[Path]) -> dict:
    from snakemake.utils import update_config

    config = read_config_file(REPO / "config.yaml")
    for path in overlays:
        update_config(config, read_config_file(path))
    return check_settings(copy.deepcopy(config), sections=False)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_caption_renders(overlay):
    assert CAPTIONS, "no captions found"
    snakemake = _Snakemake(_config(OVERLAYS[overlay]))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for caption in CAPTIONS:
        text = env.from_string(caption.read_text()).render(snakemake=snakemake)
        assert text.strip(), caption.name
        assert "None" not in text or "None" in caption.read_text(), (caption.name, text)


def test_interferometer_caption_names_the_default_array():
    """stations: null (the default run) means all 62 Dutch HBA fields; a list gives its length."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    template = env.from_string((REPO / "workflow" / "report" / "skymap_interferometer_validation.rst").read_text())
    default = _config([])
    assert default["skymap"]["interferometer"]["stations"] is None
    assert "all 62 Dutch HBA station fields" in template.render(snakemake=_Snakemake(default))
    listed = copy.deepcopy(default)
    listed["skymap"]["interferometer"]["stations"] = ["CS001HBA0", "CS002HBA0", "RS106HBA"]
    assert "3 HBA station fields" in template.render(snakemake=_Snakemake(listed))
