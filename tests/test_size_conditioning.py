"""Size conditioning of the LoTSS model: context round trip, joint draws, checks, measurement."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from radiogen.errors import ConfigError, InputFileError
from radiogen.evaluation.size import measured_sizes, size_agreement, size_conditioning
from radiogen.model import load_model
from radiogen.sampler import conditioning as cond
from radiogen.sampler import generate, shards
from tiny_models import SIZE_NORM, save_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"size": save_tiny_model(folder / "size.pt", "lotss", with_size=True),
            "flux": save_tiny_model(folder / "flux.pt", "lotss")}


def test_size_context_round_trip_through_the_model_file(models):
    _net, meta = load_model(models["size"])
    assert cond.context_names(meta) == ["peak_flux", "size"]
    assert meta["size_normalisation"] == pytest.approx(SIZE_NORM)
    sizes = np.array([3.0, 10.0, 45.0, 120.0])
    z = cond.size_to_context(sizes, meta)
    np.testing.assert_allclose(z, (np.log(sizes) - np.log(10.0)) / 1.15, rtol=1e-12)
    np.testing.assert_allclose(cond.context_to_size(z, meta), sizes, rtol=1e-12)
    arrays = generate.conditioning(meta, {"conditioning": "list", "peak_flux": [0.01, 0.1],
                                          "size": [5.0, 50.0]}, np.arange(4), seed=0)
    assert arrays["context"].shape == (4, 2)
    np.testing.assert_allclose(arrays["size"], [5.0, 50.0, 5.0, 50.0], rtol=1e-5)
    np.testing.assert_allclose(arrays["peak_flux"], [0.01, 0.1, 0.01, 0.1], rtol=1e-5)
    ranged = generate.conditioning(meta, {"conditioning": "range", "peak_flux_range": [0.01, 0.1],
                                          "size_range": [4.0, 40.0]}, np.arange(200), seed=1)
    assert ranged["size"].min() >= 4.0 * 0.9999 and ranged["size"].max() <= 40.0 * 1.0001
    # flat in log size: the median is the geometric mean of the range
    assert np.median(ranged["size"]) == pytest.approx(np.sqrt(160.0), rel=0.2)


def test_joint_draw_keeps_a_known_correlation():
    rng = np.random.default_rng(0)
    x, y = rng.multivariate_normal([0, 0], [[1.0, 0.7], [0.7, 1.0]], size=200_000).T
    counts, ex, ey = np.histogram2d(x, y, bins=40, range=[[-4, 4], [-4, 4]])
    rngs = [cond.image_rng(3, cond.CONTEXT_STREAM, i) for i in range(4000)]
    draws = cond.joint_histogram_draws([ex, ey], counts, rngs)
    assert np.corrcoef(draws.T)[0, 1] == pytest.approx(0.7, abs=0.04)
    again = cond.joint_histogram_draws([ex, ey], counts, [cond.image_rng(3, cond.CONTEXT_STREAM, i)
                                                          for i in range(4000)])
    np.testing.assert_array_equal(draws, again)


def test_histogram_mode_draws_flux_and_size_jointly_from_the_model(models):
    _net, meta = load_model(models["size"])
    arrays = generate.conditioning(meta, {"conditioning": "histogram"}, np.arange(2000), seed=4)
    rho = stats.spearmanr(arrays["peak_flux"], arrays["size"]).statistic
    assert rho > 0.5  # the tiny model's 2-D histogram is concentrated on the diagonal


def test_a_context_that_does_not_match_the_model_is_refused(models, tmp_path):
    _net, flux_meta = load_model(models["flux"])
    with pytest.raises(ConfigError, match="conditioned on peak flux only"):
        generate.conditioning(flux_meta, {"conditioning": "list", "peak_flux": [0.1], "size": [10.0]},
                              [0], seed=0)
    with pytest.raises(InputFileError, match="conditioned on peak_flux, but the config asks for peak_flux\\+size"):
        generate.check_model_kind(flux_meta, "flux.pt", dataset="lotss", context="peak_flux+size")
    _net, size_meta = load_model(models["size"])
    with pytest.raises(InputFileError, match="conditioned on peak_flux\\+size, but the config asks for peak_flux"):
        generate.check_model_kind(size_meta, "size.pt", dataset="lotss", context="peak_flux")
    with pytest.raises(ConfigError, match="needs a list"):
        generate.conditioning(size_meta, {"conditioning": "list", "peak_flux": [0.1]}, [0], seed=0)
    with pytest.raises(ConfigError, match="size_range"):
        generate.conditioning(size_meta, {"conditioning": "range", "peak_flux_range": [0.01, 0.1]}, [0], seed=0)


def test_sample_shard_of_a_size_model_records_the_sizes(models, tmp_path):
    torch.set_num_threads(1)
    out = shards.write_shard(models["size"], tmp_path / "shard.h5", shard=0, seed=2, guidance=0.0,
                               settings={"n_images": 3, "conditioning": "list", "peak_flux": [0.05],
                                         "size": [8.0, 30.0, 60.0]},
                               sampler={"num_steps": 2}, images_per_shard=3, device="cpu",
                               expect_dataset="lotss", expect_context="peak_flux+size")
    with h5py.File(out) as h5:
        np.testing.assert_allclose(h5["size"][()], [8.0, 30.0, 60.0], rtol=1e-5)
        assert h5["context"].shape == (3, 2)
        assert h5.attrs["size_boxcox_std"] == pytest.approx(1.15)


def _blob_images(lengths_px, *, size=80, rng):
    gy, gx = np.mgrid[:size, :size]
    images = []
    for length in lengths_px:
        image = np.maximum(rng.standard_normal((size, size)) * 0.01, 0.0)
        for t in np.linspace(-length / 2, length / 2, 40):  # a line of beams: a jet of known length
            image += 0.3 * np.exp(-((gx - size // 2 - t) ** 2 + (gy - size // 2) ** 2) / (2 * 1.7**2))
        images.append(image / image.max())
    return np.array(images)


def test_measured_size_follows_the_true_extent():
    rng = np.random.default_rng(0)
    lengths = np.array([4.0, 10.0, 20.0, 30.0, 40.0])
    sizes = measured_sizes(_blob_images(lengths, rng=rng), pixel_scale_arcsec=1.5)
    assert np.all(np.diff(sizes) > 0)
    # extent = length + about two beam half widths above 3 rms
    np.testing.assert_allclose(sizes / 1.5 - lengths, np.full(5, sizes[2] / 1.5 - lengths[2]), atol=2.5)
    agreement = size_agreement(sizes, lengths * 1.5)
    assert agreement["spearman_rho"] == pytest.approx(1.0) and agreement["n"] == 5


def test_size_conditioning_writes_the_agreement_of_each_set(tmp_path):
    rng = np.random.default_rng(1)
    lengths = rng.uniform(5, 40, 30)
    for name, requested in (("real", lengths * 1.5), ("generated", rng.permutation(lengths) * 1.5)):
        with h5py.File(tmp_path / f"{name}.h5", "w") as h5:
            h5["images"] = _blob_images(lengths, rng=rng).astype(np.float32)
            h5["size"] = requested.astype(np.float32)
            h5["peak_flux"] = rng.uniform(0.001, 0.1, lengths.size).astype(np.float32)
            h5.attrs["pixel_scale_arcsec"] = 1.5
    summary = size_conditioning({"real": tmp_path / "real.h5", "generated": tmp_path / "generated.h5"},
                                tmp_path / "s.json", tmp_path / "s.png", seed=0)
    assert summary["real"]["spearman_rho"] > 0.95
    assert abs(summary["generated"]["spearman_rho"]) < 0.5  # sizes unrelated to the request
    assert (tmp_path / "s.png").stat().st_size > 1000
