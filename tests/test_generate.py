"""`radiogen generate` and `radiogen.generate(...)` with real (tiny, untrained) networks.

The SLURM executor is tested in tests/test_slurm_generate.py.
"""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS

import radiogen
from radiogen.cli import main as cli_main
from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.model import EDMPrecond, load_model
from radiogen.sampler import conditioning as cond
from radiogen.sampler.request import generate_to
from radiogen.surveys import survey_attrs
from kill_at import kill_at
from tiny_models import NORM, save_tiny_model as _save

STEPS = 2
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    old = folder / "old.pt"
    _save(old, "lotss")
    payload = torch.load(old, weights_only=True)
    payload["context_histogram"] = None  # a model file that stores no training range
    torch.save(payload, old)
    return {"lotss": _save(folder / "lotss.pt", "lotss"), "first": _save(folder / "first.pt", "first", seed=1),
            "size": _save(folder / "size.pt", "lotss", seed=2, with_size=True), "old": old}


@pytest.fixture
def evaluations(monkeypatch):
    """Counts calls of the denoiser (the real one runs)."""
    calls = []
    forward = EDMPrecond.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(EDMPrecond, "forward", counted)
    return calls


def test_fits_file_carries_wcs_beam_units_and_each_images_conditions(models, tmp_path, evaluations):
    out = tmp_path / "set.fits"
    code = cli_main(["generate", "--model", str(models["lotss"]), "--peak-flux", "1.0", "5.0", "-n", "3",
                     "--out", str(out), "--steps", str(STEPS), "--seed", "11", "--guidance", "0.5",
                     "--device", "cpu"])
    assert code == 0
    assert evaluations, "no network evaluation: the test proves nothing"
    assert not (tmp_path / "set.fits.shards").exists()
    with fits.open(out) as hdul:
        assert len(hdul) == 4 and hdul[0].header["NIMAGES"] == 3
        assert hdul[0].header["SEED"] == 11 and hdul[0].header["GUIDANCE"] == 0.5
        peaks = []
        for k, hdu in enumerate(hdul[1:]):
            header = hdu.header
            assert header["EXTNAME"] == f"SAMPLE_{k:06d}" and header["IMGINDEX"] == k
            assert header["BUNIT"] == "JY/BEAM"
            beam = survey_attrs("lotss")["beam_arcsec"] / 3600
            assert header["BMAJ"] == pytest.approx(beam) and header["BMIN"] == pytest.approx(beam)
            wcs = WCS(header).celestial
            assert wcs.wcs.ctype[0] == "RA---SIN" and wcs.wcs.ctype[1] == "DEC--SIN"
            assert np.abs(wcs.proj_plane_pixel_scales()[0].to_value("arcsec")) == pytest.approx(1.5)
            image = np.squeeze(hdu.data)
            assert image.shape == (16, 16)
            # Jy/beam: the [0, 1] image times its conditioning peak flux
            assert 0 <= image.min() and image.max() <= header["PEAKFLUX"] * (1 + 1e-6)
            peaks.append(header["PEAKFLUX"])
    np.testing.assert_allclose(peaks, [1.0, 5.0, 1.0], rtol=1e-5)


def test_same_seed_same_images_other_seed_other_images_and_cli_matches_the_function(models, tmp_path):
    kwargs = {"n": 3, "peak_flux_range": [2.0, 20.0], "range_space": "log", "steps": STEPS, "device": "cpu"}
    a = radiogen.generate(models["lotss"], seed=5, **kwargs)
    b = radiogen.generate(models["lotss"], seed=5, **kwargs)
    c = radiogen.generate(models["lotss"], seed=6, **kwargs)
    assert a.images.shape == (3, 16, 16) and a.images.dtype == np.float32
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.conditions["peak_flux"], b.conditions["peak_flux"])
    assert not np.allclose(a.images, c.images, atol=1e-3)
    assert not np.allclose(a.conditions["peak_flux"], c.conditions["peak_flux"])
    assert np.all((a.conditions["peak_flux"] >= 2.0 * (1 - 1e-5)) & (a.conditions["peak_flux"] <= 20.0 * (1 + 1e-5)))
    np.testing.assert_allclose(a.conditions["peak_flux"],
                               cond.context_to_peak_flux(a.conditions["context"][:, 0], {"normalisation": NORM}),
                               rtol=1e-5)
    # the command writes the same images and conditions, in the samples HDF5 format
    out = tmp_path / "set.h5"
    generate_to(out, models["lotss"], seed=5, **kwargs)
    with h5py.File(out) as h5:
        np.testing.assert_allclose(h5["images"][()], a.images, atol=1e-6)
        np.testing.assert_allclose(h5["peak_flux"][()], a.conditions["peak_flux"], rtol=1e-6)
        np.testing.assert_array_equal(h5["index"][()], np.arange(3))
        assert h5.attrs["dataset"] == "lotss" and h5.attrs["seed"] == 5 and h5.attrs["n_images"] == 3
        assert h5.attrs["guidance"] == section_defaults("sample.lotss")["guidance"]


def test_first_classes_in_turn_in_a_folder_of_fits_files(models, tmp_path):
    result = radiogen.generate(models["first"], n=3, classes=["frii", "Bent"], steps=STEPS, device="cpu", seed=1)
    assert list(result.conditions["class"]) == ["FRII", "Bent", "FRII"]
    np.testing.assert_array_equal(result.conditions["label"], [1, 3, 1])
    np.testing.assert_array_equal(result.conditions["context"], np.eye(4, dtype=np.float32)[[1, 3, 1]])
    out = tmp_path / "frii"
    generate_to(str(out) + "/", models["first"], n=3, classes=["frii", "Bent"], steps=STEPS, device="cpu", seed=1,
                freq_stokes_axes=False)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"sample_{k:06d}.fits" for k in range(3)]
    for k, path in enumerate(files):
        with fits.open(path) as hdul:
            header = hdul[0].header
            assert header["CLASS"] == ["FRII", "Bent", "FRII"][k]
            assert header["NAXIS"] == 2 and header["BUNIT"] == ""
            assert header["BMAJ"] == pytest.approx(survey_attrs("first")["beam_arcsec"] / 3600)
            np.testing.assert_allclose(hdul[0].data, result.images[k], atol=1e-6)
    # all classes in turn without --class
    default = radiogen.generate(models["first"], n=5, steps=1, device="cpu")
    assert list(default.conditions["class"]) == ["FRI", "FRII", "Compact", "Bent", "FRI"]


def test_size_model_takes_sizes_or_draws_them_at_the_requested_flux(models):
    _net, meta = load_model(models["size"])
    low, high = cond.training_size_range(meta)
    given = radiogen.generate(models["size"], n=2, peak_flux=[2.0], size=[8.0, 30.0], steps=1, device="cpu")
    np.testing.assert_allclose(given.conditions["size"], [8.0, 30.0], rtol=1e-5)
    np.testing.assert_allclose(given.conditions["peak_flux"], [2.0, 2.0], rtol=1e-5)
    drawn = radiogen.generate(models["size"], n=4, peak_flux=[2.0], steps=1, device="cpu")
    sizes = drawn.conditions["size"]
    assert np.all((sizes >= low * (1 - 1e-5)) & (sizes <= high * (1 + 1e-5))) and np.unique(sizes).size == 4
    # a size alone: fluxes from the training histogram at that size
    by_size = radiogen.generate(models["size"], n=3, size_range=[10.0, 20.0], steps=1, device="cpu")
    assert np.all((by_size.conditions["size"] >= 10.0 * (1 - 1e-5)) & (by_size.conditions["size"] <= 20.0 * (1 + 1e-5)))
    assert np.unique(by_size.conditions["peak_flux"]).size == 3


def _flux_range(model):
    return cond.training_peak_flux_range(load_model(model)[1])


@pytest.mark.parametrize("model, request_, error, message", [
    ("first", {"classes": ["FRIII"]}, ConfigError,
     "class 'FRIII' unknown to .*first.pt: it knows FRI, FRII, Compact, Bent"),
    ("lotss", {"classes": ["FRII"]}, ConfigError, "--class: .* is a LoTSS model"),
    ("first", {"peak_flux": [2.0]}, ConfigError, "--peak-flux: .* is a FIRST model"),
    ("lotss", {"peak_flux": ["above"]}, ConfigError, "outside the range .* was trained on"),
    ("lotss", {"peak_flux_range": ["below", 2.0]}, ConfigError, "--peak-flux-range .* outside the range"),
    ("lotss", {"size": [10.0]}, ConfigError, "conditioned on peak flux only"),
    ("size", {"size": [1e4], "peak_flux": [2.0]}, ConfigError, "--size 10000 arcsec outside the range"),
    ("lotss", {"peak_flux": [2.0], "peak_flux_range": [1.0, 10.0]}, ConfigError, "conflict"),
    ("lotss", {"peak_flux_range": [10.0, 1.0]}, ConfigError, "LOW <= HIGH"),
    ("lotss", {"n": 0}, ConfigError, "-n: .* >= 1"),
    ("lotss", {"steps": 0}, ConfigError, "--steps"),
    ("old", {"peak_flux": [2.0]}, InputFileError, "stores no training range"),
    ("lotss", {"out": "set.png"}, ConfigError, "unknown suffix '.png'"),
])
def test_bad_requests_stop_before_any_network_evaluation(models, tmp_path, evaluations, model, request_, error,
                                                        message):
    request_ = dict(request_)
    if "peak_flux" in request_ or "peak_flux_range" in request_:
        low, high = _flux_range(models["lotss"])
        swap = {"above": high * 1.5, "below": low / 2}
        for key in ("peak_flux", "peak_flux_range"):
            if key in request_:
                request_[key] = [swap.get(v, v) for v in request_[key]]
    out = tmp_path / request_.pop("out", "set.h5")
    kwargs = {"n": 2, "steps": STEPS, "device": "cpu", **request_}
    with pytest.raises(error, match=message):
        generate_to(out, models[model], **kwargs)
    if out.name == "set.h5":  # the in-memory function has no output
        with pytest.raises(error, match=message):
            radiogen.generate(models[model], **kwargs)
    assert not evaluations
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_and_overwritten_only_when_asked(models, tmp_path, evaluations):
    out = tmp_path / "set.h5"
    out.write_text("not mine")
    with pytest.raises(ConfigError, match="exists; remove it or pass --overwrite"):
        generate_to(out, models["lotss"], n=1, steps=1, device="cpu")
    assert not evaluations and out.read_text() == "not mine"
    generate_to(out, models["lotss"], n=1, steps=1, device="cpu", overwrite=True)
    with h5py.File(out) as h5:
        assert h5["images"].shape == (1, 16, 16)


def test_conflicting_cli_options_exit_with_usage_error(models, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(["generate", "--model", str(models["lotss"]), "-n", "2", "--out", str(tmp_path / "a.h5"),
                  "--peak-flux", "2", "--peak-flux-range", "1", "20"])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    # a library error: exit code 1 and the message, no traceback
    code = cli_main(["generate", "--model", str(models["first"]), "-n", "2", "--out", str(tmp_path / "a.h5"),
                     "--class", "Spiral"])
    assert code == 1 and list(tmp_path.iterdir()) == []


def test_killed_run_resumes_with_the_missing_shards_only(models, tmp_path):
    out = tmp_path / "set.h5"
    command = [sys.executable, "-m", "radiogen.cli", "generate", "--model", str(models["first"]), "-n", "5",
               "--images-per-shard", "2", "--out", str(out), "--steps", "1", "--device", "cpu", "--seed", "3"]
    kill_at(command, "generate.shard", 1, tmp_path / "killed.log")
    shard0 = tmp_path / "set.h5.shards" / "shard-000000.h5"
    assert shard0.exists() and not out.exists()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "3 shard(s), 2 to generate" in rerun.stderr
    assert "shard 0 images" not in rerun.stderr and "shard 1 images" in rerun.stderr
    whole = radiogen.generate(models["first"], n=5, steps=1, device="cpu", seed=3)
    with h5py.File(out) as h5:
        np.testing.assert_allclose(h5["images"][()], whole.images, atol=1e-6)
        np.testing.assert_array_equal(h5["label"][()], whole.conditions["label"])
        assert h5.attrs["n_shards"] == 3
    assert not (tmp_path / "set.h5.shards").exists()


def test_a_size_or_flux_left_out_is_drawn_from_the_training_histogram_at_the_other(models):
    """The tiny size model's joint histogram lies on the diagonal (bright = large): draws keep that."""
    from radiogen.sampler import generate as gen

    _net, meta = load_model(models["size"])
    indices = np.arange(300)
    low_flux, high_flux = cond.training_peak_flux_range(meta)
    faint = gen.conditioning(meta, {"conditioning": "list", "peak_flux": [low_flux * 1.01], "size_mode": "histogram"},
                             indices, seed=1)
    bright = gen.conditioning(meta, {"conditioning": "list", "peak_flux": [high_flux * 0.99],
                                     "size_mode": "histogram"}, indices, seed=1)
    assert np.median(bright["context"][:, 1]) - np.median(faint["context"][:, 1]) > 2.0  # of 5 in z
    low_size, high_size = cond.training_size_range(meta)
    small = gen.conditioning(meta, {"conditioning": "histogram", "size": [low_size * 1.01], "size_mode": "list"},
                             indices, seed=1)
    large = gen.conditioning(meta, {"conditioning": "histogram", "size": [high_size * 0.99], "size_mode": "list"},
                             indices, seed=1)
    assert np.median(large["context"][:, 0]) - np.median(small["context"][:, 0]) > 2.0
    np.testing.assert_allclose(small["size"], low_size * 1.01, rtol=1e-5)
    # per-image seeding: the same image gets the same draw in any subset
    again = gen.conditioning(meta, {"conditioning": "histogram", "size": [low_size * 1.01], "size_mode": "list"},
                             indices[100:110], seed=1)
    np.testing.assert_array_equal(again["context"], small["context"][100:110])
