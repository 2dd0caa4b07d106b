"""W1 / KS distances, size-matched partitions and floors, the Frechet distance and the KID."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from astropy.io import fits

from radiogen.errors import RadiogenError
from radiogen.evaluation.distances import (
    frechet_distance,
    gaussian_fit,
    kernel_inception_distance,
    ks_statistic,
    mmd2_unbiased,
    one_d_distances,
    polynomial_kernel,
    size_matched,
    size_matched_splits,
)


@pytest.fixture(scope="module")
def lotss_pixels(lotss_dr1_dir):
    """Real LoTSS DR1 pixel values (Jy/beam) of the 400x400 mosaic piece."""
    data = fits.getdata(lotss_dr1_dir / "P205+55_400px.fits").astype(np.float64)
    return data[np.isfinite(data)].ravel()


def test_one_d_distances_match_scipy_on_real_pixels(lotss_pixels):
    a, b = lotss_pixels[:40000], lotss_pixels[80000:120000]
    d = one_d_distances(a, b)
    assert d["w1"] == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12)
    assert d["ks"] == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, rel=1e-12)
    # Ties (pixel values are often repeated) and unequal sizes: still scipy's statistic.
    rng = np.random.default_rng(0)
    ta, tb = rng.integers(0, 5, 300).astype(float), rng.integers(0, 6, 170).astype(float)
    assert ks_statistic(ta, tb) == pytest.approx(scipy.stats.ks_2samp(ta, tb).statistic, rel=1e-12)
    assert "ks_pvalue" not in d  # pixels within an image are correlated: no p-value (module docstring)
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


def test_size_matched_splits_partition_the_real_set_and_subsample_the_others():
    splits = size_matched_splits(11, [4, 30], repeats=3, seed=5)
    assert len(splits) == 3
    for split in splits:
        # m = min(4, 30, 11 // 2) = 4: A has 7 real rows, B 4, each compared set 4.
        assert split.reference.size == 7 and split.held_out.size == 4
        assert set(split.reference).isdisjoint(split.held_out)
        assert set(split.reference) | set(split.held_out) == set(range(11))
        np.testing.assert_array_equal(split.others[0], np.arange(4))  # a set of m rows is used whole
        assert split.others[1].size == 4 and len(set(split.others[1])) == 4 and split.others[1].max() < 30
    # Seeded, and the partitions differ between repeats.
    again = size_matched_splits(11, [4, 30], repeats=3, seed=5)
    for a, b in zip(splits, again):
        np.testing.assert_array_equal(a.held_out, b.held_out)
        np.testing.assert_array_equal(a.others[1], b.others[1])
    assert len({tuple(s.held_out) for s in size_matched_splits(1000, [100], repeats=5, seed=1)}) == 5
    # A compared set larger than half the real set: m = N // 2, so A is never smaller than B.
    big = size_matched_splits(9, [50], repeats=1, seed=0)[0]
    assert big.held_out.size == 4 and big.reference.size == 5 and big.others[0].size == 4
    with pytest.raises(RadiogenError, match="size-match"):
        size_matched_splits(1, [5], repeats=1, seed=0)
    with pytest.raises(RadiogenError, match="repeats"):
        size_matched_splits(10, [5], repeats=0, seed=0)


def test_size_matched_floor_is_unbiased_at_unequal_sizes():
    """Two independent draws of one distribution, N = 1392 real, M = 400 or 100 "generated".

    Under the null hypothesis W1 and KS scale as sqrt(1/n_a + 1/n_b): the
    size-matched ratio is about 1, and the floor has the Kolmogorov scale
    E[D] ~ sqrt(pi/2) ln 2 sqrt(1/n_a + 1/n_b) at the matched sizes.  The
    old design (all N real vs M generated over two halves of N/2) is biased,
    by a factor ~2 at M = 100.
    """
    def metric(a, b):
        return one_d_distances(a, b)

    for m in (400, 100):
        ratios, floors, halves = [], [], []
        for seed in range(20):
            rng = np.random.default_rng([m, seed])
            real, gen = rng.lognormal(0.0, 1.0, 1392), rng.lognormal(0.0, 1.0, m)
            result = size_matched(metric, real, [gen], repeats=10, seed=seed)
            assert result["n_reference"] == 1392 - m and result["n_compared"] == m
            ratios.append([np.median(result["others"][0][k]) / np.median(result["floor"][k]) for k in ("w1", "ks")])
            floors.append(np.median(result["floor"]["ks"]))
            order = rng.permutation(1392)
            halves.append(one_d_distances(real, gen)["ks"] / one_d_distances(real[order[:696]], real[order[696:]])["ks"])
        assert np.all((np.median(ratios, axis=0) > 0.8) & (np.median(ratios, axis=0) < 1.25)), (m, np.median(ratios, axis=0))
        kolmogorov = np.sqrt(np.pi / 2) * np.log(2) * np.sqrt(1 / (1392 - m) + 1 / m)
        assert np.median(floors) == pytest.approx(kolmogorov, rel=0.15)
        if m == 100:
            assert np.median(halves) > 1.5  # what the halves floor reported for an indistinguishable set


def test_size_matched_rows_follow_dicts():
    data = {"x": np.arange(10.0), "y": np.arange(10.0) * 2}
    seen = []

    def metric(a, b):
        np.testing.assert_array_equal(a["y"], 2 * a["x"])  # rows of every array stay aligned
        seen.append((a["x"].size, b["x"].size))
        return {"n": float(b["x"].size)}

    result = size_matched(metric, data, [{"x": np.zeros(3), "y": np.zeros(3)}], repeats=2, seed=0)
    assert seen == [(7, 3)] * 4 and list(result["floor"]["n"]) == [3.0, 3.0]
    with pytest.raises(RadiogenError, match="differ in length"):
        size_matched(metric, {"x": np.zeros(4), "y": np.zeros(5)}, [data], repeats=1, seed=0)


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


def test_frechet_of_singular_covariances_is_exact_and_symmetric():
    """8 images in 512-d embeddings (rank-7 covariances): real, symmetric, 0 for a set with itself."""
    rng = np.random.default_rng(11)
    a = rng.normal(size=(8, 512)) @ rng.normal(size=(512, 512)) * 0.05
    b = a[::-1] + rng.normal(0, 0.5, size=a.shape)
    fit_a, fit_b = gaussian_fit(a), gaussian_fit(b)
    fd = frechet_distance(*fit_a, *fit_b)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance(*fit_b, *fit_a) == pytest.approx(fd, rel=1e-6)
    assert frechet_distance(*fit_a, *fit_a) == pytest.approx(0.0, abs=1e-8 * np.trace(fit_a[1]))
    with pytest.raises(RadiogenError, match="negative eigenvalue"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_frechet_shape_mismatch_is_an_error():
    with pytest.raises(RadiogenError, match="inconsistent"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_mmd2_unbiased_matches_the_definition():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(5, 3))

    def k(u, v):
        return (u @ v / 3 + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / (7 * 5)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    assert polynomial_kernel(x, y)[2, 3] == pytest.approx(k(x[2], y[3]))
    with pytest.raises(RadiogenError, match="samples"):
        mmd2_unbiased(x, y[:, :2])


def test_kid_is_unbiased_on_equal_distributions_and_positive_on_shifted_ones():
    rng = np.random.default_rng(6)
    same = np.array([kernel_inception_distance(rng.normal(size=(150, 16)), rng.normal(size=(100, 16)), rng=rng)
                     for _ in range(200)])
    se = same.std(ddof=1) / np.sqrt(same.size)
    assert abs(same.mean()) < 3 * se  # expectation 0 at any set size ...
    assert (same < 0).mean() > 0.2  # ... so single values are often negative
    shifted = np.array([kernel_inception_distance(rng.normal(size=(150, 16)), rng.normal(0.3, 1.0, size=(100, 16)), rng=rng)
                        for _ in range(50)])
    assert shifted.mean() > 10 * shifted.std(ddof=1) / np.sqrt(shifted.size) and np.all(shifted > 0)
    # Subsets (sets larger than subset_size) keep it unbiased.
    sub = np.array([kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(300, 8)), subset_size=100,
                                              subsets=4, rng=rng) for _ in range(100)])
    assert abs(sub.mean()) < 3 * sub.std(ddof=1) / np.sqrt(sub.size)
    with pytest.raises(RadiogenError, match="subset"):
        kernel_inception_distance(np.zeros((3, 2)), np.zeros((3, 2)), subsets=0, rng=rng)


def test_feature_distances_cli_with_floor_and_classical(tmp_path):
    import h5py
    import pandas as pd

    from radiogen.cli import main
    from radiogen import seeds
    from radiogen.evaluation.summary import feature_distance_table

    rng = np.random.default_rng(3)
    sets = {"real": rng.normal(0, 1, (300, 3)), "gen": rng.normal(0.3, 1, (200, 3)), "cla": rng.normal(1.0, 2, (250, 3))}
    for name, emb in sets.items():
        with h5py.File(tmp_path / f"{name}.h5", "w") as h5:
            h5["embeddings"] = emb.astype(np.float32)
            h5["probabilities"] = np.full((len(emb), 4), 0.25, dtype=np.float32)
            h5["predicted"] = np.zeros(len(emb), dtype=np.int64)
            h5["label"] = np.full(len(emb), -1, dtype=np.int64)
    settings = '{"floor_repeats": 4, "kid_subset_size": 1000, "kid_subsets": 5}'
    assert main(["evaluate", "feature-distances", "--real", str(tmp_path / "real.h5"), "--generated", str(tmp_path / "gen.h5"),
                 "--classical", str(tmp_path / "cla.h5"), "--settings", settings, "--seed", "4",
                 "--output", str(tmp_path / "fd.csv")]) == 0
    table = pd.read_csv(tmp_path / "fd.csv").set_index("metric")
    assert list(table.index) == ["Frechet", "KID"]
    # m = min(200, 250, 300 // 2) = 150 images of each set against the other 150 real ones, 4 partitions.
    assert set(table["n_reference"]) == {150} and set(table["n_compared"]) == {150} and set(table["repeats"]) == {4}
    f32 = {k: v.astype(np.float32) for k, v in sets.items()}
    expected = feature_distance_table(f32["real"], f32["gen"], classical=f32["cla"], repeats=4,
                                      seed=seeds.integer(4, "evaluation.feature_partitions"), kid_subsets=5).set_index("metric")
    # The CLI names the real set by its scores file's source and rows (none recorded in these hand-made files).
    assert (table["reference"] == f"{tmp_path / 'real.h5'}, rows not recorded").all()
    pd.testing.assert_frame_equal(table.drop(columns="reference"), expected.drop(columns="reference"), check_dtype=False)
    for metric in ("Frechet", "KID"):
        row = table.loc[metric]
        assert row["real_vs_real_floor"] < row["real_vs_generated"] < row["real_vs_classical"]
    assert abs(table.loc["KID", "real_vs_real_floor"]) < 3 * table.loc["KID", "floor_sd"]  # about 0: unbiased


def _frechet_z(real, generated) -> float:
    from radiogen.evaluation.summary import feature_distance_table, summary_table

    table = summary_table(None, feature_distance_table(real, generated, repeats=10, seed=7))
    return float(table.loc[table["metric"] == "Frechet", "generated_floor_z"].item())


def test_frechet_z_is_calibrated_with_fewer_images_than_dimensions():
    """Two Gaussian samples of one distribution at n << D: the Frechet z stays small; a mean shift makes it large.

    24 real and 12 "generated" draws of N(0, diag(1/i)) in D = 256, 12 seeds:
    in all D dimensions the plug-in distance is dominated by each set's own
    covariance trace, which partitions of one real pool keep nearly fixed, so
    its z had an rms of 1.69 and reached 4.77 (measured).  In the reference's
    principal components it is calibrated (measured: rms 0.92, max |z| 2.01).
    """
    dim = 256
    scale = np.sqrt(1.0 / np.arange(1, dim + 1))
    null, shifted = [], []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        real = rng.standard_normal((24, dim)) * scale
        generated = rng.standard_normal((12, dim)) * scale
        null.append(_frechet_z(real, generated))
        shifted.append(_frechet_z(real, generated + 2.0 * scale * (np.arange(dim) < 4)))
    null = np.array(null)
    assert np.all(np.abs(null) < 3), null
    assert np.sqrt(np.mean(null**2)) < 1.4, null
    assert np.all(np.array(shifted) > 5), shifted
