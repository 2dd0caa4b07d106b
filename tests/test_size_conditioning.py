"""Size conditioning of the LoTSS model: context round trip, joint draws, checks, measurement."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from scipy import stats

from radiogen.errors import ConfigError, InputFileError
from radiogen.evaluation import size
from radiogen.evaluation.size import measured_sizes, size_agreement, size_conditioning
from radiogen.model import load_model
from radiogen.sampler import conditioning as cond
from radiogen.sampler import generate, shards
from figures import panels
from tiny_models import NORM, SIZE_NORM, save_tiny_model


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


def test_size_conditioning_writes_the_agreement_of_each_set(tmp_path, saved_figures):
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
    # one requested-vs-measured panel per set (plus its colour bar), the numbers in its title
    axes = [ax for ax in panels(saved_figures["s.png"]) if ax.get_title()]
    assert [ax.get_title().split(":")[0] for ax in axes] == ["real", "generated"]
    for ax, name in zip(axes, ("real", "generated")):
        assert f"rho {summary[name]['spearman_rho']:.2f}" in ax.get_title()
        shown = ax.collections[0].get_offsets()
        assert len(shown) == summary[name]["n"] > 20
        with h5py.File(tmp_path / f"{name}.h5") as h5:
            requested = h5["size"][:]
        assert np.isin(np.asarray(shown[:, 0], dtype=np.float32), requested).all()
    np.testing.assert_allclose(np.sort(axes[0].collections[0].get_offsets()[:, 0]),
                               np.sort(axes[1].collections[0].get_offsets()[:, 0]), rtol=1e-6)


def test_the_feret_size_of_a_point_source_grows_with_its_snr():
    """Why raw rho proves nothing: the 3-sigma contour of an unresolved source widens with S/N."""
    from scipy.ndimage import gaussian_filter

    from radiogen.lotss.preprocess import scale_images

    rng = np.random.default_rng(0)
    gy, gx = np.mgrid[:80, :80]
    sigma_px = 6.0 / 1.5 / 2.3548  # 6" beam at 1.5"/px
    beam = np.exp(-((gx - 40) ** 2 + (gy - 40) ** 2) / (2 * sigma_px**2))
    medians = []
    for snr in (10, 100, 1000):
        noise = [gaussian_filter(rng.standard_normal((80, 80)), sigma_px) for _ in range(12)]
        scaled, _ = scale_images(np.array([snr * beam + n / n.std() for n in noise]))
        medians.append(np.median(measured_sizes(scaled, pixel_scale_arcsec=1.5)))
    print("median Feret size at S/N 10, 100, 1000:", np.round(medians, 1))
    assert np.all(np.diff(medians) > 2.0)  # measured: 9.6, 15.1, 19.0 arcsec
    assert 7.5 < medians[0] < 11.0 and 16.0 < medians[2] < 21.0


# --- the size response controlled for flux -------------------------------------------------------

def _flux_driven_sizes(n, *, responsive, seed=0):
    """(peak flux, requested, measured): sizes requested jointly with flux, measured from flux only
    (a model that ignores the size request) or from the request (a model that follows it)."""
    rng = np.random.default_rng(seed)
    log_flux = rng.normal(-2.0, 0.6, n)  # log10 Jy/beam
    requested = 10 ** (1.0 + 0.4 * (log_flux + 2.0) + rng.normal(0, 0.2, n))  # arcsec, bright = large
    if responsive:
        measured = requested * 10 ** rng.normal(0, 0.1, n)
    else:  # the 3-sigma extent grows with S/N only
        measured = 10 ** (0.9 + 0.3 * (log_flux + 2.0) + rng.normal(0, 0.1, n))
    return 10**log_flux, requested, measured


def test_partial_spearman_is_the_correlation_of_rank_residuals():
    flux, requested, measured = _flux_driven_sizes(500, responsive=False, seed=3)
    rho, p = size.partial_spearman(measured, requested, np.log10(flux))
    ranks = [stats.rankdata(v) for v in (measured, requested, flux)]
    design = np.column_stack([np.ones(500), ranks[2]])
    residuals = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in ranks[:2]]
    assert rho == pytest.approx(np.corrcoef(*residuals)[0, 1], abs=1e-12)
    t = rho * np.sqrt(497 / (1 - rho**2))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 497), rel=1e-9)
    # monotonic transforms of the control change nothing
    assert size.partial_spearman(measured, requested, flux)[0] == pytest.approx(rho, abs=1e-12)


def test_a_size_blind_model_has_raw_rho_from_flux_but_no_partial_rho():
    flux, requested, measured = _flux_driven_sizes(2000, responsive=False)
    blind = size.size_agreement(measured, requested, flux, flux_bins=10, n_shuffles=500,
                                rng=np.random.default_rng(1))
    assert blind["spearman_rho"] > 0.3 and blind["spearman_p"] < 1e-10  # the naive reading: "it follows"
    assert blind["spearman_rho_requested_flux"] > 0.5 and blind["spearman_rho_measured_flux"] > 0.8
    assert abs(blind["partial_spearman_rho"]) < 0.07  # standard error 1/sqrt(2000) = 0.022
    assert blind["partial_spearman_p"] > 0.001
    # the flux-bin null keeps the flux-driven correlation: its mean is near the raw rho
    assert blind["null_rho_mean"] > 0.25 and abs(blind["null_z"]) < 3.5 and blind["null_p"] > 0.001
    flux, requested, measured = _flux_driven_sizes(2000, responsive=True)
    follows = size.size_agreement(measured, requested, flux, flux_bins=10, n_shuffles=500,
                                  rng=np.random.default_rng(1))
    assert follows["partial_spearman_rho"] > 0.8 and follows["partial_spearman_p"] < 1e-10
    assert follows["null_z"] > 20 and follows["null_p"] == pytest.approx(1 / 501)


def test_the_shuffle_null_is_seeded_and_permutes_within_flux_bins():
    flux, requested, measured = _flux_driven_sizes(300, responsive=False, seed=5)
    first = size.flux_bin_shuffle_null(measured, requested, flux, flux_bins=5, n_shuffles=200,
                                       rng=np.random.default_rng(7))
    again = size.flux_bin_shuffle_null(measured, requested, flux, flux_bins=5, n_shuffles=200,
                                       rng=np.random.default_rng(7))
    assert first == again
    # one bin: an ordinary permutation test, whose null is centred on 0 and loses the flux correlation
    plain = size.flux_bin_shuffle_null(measured, requested, flux, flux_bins=1, n_shuffles=400,
                                       rng=np.random.default_rng(7))
    assert abs(plain["null_mean"]) < 0.02 and plain["z"] > 5
    assert first["null_mean"] > 0.2 and abs(first["z"]) < 3.5


def test_evaluation_of_images_that_ignore_the_request_reports_partial_rho_near_zero(tmp_path):
    """End to end on images: jets whose length follows the flux, requests drawn jointly with it."""
    rng = np.random.default_rng(2)
    n = 240
    flux = 10 ** rng.uniform(-3, -1, n)
    lengths = 4.0 + 12.0 * (np.log10(flux) + 3) + rng.normal(0, 1.0, n)  # px, longer when brighter
    requested = 1.5 * (4.0 + 12.0 * (np.log10(flux) + 3)) * 10 ** rng.normal(0, 0.15, n)
    for name in ("real", "generated"):
        with h5py.File(tmp_path / f"{name}.h5", "w") as h5:
            h5["images"] = _blob_images(lengths, rng=rng).astype(np.float32)
            h5["size"] = requested.astype(np.float32)
            h5["peak_flux"] = flux.astype(np.float32)
            h5.attrs["pixel_scale_arcsec"] = 1.5
    json_path = tmp_path / "s.json"
    summary = size_conditioning({"real": tmp_path / "real.h5", "generated": tmp_path / "generated.h5"},
                                json_path, tmp_path / "s.png", seed=4, settings={"n_shuffles": 300})
    blind = summary["generated"]
    assert blind["n"] == n and blind["spearman_rho"] > 0.7
    # standard error of the partial rho 1/sqrt(240) = 0.065
    assert abs(blind["partial_spearman_rho"]) < 0.25 and abs(blind["null_z"]) < 3.5
    written = json.loads(json_path.read_text())
    assert written["generated"]["partial_spearman_rho"] == pytest.approx(blind["partial_spearman_rho"])
    assert written["null"] == {"flux_bins": 10, "n_shuffles": 300, "seed": 4, "stream": "evaluation.size_null"}
    assert written["size_measure"]["size_source"] == "las" and written["size_measure"]["closing_px"] == 3
    again = size_conditioning({"real": tmp_path / "real.h5", "generated": tmp_path / "generated.h5"},
                              tmp_path / "t.json", tmp_path / "t.png", seed=4, settings={"n_shuffles": 300})
    assert again == summary
    with h5py.File(tmp_path / "real.h5", "a") as h5:
        h5.attrs["size_feret_settings"] = json.dumps({"closing_px": 0})
    with pytest.raises(InputFileError, match="real.h5: size_feret_settings: .*closing_px: must be >= 1"):
        size_conditioning({"real": tmp_path / "real.h5"}, tmp_path / "u.json", tmp_path / "u.png", seed=0)
    with pytest.raises(ConfigError, match="evaluation.size: unknown key\\(s\\) bins"):
        size_conditioning({"real": tmp_path / "real.h5"}, tmp_path / "u.json", tmp_path / "u.png", seed=0,
                          settings={"bins": 3})


# --- a size-conditioned model responds to its size context ------------------------------------------

def _write_toy_jets(path, *, n: int, seed: int) -> None:
    """16 x 16 LoTSS-like training set: a horizontal jet whose length (2-12 px) is set by the size context."""
    rng = np.random.default_rng(seed)
    z_size, z_flux = rng.uniform(-1.5, 1.5, n), rng.normal(0.0, 1.0, n)
    yy, xx = np.mgrid[:16, :16].astype(np.float64)
    images = []
    for z in z_size:
        length = 2.0 + 10.0 * (z + 1.5) / 3.0
        image = sum(np.exp(-((xx - 7.5 - t) ** 2 + (yy - 7.5) ** 2) / 2.0)
                    for t in np.linspace(-length / 2, length / 2, 20))
        image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, None)
        images.append((image - image.min()) / (image.max() - image.min()))
    with h5py.File(path, "w") as h5:
        h5["images"] = np.array(images, dtype=np.float32)
        h5["split"] = (np.arange(n) % 10 == 9).astype(np.uint8)
        h5["context"] = np.column_stack([z_flux, z_size]).astype(np.float32)
        h5.attrs.update(dataset="lotss", context_names=json.dumps(["peak_flux", "size"]), pixel_scale_arcsec=1.5,
                        beam_arcsec=6.0, frequency_hz=1.44e8, **NORM,
                        **{f"size_{k}": v for k, v in SIZE_NORM.items()})


@pytest.mark.usefixtures("one_torch_thread")
def test_for_fixed_noise_a_size_conditioned_model_changes_its_output_with_the_size_context(tmp_path):
    """Same latents and peak flux, only the size context differs: the trained model's images differ
    (longer jets for larger sizes); the untrained network, whose residual branches start at zero and
    so ignore every context, gives identical images, so the check can fail."""
    from radiogen.model import build_network
    from radiogen.model.train import train
    from tiny_models import TINY

    _write_toy_jets(tmp_path / "jets.h5", n=256, seed=0)
    settings = {"lr": 2e-3, "ema_decay": 0.99, "ema_rampup_ratio": 0.1, "p_mean": -1.2, "p_std": 1.2,
                "channels_last": False, "log_every": 1000, "val_sigmas": [0.1], "val_max_images": 8,
                "lotss": {"batch_size": 16, "steps": 100, "val_every": 10_000, "checkpoint_every": 10_000}}
    network = {k: v for k, v in TINY.items() if k not in ("image_channels", "image_size")}
    train(data_path=tmp_path / "jets.h5", out_path=tmp_path / "model.pt", train_settings=settings,
          model_settings={**network, "dropout": 0.0}, seed=1)
    net, meta = load_model(tmp_path / "model.pt")
    assert cond.context_names(meta) == ["peak_flux", "size"]
    net.eval()
    n = 16

    def images(network, z_size):
        context = np.column_stack([np.zeros(n), np.full(n, z_size)]).astype(np.float32)
        return generate.generate_images(network, meta, np.arange(n), seed=3, guidance=0.0,
                                        sampler={"num_steps": 8}, context=context)["images"]

    small, large, small_again = images(net, -1.5), images(net, 1.5), images(net, -1.5)
    np.testing.assert_array_equal(small, small_again)  # fixed noise: the same request gives the same images
    difference = np.abs(large - small).mean()
    print(f"mean |large - small| {difference:.4f}; bright pixels {(small > 0.5).sum((1, 2)).mean():.1f} "
          f"vs {(large > 0.5).sum((1, 2)).mean():.1f}")
    assert difference > 0.01  # images in [0, 1]; float round-off is ~1e-7 (measured: 0.052)
    assert (large > 0.5).sum() > 1.3 * (small > 0.5).sum()  # measured: 26.2 vs 13.9 pixels per image
    untrained = build_network(meta["model_config"]).eval()
    assert np.abs(images(untrained, 1.5) - images(untrained, -1.5)).max() < 1e-6
