"""Flux conditioning: Spearman correlation and 2-D energy distance on real LoTSS cutouts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from radiogen.cli import main as cli_main
from radiogen.errors import InputFileError
from radiogen.evaluation import flux as F
from radiogen.evaluation import pybdsf as P
from radiogen.evaluation import pybdsf_runtime as RT
from radiogen.evaluation import pybdsf_shards as S
from test_pybdsf import lotss_cutouts, lotss_image_set


def test_energy_distance_properties():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 2))
    b = rng.normal(size=(300, 2))
    shifted = b + np.array([1.0, 0.0])
    assert F.energy_distance_2d(a, a) == pytest.approx(0.0, abs=1e-12)
    same = F.energy_distance_2d(a, b)
    far = F.energy_distance_2d(a, shifted)
    assert far > 3 * same
    assert F.energy_distance_2d(shifted, a) == pytest.approx(far)
    # subsampling keeps the estimate close
    sub = F.energy_distance_2d(a, shifted, max_points=150, rng=np.random.default_rng(2))
    assert sub == pytest.approx(far, rel=0.3)


@pytest.fixture(scope="module")
def lotss_pybdsf(lotss_dr1_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flux")
    cutouts = lotss_cutouts(lotss_dr1_dir)
    bright = cutouts.assign(peak=[im.max() for im in cutouts["image"]]).nlargest(6, "peak")
    path = lotss_image_set(tmp / "lotss.h5", bright)
    with RT.gc_frozen():
        S.run_shard(path, shard=0, n_shards=1, output_csv=tmp / "real.csv",
                    output_models=tmp / "real.h5", seed=5)
    return tmp


def test_flux_conditioning_numbers(lotss_pybdsf):
    tmp = lotss_pybdsf
    real = pd.read_csv(tmp / "real.csv")
    assert (real["peak_flux_jy"] > 0).all()
    # a "generated" set whose residuals are three times larger
    fake = real.copy()
    fake["delta_plus"] *= 3
    fake.to_csv(tmp / "fake.csv", index=False)
    tables = {"real": tmp / "real.csv", "copy": tmp / "real.csv", "fake": tmp / "fake.csv"}
    result = F.flux_conditioning(tables, reference="real", output_json=tmp / "out.json", seed=1)
    ok = real[real["status"] == "ok"]
    rho = scipy.stats.spearmanr(ok["peak_flux_jy"], ok["delta_plus"])[0]
    assert result["sets"]["real"]["spearman_rho"] == pytest.approx(rho)
    assert result["sets"]["real"]["n_used"] == len(ok)
    assert result["sets"]["copy"]["energy_distance"] == pytest.approx(0.0, abs=1e-9)
    assert result["sets"]["fake"]["energy_distance"] > 0.3
    assert json.loads((tmp / "out.json").read_text())["reference"] == "real"


def test_flux_cli_and_figure(lotss_pybdsf):
    tmp = lotss_pybdsf
    rc = cli_main(["evaluate", "flux-conditioning", "--set", f"real={tmp / 'real.csv'}",
                   "--set", f"generated={tmp / 'real.csv'}", "--reference", "real",
                   "--output", str(tmp / "fc.json"), "--figure", str(tmp / "fc.png"),
                   "--seed", "3"])
    assert rc == 0
    assert (tmp / "fc.png").stat().st_size > 10_000
    summary = json.loads((tmp / "fc.json").read_text())
    assert set(summary["sets"]) == {"real", "generated"}


def test_sets_without_peak_flux_are_rejected(tmp_path):
    table = pd.DataFrame({c: [np.nan] for c in P.RESULT_COLUMNS})
    table["status"] = "ok"
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputFileError, match="peak flux"):
        F.flux_conditioning({"real": tmp_path / "t.csv"}, reference="real",
                            output_json=tmp_path / "o.json", seed=1)
