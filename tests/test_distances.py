"""W1 / KS distances, seeded halves and the Frechet distance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from astropy.io import fits

from radiogen.errors import RadiogenError
from radiogen.evaluation.distances import frechet_distance, gaussian_fit, one_d_distances, split_halves


@pytest.fixture(scope="module")
def lotss_pixels(lotss_dr1_dir):
    """Real LoTSS DR1 pixel values (Jy/beam) of the 400x400 mosaic piece."""
    data = fits.getdata(lotss_dr1_dir / "P205+55_400px.fits").astype(np.float64)
    return data[np.isfinite(data)].ravel()


def test_one_d_distances_match_scipy_on_real_pixels(lotss_pixels):
    a, b = lotss_pixels[:40000], lotss_pixels[80000:120000]
    d = one_d_distances(a, b)
    assert d["w1"] == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12)
    ks = scipy.stats.ks_2samp(a, b)
    assert d["ks"] == pytest.approx(ks.statistic) and d["ks_pvalue"] == pytest.approx(ks.pvalue)
    assert d["n_a"] == a.size and d["n_b"] == b.size
    # A shift by c moves every quantile by c: W1 = |c|; KS is large.
    shifted = one_d_distances(a, a + 1e-3)
    assert shifted["w1"] == pytest.approx(1e-3, rel=1e-9)
    assert one_d_distances(a, a)["w1"] == 0.0 and one_d_distances(a, a)["ks"] == 0.0


def test_non_finite_values_are_dropped_and_empty_is_an_error():
    d = one_d_distances([1.0, np.nan, 2.0], [1.0, 2.0, np.inf])
    assert d["n_a"] == 2 and d["n_b"] == 2 and d["w1"] == 0.0
    with pytest.raises(RadiogenError, match="no finite values"):
        one_d_distances([np.nan], [1.0], name="model flux")


def test_split_halves_disjoint_seeded_complete():
    a, b = split_halves(11, seed=5)
    assert len(a) == 5 and len(b) == 6
    assert set(a).isdisjoint(b) and set(a) | set(b) == set(range(11))
    a2, _ = split_halves(11, seed=5)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(split_halves(1000, seed=1)[0], split_halves(1000, seed=2)[0])


def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    mu, cov = gaussian_fit(x)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)


def test_frechet_matches_closed_form():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(4, 4))
    cov_a = m @ m.T + np.eye(4)
    cov_b = np.diag([1.0, 2.0, 3.0, 4.0])
    mu_a, mu_b = np.arange(4.0), np.ones(4)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(mu_a, cov_a, mu_b, cov_b) == pytest.approx(expected, rel=1e-9)
    # Commuting (diagonal) covariances: Tr(C_a + C_b - 2 sqrt(C_a C_b)) = sum (sqrt(a) - sqrt(b))^2.
    da, db = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    fd = frechet_distance(np.zeros(3), np.diag(da), np.full(3, 2.0), np.diag(db))
    assert fd == pytest.approx(12.0 + np.sum((np.sqrt(da) - np.sqrt(db)) ** 2))
    # One dimension: FD = (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9.0 + 1.0)


def test_frechet_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 64)), rng.normal(0.5, 1.0, size=(20, 64))
    fd = frechet_distance(*gaussian_fit(a), *gaussian_fit(b))
    assert np.isfinite(fd) and fd > 0


def test_frechet_shape_mismatch_is_an_error():
    with pytest.raises(RadiogenError, match="inconsistent"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_frechet_cli_with_noise_floor_and_classical(tmp_path):
    import h5py

    from radiogen.cli import main
    from radiogen.cli.evaluate import SEED_OFFSETS

    rng = np.random.default_rng(3)
    sets = {"real": rng.normal(0, 1, (300, 3)), "gen": rng.normal(0.3, 1, (200, 3)), "cla": rng.normal(1.0, 2, (200, 3))}
    for name, emb in sets.items():
        with h5py.File(tmp_path / f"{name}.h5", "w") as h5:
            h5["embeddings"] = emb.astype(np.float32)
            h5["probabilities"] = np.full((len(emb), 4), 0.25, dtype=np.float32)
            h5["predicted"] = np.zeros(len(emb), dtype=np.int64)
            h5["label"] = np.full(len(emb), -1, dtype=np.int64)
    assert main(["evaluate-frechet", "--real", str(tmp_path / "real.h5"), "--generated", str(tmp_path / "gen.h5"),
                 "--classical", str(tmp_path / "cla.h5"), "--seed", "4", "--output", str(tmp_path / "fd.json")]) == 0
    import json

    result = json.loads((tmp_path / "fd.json").read_text())
    f32 = {k: v.astype(np.float32) for k, v in sets.items()}
    assert result["generated"] == pytest.approx(frechet_distance(*gaussian_fit(f32["real"]), *gaussian_fit(f32["gen"])), rel=1e-6)
    assert result["classical"] == pytest.approx(frechet_distance(*gaussian_fit(f32["real"]), *gaussian_fit(f32["cla"])), rel=1e-6)
    a, b = split_halves(300, seed=4 + SEED_OFFSETS["halves"])
    assert result["real_halves"] == pytest.approx(frechet_distance(*gaussian_fit(f32["real"][a]), *gaussian_fit(f32["real"][b])), rel=1e-6)
    assert result["real_halves"] < result["generated"] < result["classical"]
