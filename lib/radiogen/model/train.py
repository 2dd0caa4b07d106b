"""Resumable, data-parallel EDM training (paper Sect. 4.2).

One call of :func:`train` trains the steps still missing: it resumes from the
newest checkpoint in ``checkpoint_dir``, writes a checkpoint every
``checkpoint_every`` steps and when SIGTERM or SIGUSR1 arrives (SLURM's
pre-timeout signal), and writes the model file only after the last step.
Every random draw of step ``t`` comes from a generator seeded by
(seed, t, rank), so a run that is stopped and resumed produces the same
weights as one that is not (bit for bit on CPU).

Distributed training: started with ``torchrun`` (``RANK``/``WORLD_SIZE``
variables), as SLURM tasks (``SLURM_PROCID``/``SLURM_NTASKS``), or by
:func:`launch`, which spawns one process per GPU of the node.  NCCL on GPUs,
gloo on CPU.  Each of the W processes takes batch_size / W images per step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path
from radiogen.model import build_network, model_config_from, save_model
from radiogen.model.data import TrainingData, augment, batch_indices, read_training_set, to_model_range
from radiogen.model.ema import EMA
from radiogen.model.loss import denoising_loss, sample_sigma
from radiogen.seeds import integer as seed_stream

__all__ = [
    "TRAIN_DEFAULTS",
    "resolve_settings",
    "train",
    "launch",
    "validation_loss",
    "plot_loss_curves",
    "latest_checkpoint",
]

log = logging.getLogger("radiogen.train")

#: Keys of the ``train`` section that hold one model's settings (its sub-block).
DATASETS = ("lotss", "first")
#: Training settings shared by both models (the schema's defaults: the authors' values).
TRAIN_DEFAULTS: dict[str, Any] = {k: v for k, v in section_defaults("train").items() if k not in DATASETS}
#: Settings that differ between the models (the ``train.lotss`` / ``train.first`` defaults).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    dataset: {k: v for k, v in section_defaults(f"train.{dataset}").items() if k != "resources"}
    for dataset in DATASETS
}
#: Keys of the config section that are not training settings.
NON_TRAIN_KEYS = ("lotss", "first", "resources")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Settings that do not change the trained weights: a checkpoint made under other
#: values of these still belongs to the run (``steps`` may grow to train longer).
RESUMABLE_KEYS = ("steps", "log_every", "val_every", "checkpoint_every", "keep_checkpoints",
                  "val_sigmas", "val_max_images", "histogram_bins", "compile", "channels_last",
                  "precision", "stale_checkpoints")
STALE_CHOICES = ("discard", "error")


def resolve_settings(section: dict | None, dataset: str) -> dict:
    """Settings for one model: defaults <- dataset defaults <- section <- section[dataset].

    Checks names and values; raises :class:`ConfigError` naming the key.
    """
    if dataset not in DATASET_DEFAULTS:
        raise ConfigError(f"train: unknown dataset {dataset!r} (expected lotss or first)")
    section = dict(section or {})
    sub = dict(section.get(dataset) or {})
    sub.pop("resources", None)
    common = {k: v for k, v in section.items() if k not in NON_TRAIN_KEYS}
    settings = {**TRAIN_DEFAULTS, **DATASET_DEFAULTS[dataset], **common, **sub}
    known = set(TRAIN_DEFAULTS) | set(DATASET_DEFAULTS[dataset])
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"train: unknown setting(s) {', '.join(unknown)}")
    for key in ("batch_size", "steps", "log_every", "val_every", "checkpoint_every", "keep_checkpoints"):
        if int(settings[key]) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {settings[key]}")
    if settings["precision"] not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {settings['precision']!r}")
    if not 0.0 <= float(settings["ema_decay"]) < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {settings['ema_decay']}")
    if settings["ema_rampup_ratio"] is not None and not float(settings["ema_rampup_ratio"]) > 0:
        raise ConfigError(f"train.ema_rampup_ratio must be > 0 or null, got {settings['ema_rampup_ratio']}")
    if any(float(s) <= 0 for s in settings["val_sigmas"]):
        raise ConfigError("train.val_sigmas must all be > 0")
    if settings["stale_checkpoints"] not in STALE_CHOICES:
        raise ConfigError(
            f"train.stale_checkpoints must be one of {STALE_CHOICES}, got {settings['stale_checkpoints']!r}"
        )
    return settings


# --------------------------------------------------------------------------- distributed


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


def _slurm_to_torch_env() -> None:
    """Translate a multi-task SLURM step into torch.distributed's env:// variables."""
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    if "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("MASTER_ADDR", os.environ.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
    # One port per job so concurrent jobs on a node do not collide.
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group described by the environment (or run single-process)."""
    _slurm_to_torch_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device in (None, "auto"):
        dev = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistEnv(rank=rank, world=world, local_rank=local_rank, device=dev)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned_worker(local_rank: int, world: int, port: int, kwargs: dict, log_level: int, threads: int) -> None:
    # Share the parent's CPU threads out; oversubscribed OpenMP pools spin and
    # slow gloo runs down by orders of magnitude.
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format=f"%(asctime)s rank{local_rank} %(levelname)s %(name)s: %(message)s")
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    train(**kwargs)


def launch(*, nproc: int | str = "auto", **kwargs) -> dict:
    """Run :func:`train` in ``nproc`` processes on this node (``auto``: one per GPU).

    When the environment already describes a process group (torchrun, SLURM
    tasks) or ``nproc`` is 1, this process trains directly.  Returns
    ``{"status": "done" | "interrupted", "step": ...}`` (the step is that of
    the newest checkpoint when spawned workers were interrupted).
    """
    _slurm_to_torch_env()
    if nproc == "auto":
        nproc = torch.cuda.device_count() if torch.cuda.is_available() else 1
    nproc = max(1, int(nproc))
    if "WORLD_SIZE" in os.environ or nproc == 1:
        return train(**kwargs)
    import torch.multiprocessing as mp

    port = _free_port()
    ctx = mp.start_processes(
        _spawned_worker,
        args=(nproc, port, kwargs, logging.getLogger().getEffectiveLevel(), max(1, torch.get_num_threads() // nproc)),
        nprocs=nproc,
        join=False,
        start_method="spawn",
    )

    def forward(signum, _frame):
        # Workers checkpoint and stop on their own signal; pass ours on to them.
        for proc in ctx.processes:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    with _signal_handlers(forward):
        while not ctx.join():
            pass
    out = Path(kwargs["out_path"])
    ckpt = latest_checkpoint(_checkpoint_dir(out, kwargs.get("checkpoint_dir")))
    step = int(ckpt.stem.split("-")[-1]) if ckpt else 0
    return {"status": "done" if out.exists() else "interrupted", "step": step}


# --------------------------------------------------------------------------- signals


class _StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, _frame) -> None:
        self.signum = signum
        log.warning("received signal %d: checkpointing after the current step", signum)


def _stop_signals() -> list[int]:
    return [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None]


@contextlib.contextmanager
def _signal_handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in _stop_signals()}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_dir(out_path: Path, checkpoint_dir) -> Path:
    return Path(checkpoint_dir) if checkpoint_dir else Path(out_path).parent / "checkpoints"


def _checkpoints(directory: str | os.PathLike) -> list[Path]:
    """``ckpt-<step>.pt`` files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob("ckpt-*.pt") if p.stem.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.stem.split("-")[-1]))


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Newest ``ckpt-<step>.pt`` in ``directory`` (None when there is none)."""
    found = _checkpoints(directory)
    return found[-1] if found else None


def run_identity(data: TrainingData, model_config: dict, settings: dict, seed: int) -> dict:
    """What a training run's weights depend on: data digest, network, seed, settings.

    Two runs with equal identities produce the same weights at every step, so a
    checkpoint may be resumed exactly when its stored identity equals this one.
    """
    return {
        "data_sha256": data.digest(),
        "dataset": data.dataset,
        "model_config": model_config,
        "seed": int(seed),
        "settings": {k: v for k, v in sorted(settings.items()) if k not in RESUMABLE_KEYS},
    }


def _identity_differences(stored: dict | None, current: dict) -> list[str]:
    if not stored:
        return ["the checkpoint records no run identity (made by an older radiogen)"]
    diffs = []
    if stored.get("data_sha256") != current["data_sha256"]:
        diffs.append("the training set's contents changed")
    for key in ("dataset", "model_config", "seed"):
        if stored.get(key) != current[key]:
            diffs.append(f"{key} changed from {stored.get(key)!r} to {current[key]!r}")
    old, new = stored.get("settings", {}), current["settings"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            diffs.append(f"train.{key} changed from {old.get(key)!r} to {new.get(key)!r}")
    return diffs


def _set_aside(paths: list[Path], folder: Path) -> None:
    """Move checkpoints out of the resume path (kept, not deleted: nothing computed is lost)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        os.replace(path, folder / path.name)


def _load_resumable(ckpt_dir: Path, identity: dict, on_stale: str) -> dict | None:
    """Newest readable checkpoint of this run, or None to start from step 0.

    An unreadable newest file (torn write on a full disk, truncated copy) is
    moved to ``corrupt/`` and the previous one is tried.  Checkpoints of
    another run (other data, network, seed or settings) are moved to
    ``stale/`` with a log line saying why, or, with ``on_stale="error"``,
    stop the job with a :class:`ConfigError`.
    """
    for path in reversed(_checkpoints(ckpt_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            step = int(state["step"])
        except Exception as err:
            log.warning("%s: unreadable checkpoint (%s); moved to %s, trying the previous one",
                        path, err, ckpt_dir / "corrupt")
            _set_aside([path], ckpt_dir / "corrupt")
            continue
        diffs = _identity_differences(state.get("identity"), identity)
        if not diffs:
            return state
        reason = "; ".join(diffs)
        if on_stale == "error":
            raise ConfigError(
                f"{path}: checkpoint (step {step}) belongs to another run: {reason}. "
                f"Delete {ckpt_dir} or set train.stale_checkpoints: discard"
            )
        stale = _checkpoints(ckpt_dir)
        _set_aside(stale, ckpt_dir / "stale")
        log.warning("%s: checkpoint belongs to another run (%s); moved %d checkpoint(s) to %s "
                    "and starting from step 0", path, reason, len(stale), ckpt_dir / "stale")
        return None
    return None


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # a checkpoint from a node with more GPUs (e.g. 2-GPU run resumed on 1); every
        # step reseeds anyway, so restoring the visible devices' states is enough
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def _save_checkpoint(directory: Path, step: int, payload: dict, keep: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt-{step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    for stale in _checkpoints(directory)[:-keep]:
        stale.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- helpers


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _resolve_precision(name: str, device: torch.device) -> str:
    if device.type == "cuda":
        if name == "auto":
            # emulated bf16 (pre-Ampere) is slow: those GPUs get fp16 with loss scaling
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        return name
    if name == "auto":
        return "fp32"
    if name == "fp16":
        raise ConfigError("train.precision fp16 (with loss scaling) needs a GPU; use bf16 or fp32 on CPU")
    return name


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def validation_loss(
    net,
    images: torch.Tensor,
    context: torch.Tensor | None,
    *,
    sigmas: list[float],
    batch_size: int,
    seed: int,
    precision: str = "fp32",
    channels_last: bool = False,
) -> list[float]:
    """Weighted denoising loss of ``net`` at each fixed sigma on the given images.

    ``images`` are in [-1, 1] (no augmentation, context kept).  The noise is
    drawn from a generator seeded with ``seed``, so repeated evaluations (and
    raw vs EMA weights) see identical noise and are directly comparable.
    """
    was_training = net.training
    net.eval()
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    device = images.device
    for sigma in sigmas:
        total = 0.0
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size]
            noise = torch.randn(x.shape, generator=gen).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                noise = noise.contiguous(memory_format=torch.channels_last)
            c = None if context is None else context[start : start + batch_size]
            s = torch.full((x.shape[0],), float(sigma), device=device)
            with _autocast(device, precision):
                total += float(denoising_loss(net, x, s, noise, context=c, sigma_data=_sigma_data(net)).sum())
        out.append(total / images.shape[0])
    net.train(was_training)
    return out


def _sigma_data(net) -> float:
    return float(getattr(net, "sigma_data", 0.5))


def _parameter_count(net) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- training


def train(
    *,
    data_path: str | os.PathLike,
    out_path: str | os.PathLike,
    train_settings: dict | None = None,
    model_settings: dict | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str | None = None,
    stop_after: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train the EDM denoiser on a training-set file; resumable.

    Parameters
    ----------
    data_path : path
        Training-set HDF5 (see :mod:`radiogen.model.data`); ``/split`` 1 is the
        held-out validation part.
    out_path : path
        Model file written after the last step (:func:`radiogen.model.save_model`).
    train_settings : dict
        The ``train`` config section (merged with defaults and its
        ``lotss``/``first`` sub-block for the file's dataset).
    model_settings : dict
        The ``model`` config section (network shape).
    seed : int
        Global seed; the run uses its ``train.lotss`` / ``train.first`` stream (radiogen.seeds).
    checkpoint_dir : path, optional
        Default: ``<out_path's folder>/checkpoints``.
    device : str, optional
        ``cpu``, ``cuda`` or None/``auto`` (this rank's GPU when there is one).
    stop_after : int, optional
        Stop (with a checkpoint) after this many steps of this run, as if the
        job had been sent SIGTERM; for walltime-limited jobs and tests.
    on_step : callable, optional
        Called with the step count after every step (tests, progress hooks).

    Returns
    -------
    dict
        ``{"status": "done" | "interrupted", "step": int}``.
    """
    out_path = Path(out_path)
    # All input checks come before the process group and any step.
    data = read_training_set(data_path)
    settings = resolve_settings(train_settings, data.dataset)
    model_config = model_config_from(
        model_settings, image_channels=data.channels, image_size=data.image_size, context_dim=data.context_dim
    )
    build_network(model_config)  # raises ConfigError for shapes the U-Net cannot take
    run_seed = seed_stream(seed, f"train.{data.dataset}")
    ckpt_dir = _checkpoint_dir(out_path, checkpoint_dir)

    env = init_distributed(device)
    try:
        return _train(data, model_config, settings, env, out_path, ckpt_dir, run_seed, stop_after, on_step)
    finally:
        if env.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    data: TrainingData,
    model_config: dict,
    settings: dict,
    env: DistEnv,
    out_path: Path,
    ckpt_dir: Path,
    run_seed: int,
    stop_after: int | None,
    on_step,
) -> dict:
    device = env.device
    global_batch = int(settings["batch_size"])
    if global_batch % env.world:
        raise ConfigError(f"train.batch_size={global_batch} is not divisible by the {env.world} processes")
    local_batch = global_batch // env.world
    total_steps = int(settings["steps"])
    precision = _resolve_precision(settings["precision"], device)
    channels_last = bool(settings["channels_last"])

    torch.manual_seed(run_seed)  # identical initial weights on every rank
    net = build_network(model_config)
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    rampup = settings["ema_rampup_ratio"]
    ema = EMA(net, decay=float(settings["ema_decay"]), rampup_ratio=None if rampup is None else float(rampup))
    optimizer = torch.optim.Adam(net.parameters(), lr=float(settings["lr"]), betas=tuple(settings["adam_betas"]))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history: dict[str, list] = {
        "train_step": [],
        "train_loss": [],
        "train_images_per_s": [],
        "val_step": [],
        "val_raw": [],
        "val_ema": [],
        "val_sigmas": [float(s) for s in settings["val_sigmas"]],
    }

    step = 0
    identity = run_identity(data, model_config, settings, run_seed)
    # Rank 0 alone sorts out stale or corrupt files; the others then read what it kept.
    state = _load_resumable(ckpt_dir, identity, settings["stale_checkpoints"]) if env.is_main else None
    if env.distributed:
        dist.barrier()
        if not env.is_main:
            kept = latest_checkpoint(ckpt_dir)
            state = None if kept is None else torch.load(kept, map_location="cpu", weights_only=False)
    if state is not None:
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = float(settings["lr"])
        if state["scaler"]:  # empty when the checkpoint ran without loss scaling (fp32/bf16)
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        history = state["history"]
        step = int(state["step"])
        if env.is_main:
            log.info("resumed from step %d of %d (%s)", step, total_steps, ckpt_dir)

    model = net
    if env.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if settings["compile"]:
        model = torch.compile(model)

    train_idx = data.train_index
    val_idx = data.val_index[: int(settings["val_max_images"])]
    on_device = device.type == "cpu" or data.images.nbytes < 4 * 2**30
    store = torch.device(device) if on_device else torch.device("cpu")
    images = torch.from_numpy(data.images[train_idx]).to(store)
    context = torch.from_numpy(data.context[train_idx]).to(store)
    val_images = to_model_range(torch.from_numpy(data.images[val_idx]).to(device))
    val_context = torch.from_numpy(data.context[val_idx]).to(device)
    cond = data.context_dim > 0

    if env.is_main:
        log.info(
            "training %s model: %d parameters, %d train / %d validation images of %s, "
            "%d process(es) on %s, precision %s, batch %d, steps %d",
            data.dataset, _parameter_count(net), train_idx.size, data.val_index.size,
            "x".join(map(str, [data.channels, *data.image_size])), env.world, device,
            precision, global_batch, total_steps,
        )
        if val_idx.size == 0:
            log.warning("%s: no validation images (/split == 1); validation loss is skipped", data.path)

    def checkpoint(at: int) -> None:
        if env.is_main:
            payload = {
                "step": at,
                "model": net.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "history": history,
                "model_config": model_config,
                "train_config": settings,
                "seed": run_seed,
                "identity": identity,
            }
            path = _save_checkpoint(ckpt_dir, at, payload, int(settings["keep_checkpoints"]))
            log.info("checkpoint %s", path)
        if env.distributed:
            dist.barrier()

    def validate(at: int) -> None:
        if env.is_main and val_idx.size:
            kw = dict(
                sigmas=history["val_sigmas"], batch_size=local_batch, seed=run_seed + 1,
                precision=precision, channels_last=channels_last,
            )
            c = val_context if cond else None
            raw = validation_loss(net, val_images, c, **kw)
            avg = validation_loss(ema.module, val_images, c, **kw)
            history["val_step"].append(at)
            history["val_raw"].append(raw)
            history["val_ema"].append(avg)
            log.info(
                "step %d validation loss (mean over sigma %s): raw %.4f, EMA %.4f",
                at, history["val_sigmas"], float(np.mean(raw)), float(np.mean(avg)),
            )
        if env.distributed:
            dist.barrier()

    stop = _StopRequest()
    start_step = step
    interrupted = False
    net.train()
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    t_log = time.perf_counter()
    t_start = t_log
    steps_since_log = 0
    if step == 0:
        validate(0)  # the untrained network: first point of the loss curves
    with _signal_handlers(stop):
        while step < total_steps:
            torch.manual_seed(_step_seed(run_seed, step, env.rank))
            idx = batch_indices(train_idx.size, step=step, global_batch=global_batch, seed=run_seed,
                                rank=env.rank, world=env.world)
            sel = torch.from_numpy(idx).to(store)
            x = to_model_range(images[sel].to(device, non_blocking=True))
            if settings["augment"]:
                x = augment(x)
            c = context[sel].to(device, non_blocking=True) if cond else None
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sigma = sample_sigma(x.shape[0], p_mean=float(settings["p_mean"]), p_std=float(settings["p_std"]),
                                 device=device)
            noise = torch.randn_like(x)
            with _autocast(device, precision):
                loss = denoising_loss(model, x, sigma, noise, context=c, sigma_data=_sigma_data(net)).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            ema.update(net, step=step)
            steps_since_log += 1
            loss_sum += loss.detach()
            loss_count += 1
            if on_step is not None:
                on_step(step)

            if step % int(settings["log_every"]) == 0 or step == total_steps:
                mean_loss = float(loss_sum) / max(loss_count, 1)
                now = time.perf_counter()
                rate = steps_since_log * global_batch / max(now - t_log, 1e-9)
                history["train_step"].append(step)
                history["train_loss"].append(mean_loss)
                history["train_images_per_s"].append(rate)
                if env.is_main:
                    done = step - start_step
                    eta = (now - t_start) / max(done, 1) * (total_steps - step)
                    log.info("step %d/%d loss %.4f %.1f images/s eta %.0f s", step, total_steps, mean_loss, rate, eta)
                loss_sum.zero_()
                loss_count = 0
                steps_since_log = 0
                t_log = now
            if step % int(settings["val_every"]) == 0 and step < total_steps:
                validate(step)

            want_stop = stop.signum is not None or (stop_after is not None and step - start_step >= stop_after)
            if env.distributed:
                flag = torch.tensor([1.0 if want_stop else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                want_stop = bool(flag.item() > 0)
            if want_stop and step < total_steps:
                checkpoint(step)
                interrupted = True
                break
            if step % int(settings["checkpoint_every"]) == 0 and step < total_steps:
                checkpoint(step)

    if interrupted:
        if env.is_main:
            log.warning("stopped at step %d of %d; rerun the same command to resume", step, total_steps)
        return {"status": "interrupted", "step": step}

    validate(step)
    checkpoint(step)
    if env.is_main:
        save_model(
            out_path,
            model_config=model_config,
            state_dict=ema.state_dict(),
            dataset=data.dataset,
            train_config={**settings, "seed": run_seed, "world_size": env.world, "precision_used": precision},
            step=step,
            normalisation=data.normalisation(),
            class_names=data.class_names(),
            context_histogram=data.context_histogram(int(settings["histogram_bins"])),
            history=history,
            context_names=data.context_names(),
            size_normalisation=data.size_normalisation(),
            context_histogram_2d=data.context_histogram_2d(),
        )
        log.info("wrote %s (EMA weights, step %d)", out_path, step)
    if env.distributed:
        dist.barrier()
    return {"status": "done", "step": step}


# --------------------------------------------------------------------------- figures


def plot_loss_curves(history: dict, path: str | os.PathLike, *, title: str = "") -> None:
    """Training loss and validation loss (raw and EMA weights, per sigma) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ax = axes[0]
    if history.get("train_step"):
        ax.plot(history["train_step"], history["train_loss"], label="training (mean per log interval)")
    if history.get("val_step"):
        ax.plot(history["val_step"], [np.mean(v) for v in history["val_raw"]], "o-", label="validation, raw")
        ax.plot(history["val_step"], [np.mean(v) for v in history["val_ema"]], "s--", label="validation, EMA")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\lambda(\sigma)\,\|D(x+n;\sigma)-x\|^2$ (mean)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("loss")
    ax = axes[1]
    if history.get("val_step"):
        raw = np.asarray(history["val_raw"])
        avg = np.asarray(history["val_ema"])
        colors = plt.cm.viridis(np.linspace(0, 0.9, raw.shape[1]))
        for j, sigma in enumerate(history["val_sigmas"]):
            ax.plot(history["val_step"], raw[:, j], "-", color=colors[j], label=rf"$\sigma$={sigma:g}")
            ax.plot(history["val_step"], avg[:, j], "--", color=colors[j])
        ax.set_yscale("log")
        ax.legend(fontsize="small", title="solid raw, dashed EMA")
    ax.set_xlabel("step")
    ax.set_title("validation loss per noise level")
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
