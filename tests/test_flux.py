"""Flux conditioning: Spearman correlation and 2-D energy distance on real LoTSS cutouts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from scipy.spatial.distance import cdist

from radiogen.cli import main as cli_main
from radiogen.errors import InputFileError, RadiogenError
from radiogen.evaluation import flux as F
from radiogen.evaluation import pybdsf as P
from radiogen.evaluation import pybdsf_runtime as RT
from radiogen.evaluation import pybdsf_shards as S
from figures import panels
from test_pybdsf import lotss_cutouts, lotss_image_set


def _energy_by_loops(a, b) -> float:
    """The U-statistic of D^2 written out pair by pair (an independent computation)."""
    n, m = len(a), len(b)
    between = sum(np.linalg.norm(x - y) for x in a for y in b) / (n * m)
    within_a = sum(np.linalg.norm(a[i] - a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    within_b = sum(np.linalg.norm(b[i] - b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return 2 * between - within_a - within_b


def test_energy_distance_matches_the_pairwise_definition():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(17, 2)), rng.normal(0.3, 1.5, size=(11, 2))
    assert F.energy_distance_sq(a, b) == pytest.approx(_energy_by_loops(a, b), rel=1e-12)
    assert F.energy_distance_sq(b, a) == pytest.approx(F.energy_distance_sq(a, b), rel=1e-12)
    # 1-D: 2 E|X-Y| - E|X-X'| - E|Y-Y'| is 2 x the squared Cramer distance of scipy's
    # energy_distance (a V-statistic); the two differ only by the diagonal terms.
    x, y = rng.normal(size=400), rng.normal(1.0, 1.0, size=300)
    v_stat = scipy.stats.energy_distance(x, y) ** 2
    u_stat = F.energy_distance_sq(x[:, None], y[:, None])
    w_x = np.abs(x[:, None] - x[None]).sum() / len(x) ** 2
    w_y = np.abs(y[:, None] - y[None]).sum() / len(y) ** 2
    diagonal = w_x / (len(x) - 1) + w_y / (len(y) - 1)  # V - U for the two within-sample means
    assert u_stat == pytest.approx(v_stat - diagonal, rel=1e-9)
    with pytest.raises(RadiogenError, match="n>=2"):
        F.energy_distance_sq(a[:1], b)


def test_energy_distance_is_unbiased_for_equal_distributions():
    """Mean over 400 seeded pairs of samples (n = 50 vs 20) is 0 within 3 standard errors.

    The V-statistic of the same pairs (diagonal kept) is far above 0: the test
    tells the two apart.
    """
    u, v = [], []
    for seed in range(400):
        rng = np.random.default_rng([5, seed])
        a, b = rng.standard_t(4, size=(50, 2)), rng.standard_t(4, size=(20, 2))
        u.append(F.energy_distance_sq(a, b))
        v.append(2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean())
    u, v = np.array(u), np.array(v)
    standard_error = u.std(ddof=1) / np.sqrt(len(u))
    assert abs(u.mean()) < 3 * standard_error
    assert v.mean() > 10 * standard_error
    # A shift of 1.5 units at the same sizes is seen.
    rng = np.random.default_rng(7)
    far = [F.energy_distance_sq(rng.standard_t(4, size=(50, 2)), rng.standard_t(4, size=(20, 2)) + [1.5, 0])
           for _ in range(20)]
    assert np.mean(far) > 3 * u.std(ddof=1)


def _flux_table(points, path):
    """A merged-PyBDSF-like table (the columns flux_points reads) from (log10 peak, Delta+) points."""
    pd.DataFrame({"index": np.arange(len(points)), "status": "ok", "peak_flux_jy": 10.0 ** points[:, 0],
                  "delta_plus": points[:, 1]}).to_csv(path, index=False)
    return path


def test_size_matched_energy_floor_at_2000_vs_50(tmp_path):
    """At N = 2000 real vs m = 50 points the floor's spread is that of fresh independent draws.

    Fresh draws of 1950 and 50 points from the real distribution give the
    spread of the statistic under the null hypothesis at the comparison's
    sizes; the floor of the seeded partitions must match it (within 35%), and
    a "generated" set from the same distribution has |z| < 3.  The halves of
    the old floor (1000 vs 1000) have a spread about 4x smaller.
    """
    rng = np.random.default_rng(11)

    def draw(n):
        return np.column_stack([rng.normal(-2.0, 0.5, n), rng.gamma(2.0, 1.0, n)])

    tables = {"real": _flux_table(draw(2000), tmp_path / "real.csv"),
              "same": _flux_table(draw(50), tmp_path / "same.csv")}
    result = F.flux_conditioning(tables, reference="real", output_json=tmp_path / "f.json", seed=3,
                                 floor_repeats=40)
    floor = result["floor"]
    assert (floor["n_reference"], floor["n_compared"], floor["repeats"]) == (1950, 50, 40)
    points = np.column_stack([np.log10(pd.read_csv(tables["real"])["peak_flux_jy"]),
                              pd.read_csv(tables["real"])["delta_plus"]])
    centre, scale = points.mean(axis=0), points.std(axis=0)
    fresh = [F.energy_distance_sq((draw(1950) - centre) / scale, (draw(50) - centre) / scale) for _ in range(60)]
    halves = [F.energy_distance_sq((draw(1000) - centre) / scale, (draw(1000) - centre) / scale) for _ in range(30)]
    assert floor["energy_distance_sq_sd"] == pytest.approx(np.std(fresh, ddof=1), rel=0.35)
    assert np.std(halves, ddof=1) < floor["energy_distance_sq_sd"] / 2.5
    assert abs(floor["energy_distance_sq"]) < floor["energy_distance_sq_sd"]  # unbiased: centred on 0
    same = result["sets"]["same"]
    assert abs(same["energy_z"]) < 3 and same["n_compared"] == 50
    assert same["energy_z"] == pytest.approx((same["energy_distance_sq"] - floor["energy_distance_sq"])
                                             / floor["energy_distance_sq_sd"])


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
    # m = 3 of 6 real points: too few for a small floor, but the copy sits in it and the
    # three-fold residuals far above it.
    assert abs(result["sets"]["copy"]["energy_z"]) < 3
    assert result["sets"]["fake"]["energy_z"] > 3
    assert result["sets"]["fake"]["energy_distance_sq"] > result["sets"]["copy"]["energy_distance_sq"]
    assert json.loads((tmp / "out.json").read_text())["reference"] == "real"


def test_flux_cli_and_figure(lotss_pybdsf, saved_figures):
    tmp = lotss_pybdsf
    rc = cli_main(["evaluate", "flux-conditioning", "--set", f"real={tmp / 'real.csv'}",
                   "--set", f"generated={tmp / 'real.csv'}", "--reference", "real",
                   "--output", str(tmp / "fc.json"), "--figure", str(tmp / "fc.png"),
                   "--seed", "3"])
    assert rc == 0
    summary = json.loads((tmp / "fc.json").read_text())
    assert set(summary["sets"]) == {"real", "generated"}
    # one panel per set: its measured (log peak, Delta+) points and its numbers in the title
    points = F.flux_points(pd.read_csv(tmp / "real.csv"), source="real.csv")
    axes = panels(saved_figures["fc.png"])
    assert len(axes) == 2 and len(points) >= 3
    for ax, name in zip(axes, ("real", "generated")):
        shown = ax.collections[0].get_offsets()
        np.testing.assert_allclose(np.sort(shown[:, 0]), np.sort(points["log_peak"]))
        np.testing.assert_allclose(np.sort(shown[:, 1]), np.sort(points["delta_plus"]))
        assert ax.get_title().startswith(f"{name} (n={len(points)})")
        assert f"rho={summary['sets'][name]['spearman_rho']:.3f}" in ax.get_title()
    assert axes[0].get_yscale() == "log"


def test_sets_without_peak_flux_are_rejected(tmp_path):
    table = pd.DataFrame({c: [np.nan] for c in P.RESULT_COLUMNS})
    table["status"] = "ok"
    table.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputFileError, match="peak flux"):
        F.flux_conditioning({"real": tmp_path / "t.csv"}, reference="real",
                            output_json=tmp_path / "o.json", seed=1)
