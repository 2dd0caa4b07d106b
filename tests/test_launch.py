"""Launching training on clusters: SLURM/torchrun environments, devices, early signals,
non-finite losses, HDF5 without file locks.  The multi-task runs under a real SLURM
are in tests/test_slurm.py."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from radiogen.errors import ConfigError, TrainingError
from radiogen.model.checkpoints import checkpoint_files, latest_checkpoint
from radiogen.model.data import write_synthetic_training_set
from radiogen.model.distributed import (
    PORT_BASE,
    PORT_SPAN,
    device_index,
    first_host,
    rendezvous_port,
    slurm_to_torch_env,
    tasks_on_node,
)
from radiogen.model.train import train

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8}
TINY_TRAIN = {
    "lr": 1e-3, "ema_decay": 0.9, "channels_last": False, "log_every": 2, "val_sigmas": [0.5],
    "val_max_images": 4,
    "first": {"batch_size": 4, "steps": 6, "val_every": 100, "checkpoint_every": 100},
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy_first(tmp_path_factory):
    return write_synthetic_training_set(tmp_path_factory.mktemp("toy") / "first.h5", n=24, size=16, dataset="first")


# --------------------------------------------------------------------------- environments

#: Task 1 of `sbatch -n 2` + `srun -n 2 radiogen train run` (variables as SLURM 22.05 sets them).
SBATCH_SRUN_TASK1 = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "4", "SLURM_NPROCS": "4",
    "SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_STEP_NUM_NODES": "2",
    "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_LAUNCH_NODE_IPADDR": "10.1.0.7",
}


def test_sbatch_plus_srun_tasks_form_one_process_group():
    env = dict(SBATCH_SRUN_TASK1)
    assert slurm_to_torch_env(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"]) == ("3", "4", "1", "2")
    assert env["MASTER_ADDR"] == "gpu07"  # the step's first node, where rank 0 runs
    assert env["MASTER_PORT"] == str(rendezvous_port(4242, 0))


def test_salloc_plus_srun_meets_on_the_first_compute_node_not_the_login_node():
    """Under salloc, srun runs on the login node: SLURM_LAUNCH_NODE_IPADDR is not a node of the step."""
    env = {
        "SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "n[0003,0011-0012]", "SLURM_NTASKS": "3",
        "SLURM_STEP_ID": "2", "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NODELIST": "n[0011-0012],n0003",
        "SLURM_STEP_TASKS_PER_NODE": "1(x3)", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
        "SLURM_LAUNCH_NODE_IPADDR": "192.168.1.2", "SLURM_SUBMIT_HOST": "login1",
    }
    assert slurm_to_torch_env(env)
    assert env["MASTER_ADDR"] == "n0011"
    assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == ("3", "1")
    # another step of the same job gets another port
    assert env["MASTER_PORT"] == str(rendezvous_port(77, 2)) != str(rendezvous_port(77, 0))


def test_batch_script_without_srun_is_not_a_process_group():
    """`sbatch -n 2` whose script calls radiogen directly: one process, which must not wait for a second."""
    env = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "2", "SLURM_NPROCS": "2", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "vm"}
    before = dict(env)
    assert not slurm_to_torch_env(env)
    assert env == before


def test_torchrun_variables_win_over_slurm():
    env = {**SBATCH_SRUN_TASK1, "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
           "MASTER_ADDR": "gpu07", "MASTER_PORT": "29500"}
    before = dict(env)
    assert not slurm_to_torch_env(env)
    assert env == before


def test_master_port_from_the_environment_is_kept():
    env = {**SBATCH_SRUN_TASK1, "MASTER_PORT": "23456", "MASTER_ADDR": "ib-gpu07"}
    slurm_to_torch_env(env)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("ib-gpu07", "23456")


@pytest.mark.parametrize("nodelist, host", [
    ("vm", "vm"), ("gpu[07-08]", "gpu07"), ("gpu[012,3-4],big1", "gpu012"), ("big1,gpu[1-2]", "big1"),
    ("rack[2-3]-n[08-09]", "rack2-n08"), ("a-b.c[9]", "a-b.c9"),
])
def test_first_host_of_a_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_tasks_per_node_and_ports():
    assert [tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    with pytest.raises(ConfigError, match="node index 4"):
        tasks_on_node("2(x3),1", 4)
    ports = {rendezvous_port(job, step) for job in range(0, 200000, 997) for step in (0, 1)}
    assert min(ports) >= PORT_BASE and max(ports) < PORT_BASE + PORT_SPAN <= 32768  # below the ephemeral range


def test_device_of_each_process():
    assert [device_index(r, 4, 4) for r in range(4)] == [0, 1, 2, 3]  # all GPUs of the node visible
    assert [device_index(r, 4, 1) for r in range(4)] == [0, 0, 0, 0]  # --gpus-per-task: one each
    with pytest.raises(ConfigError, match="4 training processes on this node but only 2 CUDA devices"):
        device_index(3, 4, 2)
    with pytest.raises(ConfigError, match="no CUDA device"):
        device_index(0, 1, 0)


# --------------------------------------------------------------------------- signals


def _command(data, out, settings, *extra):
    return [sys.executable, "-m", "radiogen.cli", "train", "run", "--data", str(data), "--out", str(out),
            "--settings", json.dumps(settings), "--model-settings", json.dumps(TINY_MODEL),
            "--seed", "3", "--device", "cpu", "--threads", "1", *extra]


def test_early_signal_sigurg_checkpoints_and_stops(toy_first, tmp_path):
    """SIGURG (the profile's sbatch --signal=URG@N) mid-run: a checkpoint, exit status 3, and the
    rerun finishes; SIGURG's default action (ignore) spares Snakemake and the shell around the job."""
    settings = {**TINY_TRAIN, "first": {**TINY_TRAIN["first"], "steps": 100000, "checkpoint_every": 100000}}
    out = tmp_path / "model.pt"
    log = tmp_path / "train.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(_command(toy_first, out, settings),
                                stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "step 2/" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGURG)
        assert proc.wait(timeout=240) == 3, log.read_text()[-3000:]
    text = log.read_text()
    assert f"received signal {int(signal.SIGURG)}" in text
    [ckpt] = checkpoint_files(tmp_path / "checkpoints")
    step = int(ckpt.stem.split("-")[-1])
    assert 2 <= step < 100000 and not out.exists()
    assert f"stopped at step {step} of 100000" in text


# --------------------------------------------------------------------------- non-finite loss


def test_non_finite_loss_stops_before_any_later_checkpoint(toy_first, tmp_path):
    """A diverging run (lr 1e30: weights ~1e30 after one Adam step, inf/NaN activations next): the
    error names the first bad step and no checkpoint is written from that step on, although one is
    due every step."""
    settings = {**TINY_TRAIN, "lr": 1e30, "log_every": 4,
                "first": {**TINY_TRAIN["first"], "steps": 8, "checkpoint_every": 1}}
    with pytest.raises(TrainingError, match=r"non-finite training loss \(NaN or inf\) at step (\d+)") as info:
        train(data_path=toy_first, out_path=tmp_path / "model.pt", train_settings=settings,
              model_settings=TINY_MODEL, seed=3, device="cpu")
    bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    assert bad_step >= 2
    steps = [int(p.stem.split("-")[-1]) for p in checkpoint_files(tmp_path / "checkpoints")]
    assert steps and max(steps) < bad_step, (steps, bad_step)
    assert not (tmp_path / "model.pt").exists()
    # every written checkpoint holds finite weights
    state = torch.load(latest_checkpoint(tmp_path / "checkpoints"), weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_gradients_are_sanitised(toy_first, tmp_path):
    """An inf in the gradient of one parameter does not reach the weights (Karras et al.'s nan_to_num)."""
    from radiogen.model.train import _sanitise_gradients

    net = torch.nn.Linear(2, 2)
    net.weight.grad = torch.tensor([[float("nan"), float("inf")], [-float("inf"), 1.0]])
    _sanitise_gradients(net)
    assert torch.equal(net.weight.grad, torch.tensor([[0.0, 1e5], [-1e5, 1.0]]))


# --------------------------------------------------------------------------- HDF5 on cluster file systems


def test_radiogen_reads_hdf5_that_another_process_holds_locked(toy_first, tmp_path):
    """File systems without flock (Lustre, GPFS) make HDF5's locking fail; radiogen turns it off
    (HDF5_USE_FILE_LOCKING=FALSE unless set): a file held under an exclusive flock still opens."""
    locked = tmp_path / "locked.h5"
    locked.write_bytes(Path(toy_first).read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "lib"), env.get("PYTHONPATH", "")])
    read = ("import sys; from radiogen.model.data import read_training_set; "
            "print(read_training_set(sys.argv[1]).images.shape[0])")
    plain = "import sys, h5py; h5py.File(sys.argv[1], 'r')"
    fd = os.open(locked, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with_radiogen = subprocess.run([sys.executable, "-c", read, str(locked)], env=env, capture_output=True,
                                       text=True, timeout=120)
        without = subprocess.run([sys.executable, "-c", plain, str(locked)], env=env, capture_output=True,
                                 text=True, timeout=120)
    finally:
        os.close(fd)
    assert with_radiogen.returncode == 0, with_radiogen.stderr[-2000:]
    assert with_radiogen.stdout.strip() == "24"
    # the same open without radiogen fails: the lock is real, and radiogen's setting is what helps
    assert without.returncode != 0 and "lock" in without.stderr
