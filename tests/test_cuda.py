"""CUDA paths: bf16 training, NCCL data parallelism, GPU sampling vs CPU, GPU checkpoints on the CPU.

Every test skips, with the reason, where torch sees no CUDA device (CI, the
CPU dev machines).  On a GPU machine without radiogen installed::

    PYTHONPATH=lib python3 -m pytest -q tests/test_cuda.py

``benchmarks/gpu_check`` measures the paper-scale speeds; these tests check
that the CUDA code paths give the right results.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from radiogen.model import build_network, load_model, model_config_from
from radiogen.model.data import write_synthetic_training_set
from radiogen.model.checkpoints import latest_checkpoint
from radiogen.model.train import launch, train
from radiogen.sampler.generate import generate_images, image_noise
from radiogen.sampler.heun import sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False)")

REPO = Path(__file__).resolve().parent.parent
SMALL_MODEL = {"base_channels": 16, "norm_groups": 8, "attention_head_channels": 8}
CLASS_NAMES = ["FRI", "FRII", "Compact", "Bent"]


def _native_bf16() -> bool:
    # torch.cuda.is_bf16_supported() is also True where bf16 is only emulated (before Ampere).
    return torch.cuda.get_device_capability()[0] >= 8


def _settings(*, batch: int = 8, steps: int = 4, **extra) -> dict:
    """Short-run training settings; ema_decay 0 makes the saved (EMA) weights the raw weights."""
    return {
        "lr": 1e-3,
        "ema_decay": 0.0,
        "log_every": 1,
        "val_sigmas": [0.05, 1.0],
        "val_max_images": 16,
        **extra,
        "first": {"batch_size": batch, "steps": steps, "val_every": 100, "checkpoint_every": 100},
    }


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_synthetic_training_set(tmp_path_factory.mktemp("cuda") / "first.h5", n=64, size=16,
                                        dataset="first", seed=5)


@pytest.fixture
def exact_fp32():
    """fp32 on the GPU without TF32, so GPU and CPU agree to float32 rounding."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _initial_network(meta: dict):
    # train() seeds with the run seed (stored as train_config["seed"]) right before building.
    torch.manual_seed(int(meta["train_config"]["seed"]))
    return build_network(meta["model_config"])


def _perturbed_network(image_size: int = 16, context_dim: int = 4):
    """A small network with its zero-initialised output layers perturbed, so D is not trivial."""
    cfg = model_config_from(SMALL_MODEL, image_channels=1, image_size=[image_size] * 2, context_dim=context_dim)
    torch.manual_seed(0)
    net = build_network(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return net.eval(), cfg


def _first_meta(image_size: int = 16) -> dict:
    return {"dataset": "first", "class_names": CLASS_NAMES, "image_size": [image_size] * 2, "channels": 1}


# --------------------------------------------------------------------------- training


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability()[0] < 8,
                    reason="this GPU has no native bf16 (train.precision auto means fp16 there)")
def test_bf16_training_steps_on_cuda(toy, tmp_path):
    out = tmp_path / "model.pt"
    result = train(data_path=toy, out_path=out, train_settings=_settings(precision="bf16", channels_last=True),
                   model_settings=SMALL_MODEL, seed=3, device="cuda")
    assert result == {"status": "done", "step": 4}
    net, meta = load_model(out, device="cpu")
    assert meta["train_config"]["precision_used"] == "bf16"
    assert meta["train_config"]["world_size"] == 1
    history = meta["history"]
    assert len(history["train_loss"]) == 4 and np.isfinite(history["train_loss"]).all()
    assert np.isfinite(history["val_raw"]).all() and np.isfinite(history["val_ema"]).all()
    init = dict(_initial_network(meta).named_parameters())
    trained = dict(net.named_parameters())
    assert all(torch.isfinite(p).all() for p in trained.values())
    changed = [name for name, p in init.items() if not torch.equal(p, trained[name])]
    assert len(changed) > 0.9 * len(init), f"only {len(changed)} of {len(init)} parameter tensors changed"


def test_auto_precision_resolves_to_a_gpu_precision(toy, tmp_path):
    out = tmp_path / "model.pt"
    train(data_path=toy, out_path=out, train_settings=_settings(steps=2), model_settings=SMALL_MODEL,
          seed=1, device="cuda")
    _, meta = load_model(out)
    expected = "bf16" if _native_bf16() else "fp16"  # README: fp16 + loss scaling on older GPUs
    assert meta["train_config"]["precision_used"] == expected, torch.cuda.get_device_name()


@pytest.mark.slow
def test_launch_with_one_process_per_gpu(toy, tmp_path):
    """launch(nproc=<GPU count>): NCCL data parallelism when there are several GPUs."""
    n = torch.cuda.device_count()
    out = tmp_path / "model.pt"
    result = launch(nproc=n, data_path=str(toy), out_path=str(out),
                    train_settings=_settings(batch=4 * n, steps=3, channels_last=True),
                    model_settings=SMALL_MODEL, seed=2, device="cuda")
    assert result == {"status": "done", "step": 3}
    _, meta = load_model(out)
    assert meta["train_config"]["world_size"] == n
    assert np.isfinite(meta["history"]["train_loss"]).all()


NCCL_SCRIPT = textwrap.dedent(
    """
    import os, torch, torch.distributed as dist
    from radiogen.model import build_network, model_config_from
    from radiogen.model.loss import denoising_loss, sample_sigma

    dist.init_process_group("nccl", rank=0, world_size=1)
    device = torch.device("cuda:0")
    torch.cuda.set_device(device)
    cfg = model_config_from({"base_channels": 16, "norm_groups": 8, "attention_head_channels": 8},
                            image_channels=1, image_size=[16, 16], context_dim=4)
    torch.manual_seed(0)
    net = build_network(cfg).to(device).to(memory_format=torch.channels_last)
    # as radiogen.model.train wraps it (no find_unused_parameters)
    model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(3):  # an unused parameter would fail the second step
        x = (torch.rand(8, 1, 16, 16, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
        c = torch.eye(4, device=device)[torch.arange(8, device=device) % 4]
        sigma = sample_sigma(8, p_mean=-2.5, p_std=1.8, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = denoising_loss(model, x, sigma, torch.randn_like(x), context=c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss), loss
    flag = torch.ones(1, device=device)
    dist.all_reduce(flag)
    assert flag.item() == 1.0
    dist.destroy_process_group()
    print("NCCL-OK", dist.is_nccl_available())
    """
)


def test_nccl_process_group_of_one_gpu():
    """A one-process NCCL group with the DDP wrapping train() uses (valid on a 1-GPU machine)."""
    from radiogen.model.distributed import free_port

    path = [str(REPO / "lib")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run([sys.executable, "-c", NCCL_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "NCCL-OK True" in proc.stdout


# --------------------------------------------------------------------------- sampling


def test_sampler_auto_precision_on_cuda():
    from radiogen.sampler.generate import resolve_autocast

    cuda = torch.device("cuda")
    assert resolve_autocast("auto", cuda) == (torch.bfloat16 if _native_bf16() else None)
    assert resolve_autocast("bf16", cuda) == torch.bfloat16
    assert resolve_autocast("fp32", cuda) is None


def test_cuda_sampling_equals_cpu_sampling_in_fp32(exact_fp32):
    """Same network, same per-image noise (also for churn): the GPU gives the CPU's images."""
    net, _ = _perturbed_network()
    meta = _first_meta()
    kw = dict(seed=4, guidance=0.75, settings={"n_per_class": 2}, batch_size=8,
              sampler={"num_steps": 6, "S_churn": 5.0, "S_min": 0.05, "S_max": 50.0})
    cpu = generate_images(net, meta, np.arange(8), device="cpu", **kw)
    gpu = generate_images(copy.deepcopy(net).to("cuda"), meta, np.arange(8), device="cuda", **kw)
    assert cpu["images"].std() > 1e-3  # not a constant image: the comparison means something
    np.testing.assert_array_equal(cpu["label"], gpu["label"])
    np.testing.assert_allclose(gpu["images"], cpu["images"], atol=2e-3, rtol=0)


def test_cuda_bf16_sampling_close_to_cpu_fp32():
    net, _ = _perturbed_network()
    noise, _ = image_noise(9, range(8), (1, 16, 16))
    context = torch.eye(4)[torch.arange(8) % 4]
    with torch.no_grad():
        ref = sample(net, noise, context=context, guidance=0.75, num_steps=8)
        gpu = sample(copy.deepcopy(net).to("cuda"), noise.to("cuda"), context=context.to("cuda"), guidance=0.75,
                     num_steps=8, autocast_dtype=torch.bfloat16)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    gpu = gpu.cpu()
    assert torch.isfinite(gpu).all()
    rel = float((gpu - ref).norm() / ref.norm())
    assert rel < 0.05, f"bf16 GPU vs fp32 CPU relative L2 error {rel:.3g}"
    # and bf16 did run: fp32 GPU vs CPU agree to ~1e-6, bf16 rounds at 2^-9 per operation
    assert rel > 1e-4, f"bf16 GPU equals fp32 CPU to {rel:.3g}: autocast did not take effect"
    assert float((gpu - ref).abs().max()) < 0.1 * float(ref.abs().max())


# --------------------------------------------------------------------------- checkpoints across devices


def test_cuda_checkpoint_resumes_on_cpu(toy, tmp_path):
    out = tmp_path / "model.pt"
    kw = dict(data_path=toy, out_path=out, train_settings=_settings(steps=4), model_settings=SMALL_MODEL, seed=6)
    assert train(device="cuda", stop_after=2, **kw) == {"status": "interrupted", "step": 2}
    ckpt = latest_checkpoint(tmp_path / "checkpoints")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["step"] == 2 and "cuda" in state["rng"]
    steps = []
    assert train(device="cpu", on_step=steps.append, **kw) == {"status": "done", "step": 4}
    assert steps == [3, 4]
    net, meta = load_model(out, device="cpu")
    assert meta["history"]["train_step"] == [1, 2, 3, 4]
    assert meta["train_config"]["precision_used"] == "fp32"  # the CPU part
    assert all(p.device.type == "cpu" for p in net.parameters())
    x = torch.randn(2, 1, 16, 16)
    assert torch.isfinite(net(x, 0.5, torch.eye(4)[:2])).all()


def test_cuda_trained_model_loads_on_cpu_and_gpu_alike(toy, tmp_path, exact_fp32):
    out = tmp_path / "model.pt"
    train(data_path=toy, out_path=out, train_settings=_settings(steps=3), model_settings=SMALL_MODEL, seed=7,
          device="cuda")
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())  # saved device-free
    cpu_net, _ = load_model(out, device="cpu")
    gpu_net, _ = load_model(out, device="cuda")
    assert all(p.device.type == "cuda" for p in gpu_net.parameters())
    x = torch.randn(4, 1, 16, 16)
    c = torch.eye(4)
    with torch.no_grad():
        a = cpu_net(x, 0.7, c)
        b = gpu_net(x.cuda(), 0.7, c.cuda()).cpu()
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
