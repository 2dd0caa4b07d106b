"""Image statistics: per-image numbers, pixel histograms, Poisson intervals, figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from astropy.stats import poisson_conf_interval

from radiogen.errors import InputFileError
from radiogen.evaluation import stats as S
from radiogen.evaluation.imagesets import open_image_set
from figures import panels
from test_pybdsf import first_crops, write_image_set


def test_poisson_interval_matches_astropy_and_known_values():
    counts = np.array([0, 1, 2, 5, 10, 100, 1000])
    lower, upper = S.poisson_interval(counts)
    ref = poisson_conf_interval(counts, interval="frequentist-confidence", sigma=1)
    np.testing.assert_allclose(lower, ref[0])
    np.testing.assert_allclose(upper, ref[1])
    # Garwood (1936) 68.27% bounds: n=0 -> [0, 1.841], n=1 -> [0.173, 3.300]
    assert lower[0] == 0 and upper[0] == pytest.approx(1.8410, abs=1e-3)
    assert lower[1] == pytest.approx(0.1727, abs=1e-3)
    assert upper[1] == pytest.approx(3.2995, abs=1e-3)
    # large n: close to n +- sqrt(n)
    assert upper[-1] - 1000 == pytest.approx(np.sqrt(1000), rel=0.05)


def test_histogram_density_scales_bounds_like_counts():
    rng = np.random.default_rng(0)
    values = rng.normal(size=500)
    edges = np.linspace(-4, 4, 17)
    hist = S.histogram_with_errors(values, edges)
    widths = np.diff(edges)
    assert np.sum(hist["height"] * widths) == pytest.approx(1.0)
    scale = 1 / (500 * widths)
    lower, upper = S.poisson_interval(hist["counts"])
    np.testing.assert_allclose(hist["lower"], lower * scale)
    np.testing.assert_allclose(hist["upper"], upper * scale)
    assert np.all(hist["lower"] <= hist["height"]) and np.all(hist["height"] <= hist["upper"])
    raw = S.histogram_with_errors(values, edges, density=False)
    np.testing.assert_array_equal(raw["height"], raw["counts"])


def test_shared_bins_cover_all_sets():
    a, b = np.array([0.1, 0.5]), np.array([0.3, 2.0, np.nan])
    edges = S.shared_bins(a, b, bins=10)
    assert edges[0] == 0.1 and edges[-1] == 2.0 and len(edges) == 11
    log_edges = S.shared_bins(a, b, bins=4, log=True)
    assert np.allclose(np.diff(np.log(log_edges)), np.log(20) / 4)


def test_set_statistics_and_figure(first_fits_dir, tmp_path, saved_figures):
    crops, _ = first_crops(first_fits_dir, n=8)
    real = write_image_set(tmp_path / "real.h5", crops[:5], dataset="first")
    other = write_image_set(tmp_path / "gen.h5", crops[5:] ** 2, dataset="first")
    sets = {}
    for name, path in (("real", real), ("generated", other)):
        table = S.compute_set_statistics(path, output_csv=tmp_path / f"{name}.csv",
                                         output_pixels=tmp_path / f"{name}.json", block=2)
        with open_image_set(path) as image_set:
            images = image_set.images()
        np.testing.assert_allclose(table["mean"], images.reshape(len(images), -1).mean(1),
                                   rtol=1e-6)
        np.testing.assert_allclose(table["std"], images.reshape(len(images), -1).std(1),
                                   rtol=1e-5)
        assert list(table["index"]) == list(range(len(images)))
        pixels = json.loads((tmp_path / f"{name}.json").read_text())
        assert sum(pixels["counts"]) == images.size
        # FIRST-style images: clipped background -> a spike of exact zeros in the first bin
        assert pixels["counts"][0] > 0.5 * images.size
        sets[name] = (tmp_path / f"{name}.csv", tmp_path / f"{name}.json")
    result = S.image_statistics_figure(sets, tmp_path / "fig.png", bins=10, pixel_bins=20)
    assert (tmp_path / "fig.png").exists()
    # the panels draw the returned histograms, one step line per set
    for ax, quantity in zip(panels(saved_figures["fig.png"]), ("pixels", "mean", "std")):
        for line, label in zip(ax.get_lines(), ("real", "generated"), strict=True):
            hist = result[quantity][label]
            assert line.get_label() == f"{label} (n={int(hist['total'])})"
            np.testing.assert_allclose(line.get_xdata(), hist["edges"])
            np.testing.assert_allclose(line.get_ydata()[:-1], hist["height"])
    # and they are numpy's histograms of the per-image values
    for quantity in ("mean", "std"):
        for label in ("real", "generated"):
            values = pd.read_csv(sets[label][0])[quantity]
            edges = result[quantity][label]["edges"]
            np.testing.assert_array_equal(result[quantity][label]["counts"], np.histogram(values, edges)[0])
    assert result["pixels"]["real"]["total"] == 5 * 80 * 80
    # mean and std histograms share their bins between sets
    np.testing.assert_array_equal(result["mean"]["real"]["edges"],
                                  result["mean"]["generated"]["edges"])


def test_bad_image_set_errors(tmp_path):
    bad = write_image_set(tmp_path / "bad.h5", np.full((2, 8, 8), 3.0), dataset="first")
    with open_image_set(bad) as image_set:
        with pytest.raises(InputFileError, match="expected images scaled to"):
            image_set.images()
    with pytest.raises(InputFileError, match="does not exist"):
        open_image_set(tmp_path / "missing.h5")
    write_image_set(tmp_path / "x.h5", np.zeros((1, 8, 8)), dataset="vlass")
    with pytest.raises(InputFileError, match="attribute 'dataset'"):
        open_image_set(tmp_path / "x.h5")
