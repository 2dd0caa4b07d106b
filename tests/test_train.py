"""EDM training: resumable runs, learning on a toy set, input checks, CLI, real FIRST pixels."""

from __future__ import annotations

import io
import json
import os
import signal
import zipfile

import h5py
import numpy as np
import pytest
import torch

from radiogen.cli import main as cli_main
from radiogen.errors import ConfigError, InputFileError
from radiogen.model import build_network, load_model
from radiogen.model.data import (
    augment,
    batch_indices,
    read_training_set,
    to_model_range,
    write_synthetic_training_set,
)
from radiogen.model.checkpoints import latest_checkpoint
from radiogen.model.train import launch, train
from radiogen.model.train_settings import resolve_settings
from figures import panels
from kill_at import kill_at

TINY_MODEL = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8}
TINY_TRAIN = {
    "lr": 1e-3,
    "ema_decay": 0.9,
    "channels_last": False,
    "log_every": 2,
    "val_sigmas": [0.05, 0.5],
    "val_max_images": 8,
    "first": {"batch_size": 4, "steps": 6, "val_every": 3, "checkpoint_every": 100},
    "lotss": {"batch_size": 4, "steps": 6, "val_every": 3, "checkpoint_every": 100},
}


# torch on one thread (conftest.py): tiny networks, and two test workers share 2 cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy_first(tmp_path_factory):
    return write_synthetic_training_set(tmp_path_factory.mktemp("toy") / "first.h5", n=40, size=16, dataset="first")


@pytest.fixture(scope="module")
def toy_lotss(tmp_path_factory):
    return write_synthetic_training_set(tmp_path_factory.mktemp("toy") / "lotss.h5", n=40, size=16, dataset="lotss")


def _run(data, out, **kw):
    kw.setdefault("train_settings", TINY_TRAIN)
    kw.setdefault("model_settings", TINY_MODEL)
    return train(data_path=data, out_path=out, seed=11, device="cpu", **kw)


def test_resumed_run_equals_uninterrupted_run(toy_first, tmp_path):
    ref = _run(toy_first, tmp_path / "a" / "model.pt")
    assert ref == {"status": "done", "step": 6}

    out = tmp_path / "b" / "model.pt"

    def sigterm_at_2(step):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as SLURM does before the walltime

    first = _run(toy_first, out, on_step=sigterm_at_2)
    assert first == {"status": "interrupted", "step": 2}
    assert not out.exists()
    assert latest_checkpoint(out.parent / "checkpoints").name == "ckpt-000000002.pt"
    second = _run(toy_first, out, stop_after=2)  # a walltime-limited second job
    assert second == {"status": "interrupted", "step": 4}
    steps_seen = []
    third = _run(toy_first, out, on_step=steps_seen.append)
    assert third == {"status": "done", "step": 6}
    assert steps_seen == [5, 6]  # only the remaining steps are trained

    net_a, meta_a = load_model(tmp_path / "a" / "model.pt")
    net_b, meta_b = load_model(out)
    for (name, pa), pb in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(pa, pb), name
    raw_a = torch.load(latest_checkpoint(tmp_path / "a" / "checkpoints"), weights_only=False)["model"]
    raw_b = torch.load(latest_checkpoint(out.parent / "checkpoints"), weights_only=False)["model"]
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)
    assert meta_a["history"]["train_loss"] == meta_b["history"]["train_loss"]
    assert meta_a["history"]["val_raw"] == meta_b["history"]["val_raw"]


def test_changed_training_set_discards_stale_checkpoints(toy_first, tmp_path, caplog):
    """Issue 10: a finished run's checkpoints must not stand in for training on new data."""
    out = tmp_path / "model.pt"
    assert _run(toy_first, out) == {"status": "done", "step": 6}
    first_weights = load_model(out)[0].state_dict()

    changed = write_synthetic_training_set(tmp_path / "changed.h5", n=40, size=16, dataset="first", seed=99)
    steps_seen = []
    with caplog.at_level("WARNING"):
        assert _run(changed, out, on_step=steps_seen.append) == {"status": "done", "step": 6}
    assert "the training set's contents changed" in caplog.text
    assert steps_seen == [1, 2, 3, 4, 5, 6]  # trained afresh, not "resumed at step 6 of 6"
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "stale").iterdir()) == ["ckpt-000000006.pt"]
    second_weights = load_model(out)[0].state_dict()
    assert any(not torch.equal(first_weights[k], second_weights[k]) for k in first_weights)
    # ... and equals a clean run on the new data
    clean = tmp_path / "clean" / "model.pt"
    _run(changed, clean)
    for key, value in load_model(clean)[0].state_dict().items():
        assert torch.equal(value, second_weights[key]), key


def test_changed_result_setting_discards_but_longer_run_resumes(toy_first, tmp_path, caplog):
    out = tmp_path / "model.pt"
    _run(toy_first, out)
    longer = {**TINY_TRAIN, "first": {**TINY_TRAIN["first"], "steps": 8}}
    steps_seen = []
    assert _run(toy_first, out, train_settings=longer, on_step=steps_seen.append)["step"] == 8
    assert steps_seen == [7, 8]  # more steps of the same run: resumed
    other_lr = {**longer, "lr": 5e-4}
    steps_seen.clear()
    with caplog.at_level("WARNING"):
        _run(toy_first, out, train_settings=other_lr, on_step=steps_seen.append)
    assert steps_seen[0] == 1 and "train.lr changed from 0.001 to 0.0005" in caplog.text


def test_stale_checkpoints_error_when_asked_to_keep_them(toy_first, tmp_path):
    out = tmp_path / "model.pt"
    _run(toy_first, out)
    strict = {**TINY_TRAIN, "stale_checkpoints": "error", "p_mean": 0.0}
    with pytest.raises(ConfigError, match=r"ckpt-000000006\.pt.*belongs to another run: train\.p_mean changed"):
        _run(toy_first, out, train_settings=strict)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "ckpt-000000006.pt"  # untouched


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_newest_checkpoint_falls_back_to_previous(toy_first, tmp_path, caplog, damage):
    ref = tmp_path / "ref" / "model.pt"
    _run(toy_first, ref)
    out = tmp_path / "run" / "model.pt"
    every2 = {**TINY_TRAIN, "first": {**TINY_TRAIN["first"], "checkpoint_every": 2}}
    assert _run(toy_first, out, train_settings=every2, stop_after=4)["step"] == 4
    newest = latest_checkpoint(out.parent / "checkpoints")
    assert newest.name == "ckpt-000000004.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x00not a checkpoint" * 50)
    steps_seen = []
    with caplog.at_level("WARNING"):
        assert _run(toy_first, out, train_settings=every2, on_step=steps_seen.append)["step"] == 6
    assert "ckpt-000000004.pt: unreadable checkpoint" in caplog.text
    assert steps_seen == [3, 4, 5, 6]  # resumed from step 2
    assert (out.parent / "checkpoints" / "corrupt" / "ckpt-000000004.pt").exists()
    for key, value in load_model(ref)[0].state_dict().items():
        assert torch.equal(value, load_model(out)[0].state_dict()[key]), key


def test_model_file_carries_everything_for_sampling(toy_lotss, tmp_path):
    out = tmp_path / "model.pt"
    _run(toy_lotss, out)
    net, meta = load_model(out)
    data = read_training_set(toy_lotss)
    assert meta["dataset"] == "lotss" and meta["step"] == 6
    assert meta["image_size"] == [16, 16] and meta["channels"] == 1
    assert meta["model_config"]["context_dim"] == 1
    assert meta["normalisation"] == pytest.approx(
        {k: float(data.attrs[k]) for k in ("boxcox_lambda", "boxcox_mean", "boxcox_std")}
    )
    hist = meta["context_histogram"]
    assert hist["counts"].shape == (100,) and hist["counts"].sum() == data.train_index.size
    assert hist["edges"][0] == pytest.approx(data.context[data.train_index, 0].min())
    assert meta["train_config"]["batch_size"] == 4 and meta["train_config"]["lr"] == 1e-3
    assert meta["class_names"] is None
    x = torch.randn(2, 1, 16, 16)
    assert net(x, 1.0, torch.zeros(2, 1)).shape == x.shape


@pytest.mark.slow
def test_tiny_model_lowers_validation_loss(tmp_path):
    data = write_synthetic_training_set(tmp_path / "toy.h5", n=96, size=16, dataset="first", seed=3)
    settings = {
        **TINY_TRAIN,
        "lr": 2e-3,
        "val_sigmas": [0.1, 0.5],
        "val_max_images": 32,
        "first": {"batch_size": 16, "steps": 120, "val_every": 20, "checkpoint_every": 1000},
    }
    _run(data, tmp_path / "model.pt", train_settings=settings, model_settings={**TINY_MODEL, "dropout": 0.0})
    _, meta = load_model(tmp_path / "model.pt")
    val = np.mean(meta["history"]["val_raw"], axis=1)
    assert meta["history"]["val_step"] == [0, 20, 40, 60, 80, 100, 120]
    assert val[-1] < 0.7 * val[0], val
    ema = np.mean(meta["history"]["val_ema"], axis=1)
    assert ema[-1] < ema[0]


def _write(path, **datasets):
    with h5py.File(path, "w") as h5:
        for name, value in datasets.items():
            if name == "attrs":
                h5.attrs.update(value)
            else:
                h5[name] = value
    return path


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_context", "missing required dataset.*context"),
        ("nan_image", "NaN/inf"),
        ("nan_context", "/context contains"),
        ("out_of_range", r"\[0, 1\]"),
        ("bad_split", "/split may only hold"),
        ("no_train", "no training images"),
        ("length", "/split has shape"),
        ("no_dataset_attr", "attribute 'dataset'"),
    ],
)
def test_bad_training_files_fail_before_any_step(tmp_path, case, match):
    rng = np.random.default_rng(0)
    images = rng.random((10, 16, 16), dtype=np.float32)
    split = np.zeros(10, np.uint8)
    context = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 10)]
    attrs = {"dataset": "first"}
    if case == "nan_image":
        images[3, 2, 2] = np.nan
    if case == "nan_context":
        context[1, 0] = np.nan
    if case == "out_of_range":
        images[0, 0, 0] = 3.0
    if case == "bad_split":
        split[0] = 2
    if case == "no_train":
        split[:] = 1
    if case == "length":
        split = split[:5]
    if case == "no_dataset_attr":
        attrs = {}
    fields = {"images": images, "split": split, "context": context, "attrs": attrs}
    if case == "missing_context":
        del fields["context"]
    path = _write(tmp_path / f"{case}.h5", **fields)
    steps = []
    with pytest.raises(InputFileError, match=match) as err:
        _run(path, tmp_path / "model.pt", on_step=steps.append)
    assert str(path) in str(err.value)
    assert steps == [] and not (tmp_path / "checkpoints").exists()


def test_image_size_the_network_cannot_take_fails_before_any_step(tmp_path):
    path = write_synthetic_training_set(tmp_path / "odd.h5", n=8, size=18, dataset="first")
    steps = []
    with pytest.raises(ConfigError, match="18x18"):
        _run(path, tmp_path / "model.pt", on_step=steps.append)
    assert steps == []


def test_settings_resolution_and_errors():
    s = resolve_settings({"lr": 1e-4, "first": {"steps": 7}}, "first")
    assert s["batch_size"] == 128 and s["steps"] == 7 and s["lr"] == 1e-4
    assert resolve_settings({}, "lotss")["batch_size"] == 256
    assert resolve_settings({}, "lotss")["steps"] == 200_000
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_settings({"lerning_rate": 1}, "first")
    with pytest.raises(ConfigError, match="precision"):
        resolve_settings({"precision": "fp8"}, "first")


def test_fp16_on_cpu_is_a_config_error(toy_first, tmp_path):
    with pytest.raises(ConfigError, match="fp16"):
        _run(toy_first, tmp_path / "m.pt", train_settings={**TINY_TRAIN, "precision": "fp16"})


def test_bf16_autocast_runs_on_cpu(toy_first, tmp_path):
    settings = {**TINY_TRAIN, "precision": "bf16", "first": {**TINY_TRAIN["first"], "steps": 2}}
    result = _run(toy_first, tmp_path / "m.pt", train_settings=settings)
    assert result["status"] == "done"
    net, meta = load_model(tmp_path / "m.pt")
    assert meta["train_config"]["precision_used"] == "bf16"
    assert all(p.dtype == torch.float32 for p in net.parameters())  # full-precision weights


def test_batches_cover_epochs_and_split_over_ranks():
    n, b = 10, 4
    seen = np.concatenate([batch_indices(n, step=t, global_batch=b, seed=1) for t in range(5)])
    # 20 draws = exactly two epochs, each a permutation of the training split
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    full = batch_indices(n, step=3, global_batch=b, seed=1)
    parts = [batch_indices(n, step=3, global_batch=b, seed=1, rank=r, world=2) for r in range(2)]
    assert np.array_equal(np.concatenate(parts), full)


def test_augmentation_is_flips_and_right_angle_rotations():
    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4).repeat(64, 1, 1, 1)
    out = augment(x)
    # every output is one of the 8 dihedral transforms of its input
    variants = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(-2, -1))
        variants += [r, r.flip(-1)]
    match = torch.stack([(out == v).flatten(1).all(1) for v in variants], 1)
    assert match.any(1).all()
    assert (match.float().mean(0) > 0).all()  # all 8 occur
    assert to_model_range(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]


def test_cli_train_and_plot(toy_first, tmp_path, caplog, saved_figures):
    out = tmp_path / "model.pt"
    args = [
        "train", "run", "--data", str(toy_first), "--out", str(out), "--settings", json.dumps(TINY_TRAIN),
        "--model-settings", json.dumps(TINY_MODEL), "--seed", "5", "--device", "cpu", "--threads", "1",
    ]
    assert cli_main(args + ["--stop-after", "3"]) == 3
    assert not out.exists()
    assert cli_main(args) == 0
    assert out.exists()
    fig = tmp_path / "loss.png"
    assert cli_main(["train", "plot", "--model", str(out), "--out", str(fig)]) == 0
    assert fig.exists()
    # the curves are the model file's training history
    history = load_model(out)[1]["history"]
    loss, per_sigma = panels(saved_figures["loss.png"])
    train_line, raw_line, ema_line = loss.get_lines()
    np.testing.assert_array_equal(train_line.get_xdata(), history["train_step"])
    np.testing.assert_allclose(train_line.get_ydata(), history["train_loss"])
    np.testing.assert_array_equal(raw_line.get_xdata(), history["val_step"])
    np.testing.assert_allclose(raw_line.get_ydata(), [np.mean(v) for v in history["val_raw"]])
    np.testing.assert_allclose(ema_line.get_ydata(), [np.mean(v) for v in history["val_ema"]])
    assert len(per_sigma.get_lines()) == 2 * len(TINY_TRAIN["val_sigmas"])  # raw and EMA per sigma
    assert history["train_step"] == [2, 4, 6] and history["val_step"] == [0, 3, 6]
    bad = _write(tmp_path / "bad.h5", images=np.zeros((4, 16, 16), np.float32))
    assert cli_main(["train", "run", "--data", str(bad), "--out", str(tmp_path / "x.pt")]) == 1
    assert "missing required dataset" in caplog.text


@pytest.mark.slow
def test_two_gloo_processes_train_the_weights_of_one_and_resume(toy_lotss, tmp_path):
    """Data parallelism is exact: two gloo processes at 2 images each end with the weights of
    one process at the same global batch of 4 (augmentation, sigma, noise and context dropout
    are drawn per global batch and each rank keeps its share), and a two-process run stopped
    at step 2 resumes to the uninterrupted two-process weights bit for bit.  Network dropout
    is off: its masks are drawn per rank, so with dropout > 0 the runs agree only in
    distribution."""
    model_settings = {**TINY_MODEL, "dropout": 0.0, "context_dropout": 0.5}
    settings = {**TINY_TRAIN, "lotss": {**TINY_TRAIN["lotss"], "steps": 4, "checkpoint_every": 100}}

    def run(out, nproc, **kw):
        return launch(nproc=nproc, data_path=str(toy_lotss), out_path=str(out), train_settings=settings,
                      model_settings=model_settings, seed=2, device="cpu", **kw)

    def weights(out):
        return torch.load(latest_checkpoint(out.parent / "checkpoints"), weights_only=False)["model"]

    one, two, resumed = (tmp_path / name / "model.pt" for name in ("one", "two", "resumed"))
    assert run(one, 1) == {"status": "done", "step": 4}
    assert run(two, 2) == {"status": "done", "step": 4}
    assert run(resumed, 2, stop_after=2) == {"status": "interrupted", "step": 2}
    assert not resumed.exists()
    assert run(resumed, 2) == {"status": "done", "step": 4}
    (net1, meta1), (net2, meta2) = load_model(one), load_model(two)
    assert (meta1["train_config"]["world_size"], meta2["train_config"]["world_size"]) == (1, 2)

    torch.manual_seed(2)
    initial = build_network(meta1["model_config"]).state_dict()
    w1, w2, w3 = weights(one), weights(two), weights(resumed)
    moved = [k for k in w1 if w1[k].is_floating_point() and not torch.allclose(w1[k], initial[k], atol=1e-4)]
    assert len(moved) > len(w1) // 2  # four Adam steps at lr 1e-3 moved most tensors
    inner = model_settings["attention_head_channels"] * 2  # 2 heads
    for key in w1:
        assert torch.equal(w3[key], w2[key]), key
        a, b = w2[key], w1[key]
        if key.endswith("qkv.bias"):
            # The key bias is a no-op (softmax over positions ignores a constant): its exact
            # gradient is 0, its computed one rounding noise, which Adam scales up to lr-sized
            # steps.  Compare the query and value biases.
            a, b = torch.cat([a[:inner], a[2 * inner:]]), torch.cat([b[:inner], b[2 * inner:]])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=key)
    # the EMA networks (the model files) denoise alike
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma, context = torch.tensor([0.1, 1.0, 10.0]), torch.tensor([[-1.0], [0.0], [1.0]])
    with torch.no_grad():
        torch.testing.assert_close(net2(x, sigma, context), net1(x, sigma, context), rtol=1e-4, atol=1e-5)


def _first_pngs_training_set(zip_path, path, *, per_class=6, size=80):
    """Training set from real FIRST PNGs (centre crop, [0, 1]) following the contract."""
    from PIL import Image

    names = ["FRI", "FRII", "Compact", "Bent"]
    images, labels = [], []
    with zipfile.ZipFile(zip_path) as z:
        members = sorted(m for m in z.namelist() if m.endswith(".png") and "/train/" in m and "__MACOSX" not in m)
        for label, name in enumerate(names):
            chosen = [m for m in members if f"/{name}/" in m][:per_class]
            for m in chosen:
                img = np.asarray(Image.open(io.BytesIO(z.read(m))).convert("L"), dtype=np.float32) / 255.0
                h0 = (img.shape[0] - size) // 2
                crop = img[h0 : h0 + size, h0 : h0 + size]
                images.append((crop - crop.min()) / max(crop.max() - crop.min(), 1e-6))
                labels.append(label)
    labels = np.asarray(labels)
    split = (np.arange(labels.size) % 5 == 0).astype(np.uint8)
    with h5py.File(path, "w") as h5:
        h5["images"] = np.stack(images).astype(np.float32)
        h5["split"] = split
        h5["context"] = np.eye(4, dtype=np.float32)[labels]
        h5["label"] = labels.astype(np.int64)
        h5.attrs.update(dataset="first", class_names=json.dumps(names), pixel_scale_arcsec=1.8)
    return path


def test_training_on_real_first_pixels(first_zip, tmp_path):
    data = _first_pngs_training_set(first_zip, tmp_path / "first.h5")
    out = tmp_path / "model.pt"
    settings = {**TINY_TRAIN, "first": {"batch_size": 4, "steps": 3, "val_every": 100, "checkpoint_every": 100}}
    assert _run(data, out, train_settings=settings)["status"] == "done"
    net, meta = load_model(out)
    assert meta["image_size"] == [80, 80]
    assert meta["class_names"] == ["FRI", "FRII", "Compact", "Bent"]
    assert meta["context_histogram"] is None
    assert meta["history"]["val_step"] == [0, 3]  # before the first step and at the end
    assert np.isfinite(meta["history"]["val_raw"]).all()


def test_rerun_after_kill_9_equals_uninterrupted_run(toy_first, tmp_path):
    """kill -9 (OOM killer, node failure) gives no chance to checkpoint: the rerun resumes
    from the last periodic checkpoint (step 10 of 20, where the test hook holds the run until
    the kill) and still ends with the uninterrupted run's weights."""
    import subprocess
    import sys

    settings = {**TINY_TRAIN, "first": {**TINY_TRAIN["first"], "steps": 20, "checkpoint_every": 5}}

    def command(out):
        return [sys.executable, "-m", "radiogen.cli", "train", "run", "--data", str(toy_first), "--out", str(out),
                "--settings", json.dumps(settings), "--model-settings", json.dumps(TINY_MODEL),
                "--seed", "11", "--device", "cpu", "--threads", "1"]

    killed = tmp_path / "killed" / "model.pt"
    killed.parent.mkdir()
    kill_at(command(killed), "train.checkpoint", 10, tmp_path / "killed.log")
    assert not killed.exists()
    assert latest_checkpoint(killed.parent / "checkpoints").name == "ckpt-000000010.pt"
    rerun = subprocess.run(command(killed), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed from step 10" in rerun.stderr
    clean = tmp_path / "clean" / "model.pt"
    assert subprocess.run(command(clean), capture_output=True, timeout=300).returncode == 0
    for key, value in load_model(clean)[0].state_dict().items():
        assert torch.equal(value, load_model(killed)[0].state_dict()[key]), key


def test_no_host_synchronisation_or_rank_meeting_between_log_points(toy_lotss, tmp_path):
    """Between log points a step neither reads a tensor back to the host (``.item()``) nor meets
    the other ranks except in DistributedDataParallel's gradient all-reduce: the stop request is
    agreed at log points (and checkpoints, every STOP_CHECK_EVERY steps) only, the constant
    buffers are not broadcast every forward.  Counted by a dispatch mode in each gloo worker
    (tests/host_syncs.py); step 1 is left out (DDP rebuilds its buckets after it)."""
    from host_syncs import HostSyncCounter, read_counts

    from radiogen.model.train import STOP_CHECK_EVERY

    settings = {**TINY_TRAIN, "log_every": 4, "val_sigmas": [0.5], "val_max_images": 4,
                "lotss": {"batch_size": 4, "steps": 8, "val_every": 100, "checkpoint_every": 100}}
    assert STOP_CHECK_EVERY > 8
    parameters = sum(p.numel() for p in build_network(
        {**TINY_MODEL, "image_channels": 1, "image_size": [16, 16], "context_dim": 1}).parameters())
    for nproc in (2, 1):
        folder = tmp_path / f"n{nproc}"
        folder.mkdir()
        assert launch(nproc=nproc, data_path=str(toy_lotss), out_path=str(folder / "model.pt"),
                      train_settings=settings, model_settings=TINY_MODEL, seed=3, device="cpu",
                      on_step=HostSyncCounter(str(folder))) == {"status": "done", "step": 8}
        counts = read_counts(folder)
        assert sorted(counts) == list(range(nproc))
        for rank, per_step in counts.items():
            assert sorted(per_step) == list(range(1, 8)), (nproc, rank)
            for step in (2, 3, 5, 6, 7):
                ops = per_step[step]
                assert "_local_scalar_dense" not in ops, (nproc, rank, step, ops)
                meetings = {k: v for k, v in ops.items() if k.startswith(("allreduce_", "broadcast_", "allgather_",
                                                                           "barrier", "reduce_"))}
                expected = {"allreduce_": 1, f"allreduce_:{parameters}": 1} if nproc > 1 else {}
                assert meetings == expected, (nproc, rank, step, ops)
            # the log point after step 4 does read and (with two ranks) agree: the counter sees them
            assert per_step[4].get("_local_scalar_dense", 0) > 0
            if nproc > 1:
                assert per_step[4].get("allreduce_:1", 0) >= 1  # the stop flag
