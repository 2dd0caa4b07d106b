"""Fine-tuning from a model file (train.{lotss,first}.init_from): real training for a few steps.

The run must start at the file's weights (its step-0 validation loss is the
file's), take the file's network, keep a LoTSS model's context transform, refuse
files that do not fit the training set (naming the file), treat the file as part
of the run's identity and be an input of the training rule.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from radiogen.cli import main as cli_main
from radiogen.errors import ConfigError, InputFileError
from radiogen.lotss.preprocess import boxcox_forward
from radiogen.model import load_model
from radiogen.model.data import read_training_set, to_model_range, write_synthetic_training_set
from radiogen.model.train import train, validation_loss
from radiogen.seeds import integer as seed_stream

TINY_MODEL = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8}
#: A network section that differs from the init file's: fine-tuning ignores it.
OTHER_MODEL = {"base_channels": 32, "enc_blocks": 1, "dec_blocks": 2}
BLOCK = {"batch_size": 4, "steps": 6, "val_every": 3, "checkpoint_every": 100}
TINY_TRAIN = {
    "lr": 1e-3,
    "ema_decay": 0.9,
    "channels_last": False,
    "log_every": 2,
    "val_sigmas": [0.05, 0.5],
    "val_max_images": 8,
    "first": BLOCK,
    "lotss": BLOCK,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(dataset, init_from, **block):
    return {**TINY_TRAIN, dataset: {**BLOCK, "init_from": None if init_from is None else str(init_from), **block}}


def _run(data, out, train_settings, *, seed=11, model_settings=TINY_MODEL, **kw):
    return train(data_path=data, out_path=out, train_settings=train_settings, model_settings=model_settings,
                 seed=seed, device="cpu", **kw)


@pytest.fixture(scope="module")
def toy_first(tmp_path_factory):
    return write_synthetic_training_set(tmp_path_factory.mktemp("toy") / "first.h5", n=40, size=16, dataset="first")


@pytest.fixture(scope="module")
def toy_lotss(tmp_path_factory):
    return write_synthetic_training_set(tmp_path_factory.mktemp("toy") / "lotss.h5", n=40, size=16, dataset="lotss")


@pytest.fixture(scope="module")
def trained_first(toy_first, tmp_path_factory):
    """A tiny radiogen FIRST model, trained for 6 steps from random weights."""
    out = tmp_path_factory.mktemp("trained") / "model.pt"
    torch.set_num_threads(1)
    assert _run(toy_first, out, _settings("first", None)) == {"status": "done", "step": 6}
    return out


def _step0_validation_loss(model_path, data_path, *, seed, dataset):
    """What a run with global ``seed`` measures as step-0 validation loss for the weights in ``model_path``."""
    net, _ = load_model(model_path)
    data = read_training_set(data_path)
    idx = data.val_index[: TINY_TRAIN["val_max_images"]]
    context = torch.from_numpy(data.context[idx])
    return validation_loss(net, to_model_range(torch.from_numpy(data.images[idx])), context,
                           sigmas=TINY_TRAIN["val_sigmas"], batch_size=BLOCK["batch_size"],
                           seed=seed_stream(seed, f"train.{dataset}") + 1)


def test_fine_tuning_starts_at_the_init_models_weights(toy_first, trained_first, tmp_path, caplog):
    """Step-0 validation loss is the file's; with lr 1e-12 one step leaves its weights; model section ignored."""
    out = tmp_path / "tuned" / "model.pt"
    with caplog.at_level(logging.INFO, logger="radiogen.train"):
        result = _run(toy_first, out, {**_settings("first", trained_first, steps=1), "lr": 1e-12},
                      seed=5, model_settings=OTHER_MODEL)
    assert result == {"status": "done", "step": 1}
    assert "the model section is ignored" in caplog.text and "base_channels 32 -> 8" in caplog.text
    history = load_model(out)[1]["history"]
    expected = _step0_validation_loss(trained_first, toy_first, seed=5, dataset="first")
    np.testing.assert_allclose(history["val_raw"][0], expected, rtol=1e-6)
    np.testing.assert_allclose(history["val_ema"][0], expected, rtol=1e-6)
    # a run from random weights measures another loss on the same noise (the check can fail)
    scratch = tmp_path / "scratch" / "model.pt"
    _run(toy_first, scratch, _settings("first", None, steps=1), seed=5)
    assert np.abs(np.subtract(load_model(scratch)[1]["history"]["val_raw"][0], expected)).max() > 1e-3

    init_net, init_meta = load_model(trained_first)
    tuned_net, meta = load_model(out)
    assert meta["model_config"] == init_meta["model_config"]  # the file's network, not OTHER_MODEL
    tuned = tuned_net.state_dict()
    for key, value in init_net.state_dict().items():
        torch.testing.assert_close(tuned[key], value, rtol=0, atol=1e-9)
    assert meta["train_config"]["init_from"] == str(trained_first)
    assert len(meta["train_config"]["init_sha256"]) == 64 and meta["train_config"]["init_step"] == 6
    assert meta["class_names"] == init_meta["class_names"]


def test_fine_tuning_trains_on(toy_first, trained_first, tmp_path):
    """With an ordinary learning rate the weights move away from the file's and the loss stays finite."""
    out = tmp_path / "model.pt"
    assert _run(toy_first, out, _settings("first", trained_first, steps=3)) == {"status": "done", "step": 3}
    init = load_model(trained_first)[0].state_dict()
    tuned, meta = load_model(out)
    assert max(float((tuned.state_dict()[k] - v).abs().max()) for k, v in init.items()) > 1e-4
    assert np.all(np.isfinite(meta["history"]["train_loss"]))


def _import(lofar_diffusion_dir, tmp_path, name, *extra):
    folder = lofar_diffusion_dir / f"tiny_{name}"
    out = tmp_path / f"imported_{name}.pt"
    assert cli_main(["model", "import", "--from", "lofar-diffusion", "--parameters",
                     str(folder / f"parameters_tiny_{name}.pt"), "--config", str(folder / f"config_tiny_{name}.json"),
                     "--out", str(out), *extra]) == 0
    return out


def test_fine_tuning_an_imported_lofar_diffusion_first_model(lofar_diffusion_dir, tmp_path):
    """The authors' tiny FIRST network (80 x 80, 4 classes) fine-tunes on an 80 x 80 FIRST set."""
    imported = _import(lofar_diffusion_dir, tmp_path, "FIRST")
    data = write_synthetic_training_set(tmp_path / "first80.h5", n=16, size=80, dataset="first")
    out = tmp_path / "tuned.pt"
    settings = {**_settings("first", imported, steps=2, val_every=100), "val_max_images": 4}
    assert _run(data, out, settings, seed=3) == {"status": "done", "step": 2}
    net, meta = load_model(out)
    assert meta["model_config"]["architecture"] == "lofar-diffusion"
    assert meta["class_names"] == ["FRI", "FRII", "Compact", "Bent"]
    expected = _step0_validation_loss(imported, data, seed=3, dataset="first")
    np.testing.assert_allclose(meta["history"]["val_ema"][0], expected, rtol=1e-6)
    init = load_model(imported)[0].state_dict()
    assert max(float((net.state_dict()[k] - v).abs().max()) for k, v in init.items()) > 0  # it trained


def test_fine_tuning_an_imported_lotss_model_keeps_its_context_transform(lofar_diffusion_dir, tmp_path, caplog):
    """The training set's Box-Cox differs from the model's: the context is recomputed from /peak_flux."""
    lam, mean, std = -0.2, -4.0, 0.8
    imported = _import(lofar_diffusion_dir, tmp_path, "LOFAR", "--boxcox", str(lam), str(mean), str(std))
    data = write_synthetic_training_set(tmp_path / "lotss80.h5", n=16, size=80, dataset="lotss")
    out = tmp_path / "tuned.pt"
    settings = {**_settings("lotss", imported, steps=1, val_every=100), "val_max_images": 4, "lr": 1e-12}
    with caplog.at_level(logging.INFO, logger="radiogen.train"):
        assert _run(data, out, settings, seed=3) == {"status": "done", "step": 1}
    assert "keeps the context transform" in caplog.text
    _, meta = load_model(out)
    assert meta["normalisation"] == {"boxcox_lambda": lam, "boxcox_mean": mean, "boxcox_std": std}
    toy = read_training_set(data)
    assert toy.normalisation()["boxcox_lambda"] == 0.0  # the set's own transform differs
    with h5py.File(data) as h5:
        peaks = h5["peak_flux"][()]
    recomputed = boxcox_forward(peaks, lam=lam, mean=mean, std=std)
    counts, edges = np.histogram(recomputed[toy.train_index], bins=100)
    np.testing.assert_allclose(meta["context_histogram"]["edges"], edges, rtol=1e-6)
    assert meta["context_histogram"]["counts"].tolist() == counts.tolist()
    # the step-0 validation loss is the imported model's on the recomputed context
    net, _ = load_model(imported)
    idx = toy.val_index[:4]
    expected = validation_loss(net, to_model_range(torch.from_numpy(toy.images[idx])),
                               torch.from_numpy(recomputed[idx].astype(np.float32))[:, None],
                               sigmas=TINY_TRAIN["val_sigmas"], batch_size=4,
                               seed=seed_stream(3, "train.lotss") + 1)
    np.testing.assert_allclose(meta["history"]["val_raw"][0], expected, rtol=1e-5)
    stored_context = validation_loss(net, to_model_range(torch.from_numpy(toy.images[idx])),
                                     torch.from_numpy(toy.context[idx]), sigmas=TINY_TRAIN["val_sigmas"],
                                     batch_size=4, seed=seed_stream(3, "train.lotss") + 1)
    assert np.abs(np.subtract(stored_context, expected)).max() > 1e-6  # the context matters to this network


def _edit(path, dest, *, drop=(), attrs=None):
    shutil.copy(path, dest)
    with h5py.File(dest, "a") as h5:
        for name in drop:
            del h5[name]
        h5.attrs.update(attrs or {})
    return dest


def test_mismatches_are_refused_naming_the_file(toy_first, toy_lotss, trained_first, tmp_path):
    steps = []

    def refused(data, dataset, init, error, match):
        with pytest.raises(error, match=match) as info:
            _run(data, tmp_path / "out" / "model.pt", _settings(dataset, init), on_step=steps.append)
        assert str(init) in str(info.value)

    refused(toy_lotss, "lotss", trained_first, ConfigError, "a first model cannot be fine-tuned on the lotss")
    other_size = write_synthetic_training_set(tmp_path / "first24.h5", n=20, size=24, dataset="first")
    refused(other_size, "first", trained_first, ConfigError, r"takes 1 x 16 x 16 images.*has 1 x 24 x 24")
    reordered = _edit(toy_first, tmp_path / "reordered.h5", attrs={"class_names": '["FRII", "FRI", "Compact", "Bent"]'})
    refused(reordered, "first", trained_first, ConfigError, "classes .* differ")
    refused(toy_first, "first", tmp_path / "missing.pt", InputFileError, "does not exist")

    # LoTSS: a model whose transform differs from the set's needs the raw peak flux behind the context
    lotss_model = tmp_path / "lotss_model.pt"
    _run(toy_lotss, lotss_model, _settings("lotss", None, steps=1))
    shifted = _edit(toy_lotss, tmp_path / "shifted.h5", attrs={"boxcox_mean": -3.0})  # context no longer fits it
    refused(shifted, "lotss", lotss_model, InputFileError, "does not reproduce its /context")
    no_peaks = _edit(shifted, tmp_path / "no_peaks.h5", drop=["peak_flux"])
    refused(no_peaks, "lotss", lotss_model, ConfigError, "no raw /peak_flux")
    assert steps == []  # every refusal came before the first step
    assert not (tmp_path / "out").exists()


def test_checkpoints_of_a_run_from_another_init_file_are_stale(toy_first, trained_first, tmp_path, caplog):
    """The file's contents (not its path) belong to the run's identity."""
    other = tmp_path / "other.pt"
    _run(toy_first, other, _settings("first", None, steps=2), seed=99)
    out = tmp_path / "run" / "model.pt"
    assert _run(toy_first, out, _settings("first", trained_first), stop_after=2)["status"] == "interrupted"

    moved = tmp_path / "moved.pt"  # same contents, another path: the run resumes
    shutil.copy(trained_first, moved)
    steps = []
    assert _run(toy_first, out, _settings("first", moved), stop_after=1, on_step=steps.append)["step"] == 3
    assert steps == [3]

    strict = {**_settings("first", other), "stale_checkpoints": "error"}
    with pytest.raises(ConfigError, match=r"starting model \(train.init_from\) changed"):
        _run(toy_first, out, strict)
    with pytest.raises(ConfigError, match="now starts from random weights"):
        _run(toy_first, out, {**_settings("first", None), "stale_checkpoints": "error"})
    steps.clear()
    with caplog.at_level(logging.WARNING, logger="radiogen.train"):
        assert _run(toy_first, out, _settings("first", other), on_step=steps.append)["status"] == "done"
    assert "starting model (train.init_from) changed" in caplog.text
    assert steps == [1, 2, 3, 4, 5, 6]  # from step 0 of the new run
    stale = sorted(p.name for p in (out.parent / "checkpoints" / "stale").iterdir())
    assert stale == ["ckpt-000000002.pt", "ckpt-000000003.pt"]


def test_dry_run_shows_the_init_file_as_input_of_the_training_rule(repo_root, tmp_path, trained_first):
    init = tmp_path / "start.pt"
    shutil.copy(trained_first, init)
    extra = tmp_path / "finetune.yaml"
    extra.write_text(f"train:\n  first:\n    init_from: {init}\n")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    target = str(tmp_path / "results" / "models" / "first" / "model.pt")

    def dry_run():
        return subprocess.run(
            [str(bin_dir / "snakemake"), "-n", target, "--configfile", "config.yaml", str(extra),
             "--config", f"results={tmp_path / 'results'}"],
            cwd=repo_root, capture_output=True, text=True, env=env, timeout=300)

    result = dry_run()
    assert result.returncode == 0, result.stderr[-2000:]
    job = result.stdout[result.stdout.index("rule train_first:"):]
    job = job[: job.index("output:")]
    assert str(init) in job
    init.unlink()
    missing = dry_run()
    assert missing.returncode != 0
    assert str(init) in missing.stdout + missing.stderr
