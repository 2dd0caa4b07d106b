"""`radiogen generate` and `radiogen.generate(...)` with real (tiny, untrained) networks.

The SLURM executor is tested in tests/test_slurm_generate.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
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
from radiogen.sampler.generate import image_noise, image_shape, model_id, sampler_settings
from radiogen.sampler.heun import guided_denoiser
from radiogen.sampler.request import generate_to
from radiogen.sampler.solvers import SOLVERS, solve
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


# --- sampler choices: solver, rho, guide (the workflow's sample.sampler.* and sample.<dataset>.guide) ---

@pytest.fixture(scope="module")
def weighted(tmp_path_factory):
    """Tiny models with random output layers (untrained EDM networks are all D = c_skip x) and guides."""
    folder = tmp_path_factory.mktemp("weighted")
    models = {name: _save(folder / f"{name}.pt", dataset, seed=seed, weights_std=0.2)
              for name, dataset, seed in [("first", "first", 1), ("weak_first", "first", 2),
                                          ("lotss", "lotss", 3), ("weak_lotss", "lotss", 4)]}
    for name, source, change in [("other_norm", "weak_lotss", {"normalisation": {**NORM, "boxcox_mean": 2.5}}),
                                 ("other_classes", "weak_first", {"class_names": ["FRII", "FRI", "Compact", "Bent"]})]:
        payload = torch.load(models[source], weights_only=True)
        payload.update(change)
        torch.save(payload, folder / f"{name}.pt")
        models[name] = folder / f"{name}.pt"
    return models


def _direct(model, result, *, seed, guidance, sampler, guide=None):
    """The images of ``result`` solved here, from the workflow's latents, with the named solver."""
    net, meta = load_model(model)
    noise, generators = image_noise(seed, result.conditions["index"], image_shape(meta))
    with torch.no_grad():
        x = solve(net, noise, context=torch.from_numpy(result.conditions["context"]), guidance=guidance,
                  guide=guide, generators=generators, **sampler_settings(sampler))
    return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0)[:, 0].numpy()


def test_each_solver_and_rho_give_the_images_of_a_direct_solver_call(weighted):
    from radiogen.cli import build_parser

    options = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    solver_option = next(a for a in options.choices["generate"]._actions if a.dest == "solver")
    assert solver_option.choices == list(SOLVERS)
    kwargs = {"n": 3, "classes": ["FRII", "Bent"], "steps": 3, "seed": 4, "guidance": 1.0, "device": "cpu"}
    images = {}
    for solver, rho in [*((s, 7.0) for s in SOLVERS), ("ipndm", 10.0)]:
        result = radiogen.generate(weighted["first"], solver=solver, rho=rho, **kwargs)
        expected = _direct(weighted["first"], result, seed=4, guidance=1.0,
                           sampler={"solver": solver, "num_steps": 3, "rho": rho})
        np.testing.assert_allclose(result.images, expected, atol=1e-6)
        images[solver, rho] = result.images
    # every choice changes the images (the same latents throughout)
    for (a, b) in itertools.combinations(images, 2):
        assert np.abs(images[a] - images[b]).max() > 1e-3, (a, b)
    with pytest.raises(ConfigError, match=r"--solver: unknown 'euler' \(heun, dpmpp_2m"):
        radiogen.generate(weighted["first"], solver="euler", **kwargs)
    with pytest.raises(ConfigError, match="--rho: must be a finite number > 0"):
        radiogen.generate(weighted["first"], rho=0.0, **kwargs)


def test_a_guide_model_autoguides_exactly_as_a_workflow_shard(weighted, tmp_path):
    from radiogen.sampler.shards import write_shard

    sampler = {"solver": "ipndm", "num_steps": 3, "rho": 10.0}
    kwargs = {"n": 4, "seed": 6, "guidance": 2.0, "device": "cpu", "steps": 3, "solver": "ipndm", "rho": 10.0}
    auto = radiogen.generate(weighted["lotss"], guide=weighted["weak_lotss"], **kwargs)
    cfg = radiogen.generate(weighted["lotss"], **kwargs)
    assert np.abs(auto.images - cfg.images).max() > 1e-3
    np.testing.assert_array_equal(auto.conditions["context"], cfg.conditions["context"])
    # the workflow's shard job with the same seed, sampler, w and guide (sample.lotss block, histogram draws)
    shard = write_shard(weighted["lotss"], tmp_path / "shard.h5", shard=0, seed=6, guidance=2.0,
                        settings={"n_images": 4, "conditioning": "histogram"}, sampler=sampler, images_per_shard=4,
                        batch_size=4, device="cpu", guide_path=weighted["weak_lotss"])
    with h5py.File(shard) as h5:
        np.testing.assert_array_equal(h5["images"][()], auto.images)
    # one Heun step from sigma_max to 0 returns the guided denoiser itself: D_w = (1 + w) D - w D_guide
    one = radiogen.generate(weighted["lotss"], guide=weighted["weak_lotss"], **{**kwargs, "steps": 1,
                                                                               "solver": "heun"})
    net, meta = load_model(weighted["lotss"])
    weak, _ = load_model(weighted["weak_lotss"])
    noise, _gens = image_noise(6, np.arange(4), image_shape(meta))
    sigma_max = section_defaults("sample.sampler")["sigma_max"]
    with torch.no_grad():
        denoised = guided_denoiser(net, noise.double() * sigma_max, sigma_max, guidance=2.0, guide=weak,
                                   context=torch.from_numpy(one.conditions["context"]))
    np.testing.assert_allclose(one.images, ((denoised.clamp(-1, 1) + 1) / 2)[:, 0].numpy(), atol=1e-6)
    # the command: the same images, and the set records its sampler and guide
    out = tmp_path / "auto.h5"
    code = cli_main(["generate", "--model", str(weighted["lotss"]), "-n", "4", "--out", str(out), "--seed", "6",
                     "--guidance", "2", "--steps", "3", "--solver", "ipndm", "--rho", "10", "--device", "cpu",
                     "--guide", str(weighted["weak_lotss"])])
    assert code == 0
    with h5py.File(out) as h5:
        np.testing.assert_array_equal(h5["images"][()], auto.images)
        assert h5.attrs["guide"] == f"model {model_id(weighted['weak_lotss'])}"
        assert json.loads(h5.attrs["sampler"]) == sampler_settings(sampler)


@pytest.mark.parametrize("model, guide, differs", [
    ("first", "weak_lotss", "dataset 'lotss' .the model's: 'first'."),
    ("first", "other_classes", r"classes \['FRII', 'FRI', 'Compact', 'Bent'\]"),
    ("lotss", "other_norm", "normalisation .*'boxcox_mean': 2.5"),
])
def test_a_guide_of_another_kind_is_refused_before_any_work(weighted, tmp_path, evaluations, model, guide, differs):
    message = (rf"--guide: .*{guide}\.pt: a guide must be a model of the same kind as .*{model}\.pt "
               rf"\(dataset, image shape, context\), but its {differs}")
    with pytest.raises(ConfigError, match=message):
        generate_to(tmp_path / "set.h5", weighted[model], n=2, steps=1, device="cpu", guide=weighted[guide])
    with pytest.raises(ConfigError, match=message):
        radiogen.generate(weighted[model], n=2, steps=1, device="cpu", guide=weighted[guide])
    with pytest.raises(ConfigError, match=r"--guide: .*missing\.pt: model file does not exist"):
        generate_to(tmp_path / "set.h5", weighted[model], n=2, steps=1, device="cpu", guide=tmp_path / "missing.pt")
    assert not evaluations and list(tmp_path.iterdir()) == []


def test_a_resumed_run_refuses_another_solver_rho_or_guide(weighted, tmp_path, monkeypatch):
    from radiogen.sampler import request

    class Stopped(Exception):
        pass

    def stop_after_the_first_shard(point, count):
        raise Stopped(point)

    out = tmp_path / "set.h5"
    kwargs = {"n": 4, "images_per_shard": 2, "steps": 2, "seed": 2, "device": "cpu", "solver": "dpmpp_2m",
              "guide": weighted["weak_first"]}
    monkeypatch.setattr(request, "block_point", stop_after_the_first_shard)
    with pytest.raises(Stopped):
        generate_to(out, weighted["first"], **kwargs)
    monkeypatch.undo()
    shard0 = tmp_path / "set.h5.shards" / "shard-000000.h5"
    assert shard0.exists() and not out.exists()
    for change, differ in [({"solver": "ipndm"}, "sampler"), ({"rho": 10.0}, "sampler"),
                           ({"guide": "unconditional"}, "guide"), ({"guide": weighted["first"]}, "guide")]:
        with pytest.raises(ConfigError, match=rf"holds shards of another request \({differ} differ\)"):
            generate_to(out, weighted["first"], **{**kwargs, **change})
    ran = []
    run_shard = request.run_shard
    monkeypatch.setattr(request, "run_shard", lambda *a, shard, **kw: ran.append(shard) or run_shard(*a, shard=shard,
                                                                                                      **kw))
    generate_to(out, weighted["first"], **kwargs)  # the same request resumes with the missing shard only
    assert ran == [1]
    whole = radiogen.generate(weighted["first"], **{k: v for k, v in kwargs.items() if k != "images_per_shard"})
    with h5py.File(out) as h5:  # shards of 2: other batches, equal up to float rounding
        np.testing.assert_allclose(h5["images"][()], whole.images, atol=1e-6)
