"""Autoguidance (Karras et al. 2024): guiding a model with a weaker model of itself.

The sampler, the shard jobs, the training run's EMA snapshots that serve as
guides, and the settings that choose a guide.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from radiogen.config import check_settings
from radiogen.errors import ConfigError, InputFileError, TrainingError
from radiogen.model import build_network, load_model
from radiogen.model.data import write_synthetic_training_set
from radiogen.model.train import snapshot_path, train
from radiogen.sampler import shards
from radiogen.sampler.heun import guided_denoiser
from radiogen.sampler.workflow import parse_guide
from tiny_models import TINY, save_tiny_model

SAMPLER = {"num_steps": 3}
FIRST = {"n_per_class": 2}

# torch on one thread (conftest.py): tiny networks, and two test workers share 2 cores
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_guided_denoiser_extrapolates_from_the_guide_to_the_model():
    torch.manual_seed(0)
    net, weak = (build_network({**TINY, "context_dim": 4}).eval() for _ in range(2))
    with torch.no_grad():  # untrained output layers are zero: D = c_skip x for any network
        for param in [*net.parameters(), *weak.parameters()]:
            param.normal_(0.0, 0.2)
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    context = torch.eye(4)[:3]
    with torch.no_grad():
        d_net = guided_denoiser(net, x, 0.7, context=context)
        d_weak = guided_denoiser(weak, x, 0.7, context=context)
        auto = guided_denoiser(net, x, 0.7, context=context, guidance=2.0, guide=weak)
        by_itself = guided_denoiser(net, x, 0.7, context=context, guidance=2.0, guide=net)
        cfg = guided_denoiser(net, x, 0.7, context=context, guidance=2.0)
    # D_w = (1 + w) D(x | c) - w D_guide(x | c), both conditioned (Karras et al. 2024, Eq. 1)
    torch.testing.assert_close(auto, 3.0 * d_net - 2.0 * d_weak)
    # a model guided by itself is not guided at all; classifier-free guidance is another thing
    torch.testing.assert_close(by_itself, d_net)
    assert not torch.allclose(cfg, auto)
    with torch.no_grad():  # w = 0: the guide is never asked
        torch.testing.assert_close(guided_denoiser(net, x, 0.7, context=context, guide=weak), d_net)


def test_shards_guided_by_a_model_record_it_and_do_not_mix(tmp_path):
    model = save_tiny_model(tmp_path / "model.pt", "first", seed=1, weights_std=0.2)
    weak = save_tiny_model(tmp_path / "weak.pt", "first", seed=2, weights_std=0.2)

    def shard(name, guidance, guide=None):
        return shards.write_shard(model, tmp_path / name / "0000.h5", shard=0, seed=5, guidance=guidance,
                                  settings=FIRST, sampler=SAMPLER, images_per_shard=8, batch_size=4,
                                  device="cpu", guide_path=guide)

    paths = {"cfg": shard("cfg", 1.5), "auto": shard("auto", 1.5, weak), "self": shard("self", 1.5, model),
             "plain": shard("plain", 0.0)}
    images, guides = {}, {}
    for name, path in paths.items():
        with h5py.File(path) as h5:
            images[name], guides[name] = h5["images"][()], h5.attrs["guide"]
    assert guides["cfg"] == guides["plain"] == shards.UNCONDITIONAL
    assert guides["auto"] == f"model {shards.model_id(weak)}" != guides["self"]
    # the same latents: guided by itself is the unguided set, the other guides change the images
    np.testing.assert_allclose(images["self"], images["plain"], atol=1e-6)
    assert np.abs(images["auto"] - images["cfg"]).max() > 1e-3
    assert np.abs(images["auto"] - images["plain"]).max() > 1e-3
    with pytest.raises(InputFileError, match="guide"):
        shards.aggregate_shards([paths["cfg"], _renamed(paths["auto"], tmp_path / "0001.h5", shard=1)],
                                tmp_path / "mixed.h5")


def _renamed(path, target, *, shard):
    target.write_bytes(path.read_bytes())
    with h5py.File(target, "a") as h5:
        h5.attrs["shard"] = shard
        h5.attrs["n_shards"] = 2
    return target


def test_a_guide_of_another_kind_is_refused_naming_both_files(tmp_path):
    model = save_tiny_model(tmp_path / "first.pt", "first")
    lotss = save_tiny_model(tmp_path / "lotss.pt", "lotss")
    with pytest.raises(InputFileError, match=r"lotss\.pt: a guide must be a model of the same kind as .*first\.pt"):
        shards.write_shard(model, tmp_path / "s.h5", shard=0, seed=5, guidance=1.0, settings=FIRST,
                           sampler=SAMPLER, images_per_shard=8, device="cpu", guide_path=lotss)
    assert not (tmp_path / "s.h5").exists()


TRAIN = {"lr": 1e-3, "ema_decay": 0.9, "channels_last": False, "log_every": 2, "val_sigmas": [0.5],
         "val_max_images": 8, "keep_checkpoints": 10,
         "first": {"batch_size": 4, "steps": 6, "val_every": 100, "checkpoint_every": 100, "snapshot_steps": [3]}}
MODEL = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8}


def test_training_keeps_the_ema_snapshot_of_each_snapshot_step(tmp_path):
    data = write_synthetic_training_set(tmp_path / "toy.h5", n=24, size=16, dataset="first")
    out = tmp_path / "model" / "model.pt"
    train(data_path=data, out_path=out, seed=3, device="cpu", train_settings=TRAIN, model_settings=MODEL,
          checkpoint_dir=tmp_path / "ckpt")
    snapshot = snapshot_path(out, 3)
    assert snapshot == tmp_path / "model" / "snapshots" / "model-step3.pt"
    net, meta = load_model(snapshot)
    final, final_meta = load_model(out)
    assert meta["step"] == 3 and final_meta["step"] == 6
    assert meta["class_names"] == final_meta["class_names"]
    # the snapshot holds the EMA weights of step 3, as its checkpoint does
    state = torch.load(tmp_path / "ckpt" / "ckpt-000000003.pt", weights_only=False)["ema"]
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, state[name])
    assert any(not torch.equal(value, final.state_dict()[name]) for name, value in net.state_dict().items())


def test_a_resume_past_a_lost_snapshot_stops_with_a_clear_error(tmp_path):
    data = write_synthetic_training_set(tmp_path / "toy.h5", n=24, size=16, dataset="first")
    out = tmp_path / "model.pt"
    kw = dict(data_path=data, out_path=out, seed=3, device="cpu", model_settings=MODEL,
              checkpoint_dir=tmp_path / "ckpt")
    result = train(**kw, train_settings=TRAIN, stop_after=4)
    assert result["status"] == "interrupted" and snapshot_path(out, 3).exists()
    snapshot_path(out, 3).unlink()
    with pytest.raises(TrainingError, match=r"past snapshot step\(s\) \[3\] .*model-step3.pt"):
        train(**kw, train_settings=TRAIN)
    assert not out.exists()


def test_guide_settings_are_checked_against_the_snapshots_the_run_keeps():
    assert parse_guide("unconditional", dataset="first", snapshot_steps=[]) == ("unconditional", None)
    assert parse_guide("checkpoint 600", dataset="first", snapshot_steps=[600]) == ("checkpoint", 600)
    assert parse_guide("model /data/small.pt", dataset="lotss", snapshot_steps=[]) == ("model", "/data/small.pt")
    with pytest.raises(ConfigError, match=r"sample.first.guide: 'checkpoint 700' needs 700 in "
                                          r"train.first.snapshot_steps \(now \[600\]\)"):
        parse_guide("checkpoint 700", dataset="first", snapshot_steps=[600])
    with pytest.raises(ConfigError, match="sample.lotss.guide must be"):
        parse_guide("checkpoint", dataset="lotss", snapshot_steps=[])
    config = {"sample": {"first": {"guide": "checkpoint 50"}}, "train": {"first": {"steps": 40,
                                                                                  "snapshot_steps": [50]}}}
    with pytest.raises(ConfigError, match=r"snapshot_steps must lie in \[1, steps = 40\)"):
        check_settings(config)
