"""Sharded sampling with real (tiny) radiogen networks: reproducibility, files, errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

from radiogen.cli import main as cli_main
from radiogen.errors import ConfigError, InputFileError
from radiogen.sampler import conditioning as cond
from radiogen.sampler import generate, shards
from radiogen.sampler.fits_export import export_fits
from radiogen.sampler.plots import plot_samples_vs_training, plot_trajectory, record_trajectory
from figures import drawn_from, panels, shown_arrays, tiles
from kill_at import kill_at
from tiny_models import NORM, save_tiny_model as _save

SAMPLER = {"num_steps": 4}
SEED = 1234


# torch on one thread (conftest.py): tiny networks, and two test workers share 2 cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lotss_model(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("m") / "model.pt", "lotss")


@pytest.fixture(scope="module")
def first_model(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("m") / "model.pt", "first", seed=1)


def _shards(model, out_dir, *, per_shard, batch, settings, guidance=0.5, seed=SEED):
    total = generate.n_images(torch.load(model, weights_only=True), settings)
    paths = []
    for shard in range(shards.n_shards(total, per_shard)):
        paths.append(shards.write_shard(
            model, out_dir / f"{shard:04d}.h5", shard=shard, seed=seed, guidance=guidance,
            settings=settings, sampler=SAMPLER, images_per_shard=per_shard, batch_size=batch,
            device="cpu",
        ))
    return paths


def test_same_images_across_shard_and_batch_boundaries(lotss_model, tmp_path):
    settings = {"n_images": 7}
    a = shards.aggregate_shards(_shards(lotss_model, tmp_path / "a", per_shard=3, batch=2,
                                          settings=settings), tmp_path / "a.h5")
    b = shards.aggregate_shards(_shards(lotss_model, tmp_path / "b", per_shard=7, batch=5,
                                          settings=settings), tmp_path / "b.h5")
    # rerunning one shard alone reproduces it bit for bit
    again = _shards(lotss_model, tmp_path / "c", per_shard=3, batch=2, settings=settings)[1]
    with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(again) as fc, \
            h5py.File(tmp_path / "a" / "0001.h5") as f1:
        np.testing.assert_array_equal(fa["index"][()], np.arange(7))
        np.testing.assert_array_equal(fa["context"][()], fb["context"][()])
        np.testing.assert_allclose(fa["images"][()], fb["images"][()], atol=1e-5)
        np.testing.assert_array_equal(fc["images"][()], f1["images"][()])
        images = fa["images"][()]
        assert images.shape == (7, 16, 16) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert not np.allclose(images[0], images[1])
        # physical units restored from the conditioning
        peak = fa["peak_flux"][()]
        expected = cond.context_to_peak_flux(fa["context"][:, 0], {"normalisation": NORM})
        np.testing.assert_allclose(peak, expected, rtol=1e-5)
        assert np.all(peak > 0)
        attrs = dict(fa.attrs)
    assert attrs["dataset"] == "lotss" and attrs["seed"] == SEED and attrs["guidance"] == 0.5
    assert attrs["pixel_scale_arcsec"] == 1.5 and attrs["beam_arcsec"] == 6.0
    assert attrs["frequency_hz"] == 144e6
    assert attrs["model_id"] == generate.model_id(lotss_model) and len(attrs["model_id"]) == 64
    assert json.loads(attrs["sampler"])["num_steps"] == 4
    assert json.loads(attrs["sampler"])["sigma_max"] == 80.0


def test_noise_is_per_image():
    a, _ = generate.image_noise(3, [5, 6, 7], (1, 4, 4))
    b, _ = generate.image_noise(3, [7], (1, 4, 4))
    torch.testing.assert_close(a[2:], b, rtol=0, atol=0)
    c, _ = generate.image_noise(4, [7], (1, 4, 4))
    assert not torch.equal(b, c)


def test_first_shards_are_class_balanced(first_model, tmp_path):
    settings = {"n_per_class": 2}
    paths = _shards(first_model, tmp_path, per_shard=3, batch=3, settings=settings, guidance=0.75)
    assert len(paths) == 3
    out = shards.aggregate_shards(paths[::-1], tmp_path / "samples.h5")
    with h5py.File(out) as h5:
        np.testing.assert_array_equal(h5["label"][()], [0, 0, 1, 1, 2, 2, 3, 3])
        np.testing.assert_array_equal(h5["context"][()].argmax(1), h5["label"][()])
        assert h5["images"].shape == (8, 16, 16)
        assert h5.attrs["guidance"] == 0.75 and h5.attrs["pixel_scale_arcsec"] == 1.8
        assert json.loads(h5.attrs["class_names"]) == ["FRI", "FRII", "Compact", "Bent"]
        assert "peak_flux" not in h5


def test_aggregate_rejects_missing_or_foreign_shards(lotss_model, tmp_path):
    paths = _shards(lotss_model, tmp_path / "a", per_shard=2, batch=2, settings={"n_images": 4})
    with pytest.raises(InputFileError, match=r"shard\(s\) \[1\] of 2 missing"):
        shards.aggregate_shards(paths[:1], tmp_path / "out.h5")
    other = _shards(lotss_model, tmp_path / "b", per_shard=2, batch=2, settings={"n_images": 4}, seed=9)
    with pytest.raises(InputFileError, match="seed"):
        shards.aggregate_shards([paths[0], other[1]], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_shard_index_out_of_range(lotss_model, tmp_path):
    with pytest.raises(ConfigError, match=r"shard index 3 out of range.*0\.\.2"):
        shards.write_shard(lotss_model, tmp_path / "x.h5", shard=3, seed=0, guidance=0.0,
                             settings={"n_images": 5}, sampler=SAMPLER, images_per_shard=2, device="cpu")
    with pytest.raises(ConfigError, match="out of range"):
        shards.shard_indices(-1, total=5, images_per_shard=2)
    assert not (tmp_path / "x.h5").exists()


def test_weights_from_another_architecture(tmp_path):
    path = _save(tmp_path / "model.pt", "lotss")
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["base_channels"] = 16
    torch.save(payload, path)
    with pytest.raises(InputFileError, match=str(path)):
        generate.load_sampling_model(path)


def test_flux_list_and_bad_flux(lotss_model, tmp_path):
    settings = {"n_images": 3, "conditioning": "list", "peak_flux": [0.002, 0.05, 1.0]}
    out = shards.write_shard(lotss_model, tmp_path / "s.h5", shard=0, seed=0, guidance=0.0,
                               settings=settings, sampler=SAMPLER, images_per_shard=3, device="cpu")
    with h5py.File(out) as h5:
        np.testing.assert_allclose(h5["peak_flux"][()], [0.002, 0.05, 1.0], rtol=1e-5)
    bad = {**settings, "peak_flux": [0.01, -0.5]}
    with pytest.raises(ConfigError, match="positive"):
        shards.write_shard(lotss_model, tmp_path / "t.h5", shard=0, seed=0, guidance=0.0,
                             settings=bad, sampler=SAMPLER, images_per_shard=3, device="cpu")


def test_cli_shard_errors_are_one_line(lotss_model, tmp_path, caplog):
    code = cli_main(["sample", "shard", "--model", str(lotss_model), "--shard", "9", "--seed", "1",
                     "--guidance", "0", "--settings", json.dumps({"dataset": {"n_images": 4},
                                                                   "images_per_shard": 2}),
                     "--output", str(tmp_path / "x.h5")])
    assert code == 1
    assert "shard index 9 out of range" in caplog.text
    code = cli_main(["sample", "shard", "--model", str(tmp_path / "missing.pt"), "--shard", "0", "--seed", "1",
                     "--guidance", "0", "--output", str(tmp_path / "x.h5")])
    assert code == 1 and "missing.pt" in caplog.text


def test_cli_end_to_end_fits_and_figures(lotss_model, tmp_path, saved_figures):
    settings = json.dumps({"sampler": SAMPLER, "dataset": {"n_images": 4}, "images_per_shard": 2,
                           "batch_size": 2, "device": "cpu", "precision": "auto"})
    shard_files = []
    for shard in range(2):
        shard_files.append(str(tmp_path / f"{shard}.h5"))
        assert cli_main(["sample", "shard", "--model", str(lotss_model), "--shard", str(shard), "--seed", "5",
                         "--guidance", "0.1", "--settings", settings, "--threads", "1",
                         "--output", shard_files[-1]]) == 0
    samples = tmp_path / "samples.h5"
    assert cli_main(["sample", "aggregate", "--output", str(samples), *shard_files]) == 0

    fits_dir = tmp_path / "fits"
    assert cli_main(["sample", "export-fits", "--samples", str(samples), "--output-dir", str(fits_dir),
                     "--ra", "210.5", "--dec", "54.2", "--max-images", "3"]) == 0
    files = sorted(fits_dir.glob("*.fits"))
    assert [f.name for f in files] == ["sample_000000.fits", "sample_000001.fits", "sample_000002.fits"]
    with fits.open(files[1]) as hdul, h5py.File(samples) as h5:
        # FREQ and STOKES axes of length 1 in front (sample.fits.freq_stokes_axes)
        header, data = hdul[0].header, hdul[0].data[0, 0]
        assert header["BUNIT"] == "JY/BEAM"
        assert header["CTYPE1"] == "RA---SIN" and header["CTYPE2"] == "DEC--SIN"
        assert header["BMAJ"] == pytest.approx(6.0 / 3600) and header["BMIN"] == pytest.approx(6.0 / 3600)
        assert header["CDELT2"] == pytest.approx(1.5 / 3600)
        assert header["CDELT1"] == pytest.approx(-1.5 / 3600)
        np.testing.assert_allclose(data, h5["images"][1] * h5["peak_flux"][1], rtol=1e-6)
        assert data.max() == pytest.approx(h5["peak_flux"][1] * h5["images"][1].max(), rel=1e-6)
        wcs = WCS(header).celestial
        ra, dec = wcs.pixel_to_world_values((16 - 1) / 2, (16 - 1) / 2)
        assert ra == pytest.approx(210.5) and dec == pytest.approx(54.2)

    training = tmp_path / "training_set.h5"
    with h5py.File(training, "w") as h5:
        h5["images"] = np.random.default_rng(0).random((10, 16, 16), dtype=np.float32)
        h5["split"] = np.array([0] * 8 + [1] * 2, dtype=np.uint8)
    fig = tmp_path / "fig.png"
    assert cli_main(["sample", "figure", "--samples", str(samples), "--training", str(training),
                     "--n", "4", "--output", str(fig)]) == 0
    assert fig.exists()
    real_panel, generated_panel = panels(saved_figures["fig.png"])
    assert real_panel.get_title() == "LOTSS: training (4)"
    assert generated_panel.get_title() == "LOTSS: generated, guidance 0.1 (4)"
    with h5py.File(training) as h5, h5py.File(samples) as h5_samples:
        shown = drawn_from(tiles(shown_arrays(real_panel)[0], (16, 16)), h5["images"][:8])  # training split
        assert len(set(shown)) == 4
        shown = drawn_from(tiles(shown_arrays(generated_panel)[0], (16, 16)), h5_samples["images"][()])
        assert sorted(shown) == [0, 1, 2, 3]
    traj = tmp_path / "traj.png"
    assert cli_main(["sample", "trajectory", "--model", str(lotss_model), "--seed", "5", "--guidance", "0.1",
                     "--settings", settings, "--output", str(traj)]) == 0
    assert traj.exists()
    titles = [ax.get_title() for ax in panels(saved_figures["traj.png"])]  # 2 rows
    assert titles[len(titles) // 2 - 1] == f"x_{SAMPLER['num_steps']} (σ=0)" and titles[-1] == "output in [0, 1]"
    with h5py.File(samples) as h5:  # the trajectory ends in image 0 of the set
        final = shown_arrays(panels(saved_figures["traj.png"])[-1])[0]
        np.testing.assert_allclose(final, h5["images"][0], atol=1e-6)


def test_trajectory_matches_generated_image(first_model, tmp_path, saved_figures):
    net, meta = generate.load_sampling_model(first_model)
    steps = record_trajectory(net, meta, seed=SEED, guidance=0.75, sampler=SAMPLER,
                              settings={"n_per_class": 2}, index=5)
    assert len(steps) == 4 and steps[-1].sigma_next == 0.0
    arrays = generate.generate_images(net, meta, [5], seed=SEED, guidance=0.75, sampler=SAMPLER,
                                      settings={"n_per_class": 2})
    final = ((steps[-1].x_next.float().clamp(-1, 1) + 1) / 2)[0, 0].numpy()
    np.testing.assert_allclose(arrays["images"][0], final, atol=1e-6)
    assert arrays["label"][0] == 2
    plot_trajectory(steps, tmp_path / "t.png", n_show=3)
    assert (tmp_path / "t.png").exists()
    axes = panels(saved_figures["t.png"])
    # x_i of the 3 chosen steps, the final state; then their denoiser outputs and the [0, 1] image
    assert [ax.get_title() for ax in axes[:4]] == [
        f"x_0, σ={steps[0].sigma:.3g}", f"x_2, σ={steps[2].sigma:.3g}", f"x_3, σ={steps[3].sigma:.3g}", "x_4 (σ=0)"]
    np.testing.assert_allclose(shown_arrays(axes[0])[0], steps[0].x[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(shown_arrays(axes[-1])[0], arrays["images"][0], atol=1e-6)


def test_first_figure_has_class_rows(first_model, tmp_path, saved_figures):
    paths = _shards(first_model, tmp_path, per_shard=8, batch=8, settings={"n_per_class": 2})
    samples = shards.aggregate_shards(paths, tmp_path / "samples.h5")
    training = tmp_path / "training_set.h5"
    with h5py.File(training, "w") as h5:
        h5["images"] = np.random.default_rng(0).random((12, 16, 16), dtype=np.float32)
        h5["split"] = np.zeros(12, dtype=np.uint8)
        h5["label"] = np.repeat(np.arange(4), 3)
    out = plot_samples_vs_training(samples, training, tmp_path / "f.png", n_per_panel=2)
    assert out.exists()
    axes = panels(saved_figures["f.png"])
    assert len(axes) == 8  # a row per class: training | generated
    with h5py.File(samples) as h5, h5py.File(training) as h5_training:
        names = json.loads(h5.attrs["class_names"])
        for k, name in enumerate(names):
            real_panel, generated_panel = axes[2 * k], axes[2 * k + 1]
            assert real_panel.get_title() == f"{name}: training (2)"
            assert generated_panel.get_title().startswith(f"{name}: generated")
            shown = drawn_from(tiles(shown_arrays(real_panel)[0], (16, 16)), h5_training["images"][()])
            assert (h5_training["label"][()][shown] == k).all()
            shown = drawn_from(tiles(shown_arrays(generated_panel)[0], (16, 16)), h5["images"][()])
            assert len(shown) == 2 and (h5["label"][()][shown] == k).all()


def test_first_fits_has_no_flux_unit(first_model, tmp_path):
    paths = _shards(first_model, tmp_path, per_shard=8, batch=8, settings={"n_per_class": 1})
    samples = shards.aggregate_shards(paths, tmp_path / "samples.h5")
    files = export_fits(samples, tmp_path / "fits")
    assert len(files) == 4
    header = fits.getheader(files[2])
    assert header["CLASS"] == "Compact"
    assert header["CDELT2"] == pytest.approx(1.8 / 3600) and header["BMAJ"] == pytest.approx(5.4 / 3600)


def test_rerun_after_kill_9_resumes_to_the_uninterrupted_shard(first_model, tmp_path):
    """A shard job killed outright (OOM killer, node failure) after 3 of its 5 batches leaves
    no shard file; the rerun samples only the 2 missing batches and equals a clean run bit for bit."""
    import subprocess
    import sys

    settings = json.dumps({"dataset": {"n_per_class": 10}, "sampler": {"num_steps": 3},
                           "images_per_shard": 40, "batch_size": 8, "device": "cpu"})

    def command(out):
        return [sys.executable, "-m", "radiogen.cli", "sample", "shard", "--model", str(first_model),
                "--shard", "0", "--seed", str(SEED), "--guidance", "0.5", "--threads", "1",
                "--dataset", "first", "--settings", settings, "--output", str(out)]

    killed = tmp_path / "killed" / "0.h5"
    killed.parent.mkdir()
    kill_at(command(killed), "sample.batch", 3, tmp_path / "killed.log")
    assert not killed.exists()
    assert len(list((tmp_path / "killed" / "0.part").glob("batch-*.h5"))) == 3
    rerun = subprocess.run(command(killed), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "3 batch(es) already sampled" in rerun.stderr and "2 to sample" in rerun.stderr
    assert not (tmp_path / "killed" / "0.part").exists()
    clean = tmp_path / "clean" / "0.h5"
    clean.parent.mkdir()
    assert subprocess.run(command(clean), capture_output=True, timeout=300).returncode == 0
    with h5py.File(killed) as a, h5py.File(clean) as b:
        assert a["images"].shape == (40, 16, 16)
        for name in ("images", "label", "context", "index"):
            np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)


def test_shard_reuses_only_checkpoints_of_its_own_inputs(first_model, tmp_path):
    """A batch checkpointed under this shard's key is used as it is; one written with another
    seed (another model, guidance, setting ...) is sampled again."""
    settings = {"n_per_class": 2}
    kwargs = dict(shard=0, settings=settings, sampler=SAMPLER, images_per_shard=8, batch_size=4)
    reference = shards.write_shard(first_model, tmp_path / "ref" / "0.h5", seed=SEED, guidance=0.5,
                                   device="cpu", **kwargs)
    net, meta = generate.load_sampling_model(first_model)
    other_seed = generate.generate_images(net, meta, np.arange(4), seed=SEED + 1, guidance=0.5,
                                          sampler=SAMPLER, settings=settings, batch_size=4)
    digest = generate.model_id(first_model)
    key = {s: shards.checkpoint_key(digest, seed=s, guidance=0.5, device="cpu", autocast_dtype=None, **kwargs)
           for s in (SEED, SEED + 1)}
    for seed, used in ((SEED + 1, False), (SEED, True)):
        out = tmp_path / str(seed) / "0.h5"
        shards._write_batch(out.parent / "0.part" / "batch-000000000.h5", other_seed, key[seed])
        shards.write_shard(first_model, out, seed=SEED, guidance=0.5, device="cpu", **kwargs)
        with h5py.File(out) as a, h5py.File(reference) as b:
            np.testing.assert_array_equal(a["images"][4:], b["images"][4:])
            assert np.array_equal(a["images"][:4], other_seed["images"]) == used
            assert np.array_equal(a["images"][:4], b["images"][:4]) != used
        assert not (out.parent / "0.part").exists()


def test_gpu_batch_size_is_its_own_setting():
    """sample.cuda_batch_size (schema) replaces sample.batch_size on a GPU only, and reaches the shard jobs."""
    from radiogen.config import section_defaults
    from radiogen.sampler.workflow import sampling_settings, shard_settings

    defaults = section_defaults("sample")
    assert defaults["cuda_batch_size"] is not None
    for device, expected in (("cpu", 25), ("cuda", 300), ("cuda:1", 300)):
        assert generate.batch_size_on(torch.device(device), batch_size=25, cuda_batch_size=300) == expected
    assert generate.batch_size_on(torch.device("cuda"), batch_size=25, cuda_batch_size=None) == 25
    sample = {**defaults, "batch_size": 25, "cuda_batch_size": 300}
    assert json.loads(shard_settings(sample, "first"))["cuda_batch_size"] == 300
    assert json.loads(sampling_settings(sample))["cuda_batch_size"] == 300

