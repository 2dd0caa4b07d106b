"""The process group of data-parallel training: environment, devices, rendezvous.

Training joins a process group described by the environment: ``torchrun``
(``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``), the tasks of a
SLURM job step started by ``srun`` (translated here by
:func:`slurm_to_torch_env`), or the workers that
:func:`radiogen.model.train.launch` spawns, one per GPU of the node, which meet
through a file in a private temporary folder (no port to pick, so no race).
NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping, MutableMapping

import torch
import torch.distributed as dist

from radiogen.errors import ConfigError

__all__ = [
    "DistEnv",
    "slurm_to_torch_env",
    "first_host",
    "tasks_on_node",
    "rendezvous_port",
    "device_index",
    "init_distributed",
    "free_port",
]

#: Rendezvous ports of multi-task SLURM steps lie in [PORT_BASE, PORT_BASE + PORT_SPAN):
#: below Linux's default ephemeral range (32768-60999, /proc/sys/net/ipv4/ip_local_port_range),
#: where the kernel hands out ports to outgoing connections.
PORT_BASE = 10000
PORT_SPAN = 20000


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def first_host(nodelist: str) -> str:
    """First host name of a SLURM node list (``gpu[07-08,11],big3`` -> ``gpu07``).

    Each bracket group of the first name is replaced by the first number of its
    first range, keeping its zero padding (what ``scontrol show hostnames`` lists first).
    """
    depth, end = 0, len(nodelist)
    for i, char in enumerate(nodelist):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            end = i
            break
    name = nodelist[:end].strip()
    if not name:
        raise ConfigError(f"SLURM node list {nodelist!r} names no host")
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], name)


def tasks_on_node(tasks_per_node: str, node_index: int) -> int:
    """Tasks on node ``node_index`` from SLURM's compressed list (``2(x3),1`` -> 2, 2, 2, 1)."""
    counts: list[int] = []
    for item in tasks_per_node.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not match:
            raise ConfigError(f"cannot read SLURM tasks per node {tasks_per_node!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    if not 0 <= node_index < len(counts):
        raise ConfigError(f"SLURM node index {node_index} is outside tasks per node {tasks_per_node!r}")
    return counts[node_index]


def rendezvous_port(job_id: int, step_id: int) -> int:
    """A port for one SLURM job step, the same on every node of the step.

    Derived from the job and step ids (no communication needed before the
    rendezvous), so concurrent jobs on a node take different ports; outside the
    kernel's ephemeral range.  ``MASTER_PORT`` in the environment takes precedence.
    """
    return PORT_BASE + (int(job_id) + 7919 * int(step_id)) % PORT_SPAN


def slurm_to_torch_env(environ: MutableMapping[str, str] | None = None) -> bool:
    """Translate the tasks of an ``srun`` step into torch.distributed's ``env://`` variables.

    Only a job *step* with several tasks forms a process group: ``srun`` sets
    ``SLURM_STEP_NUM_TASKS``, the batch script of a multi-task job does not (its
    ``SLURM_NTASKS`` counts the job's tasks, which a program started without
    ``srun`` does not have), and a variable already set (``torchrun``) wins.
    The rendezvous host is the step's first node, not ``SLURM_LAUNCH_NODE_IPADDR``
    (that is where ``srun`` ran: the login node under ``salloc``).
    Returns whether the environment was changed.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env:
        return False
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    if tasks <= 1 or "SLURM_PROCID" not in env:
        return False
    env["RANK"] = env["SLURM_PROCID"]
    env["WORLD_SIZE"] = str(tasks)
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    node_index = int(env.get("SLURM_NODEID", "0"))
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or str(tasks)
    env["LOCAL_WORLD_SIZE"] = str(tasks_on_node(per_node, node_index))
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    env.setdefault("MASTER_ADDR", first_host(nodelist) if nodelist else "127.0.0.1")
    env.setdefault(
        "MASTER_PORT",
        str(rendezvous_port(int(env.get("SLURM_JOB_ID", "0")), int(env.get("SLURM_STEP_ID", "0")))),
    )
    return True


def device_index(local_rank: int, local_world: int, visible: int) -> int:
    """The CUDA device (index among the visible ones) of a process.

    Where SLURM binds one GPU to each task (``--gpus-per-task``, ``--gpu-bind``)
    every task sees one device, index 0, whatever its local rank; where the
    node's GPUs are all visible, local rank r takes device r.  More processes
    on a node than visible devices is an error (two processes on one GPU), as
    is a local rank outside the node's process count.
    """
    if visible < 1:
        raise ConfigError("no CUDA device is visible to this process (CUDA_VISIBLE_DEVICES, SLURM --gpus)")
    if not 0 <= local_rank < max(local_world, 1):
        raise ConfigError(f"local rank {local_rank} is outside the {local_world} process(es) of this node")
    if visible > 1 and local_world > visible:
        raise ConfigError(
            f"{local_world} training processes on this node but only {visible} CUDA devices are visible: "
            f"ask for as many GPUs as processes (train.*.resources.gpus, srun --gpus-per-task=1)"
        )
    return local_rank % visible


def _check_one_gpu_per_process(env: DistEnv) -> None:
    """All ranks: refuse two processes on one GPU (NCCL would hang or fail obscurely)."""
    uuid = str(getattr(torch.cuda.get_device_properties(env.device), "uuid", env.device.index))
    placed: list = [None] * env.world
    dist.all_gather_object(placed, (socket.gethostname(), uuid))
    seen: dict = {}
    for rank, where in enumerate(placed):
        if where in seen:
            raise ConfigError(
                f"ranks {seen[where]} and {rank} both run on GPU {where[1]} of {where[0]}: "
                "one GPU per process is needed (ask SLURM for as many GPUs as tasks on each node)"
            )
        seen[where] = rank


def _environment_int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key, str(default))
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"environment variable {key}={value!r} is not an integer") from err


def init_distributed(device: str | None = None, *, init_method: str | None = None) -> DistEnv:
    """Join the process group described by the environment (or run single-process).

    ``init_method`` (a ``file://`` URL from :func:`~radiogen.model.train.launch`)
    replaces the ``MASTER_ADDR``/``MASTER_PORT`` rendezvous.
    """
    slurm_to_torch_env()
    env = os.environ
    world = _environment_int(env, "WORLD_SIZE", 1)
    rank = _environment_int(env, "RANK", 0)
    local_rank = _environment_int(env, "LOCAL_RANK", 0)
    local_world = _environment_int(env, "LOCAL_WORLD_SIZE", world)
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available to this process")
        if dev.index is None:
            dev = torch.device("cuda", device_index(local_rank, local_world, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    out = DistEnv(rank=rank, world=world, local_rank=local_rank, device=dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world, **kwargs)
        if dev.type == "cuda":
            _check_one_gpu_per_process(out)
    return out


def free_port() -> int:
    """A port free at the time of the call (it may be taken before it is used: one-process tests only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
