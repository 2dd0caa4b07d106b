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

The parts of a run live beside this module: its settings
(:mod:`~radiogen.model.train_settings`), the process group
(:mod:`~radiogen.model.distributed`), checkpoints and stop signals
(:mod:`~radiogen.model.checkpoints`) and the loss-curve figure
(:mod:`~radiogen.model.loss_curves`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from radiogen.errors import ConfigError
from radiogen.model import build_network, model_config_from, save_model
from radiogen.model.checkpoints import (
    StopRequest,
    checkpoint_dir_of,
    latest_checkpoint,
    load_resumable,
    rng_state,
    run_identity,
    save_checkpoint,
    set_rng_state,
    signal_handlers,
)
from radiogen.model.data import TrainingData, augment, batch_indices, read_training_set, to_model_range
from radiogen.model.distributed import DistEnv, free_port, init_distributed, slurm_to_torch_env
from radiogen.model.ema import EMA
from radiogen.model.loss import denoising_loss, sample_sigma
from radiogen.model.networks import ConditionEmbedding
from radiogen.model.train_settings import resolve_settings
from radiogen.seeds import integer as seed_stream
from radiogen.testhooks import block_point

__all__ = ["train", "launch", "validation_loss"]

log = logging.getLogger("radiogen.train")

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
    slurm_to_torch_env()
    if nproc == "auto":
        nproc = torch.cuda.device_count() if torch.cuda.is_available() else 1
    nproc = max(1, int(nproc))
    if "WORLD_SIZE" in os.environ or nproc == 1:
        return train(**kwargs)
    import torch.multiprocessing as mp

    port = free_port()
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

    with signal_handlers(forward):
        while not ctx.join():
            pass
    out = Path(kwargs["out_path"])
    ckpt = latest_checkpoint(checkpoint_dir_of(out, kwargs.get("checkpoint_dir")))
    step = int(ckpt.stem.split("-")[-1]) if ckpt else 0
    return {"status": "done" if out.exists() else "interrupted", "step": step}


# --------------------------------------------------------------------------- helpers


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _batch_like(x: torch.Tensor, n: int) -> torch.Tensor:
    """An empty batch of ``n`` images in the memory layout (strides) of ``x``.

    ``torch.randn_like`` fills a tensor in its memory order, and augmentation
    leaves ``x`` in a permuted layout: drawing the global batch's noise in ``x``'s
    layout gives a single process the draws of ``torch.randn_like(x)``.
    """
    spans = sorted((stride, size) for stride, size in zip(x.stride(), x.shape) if size > 1)
    dense = all(stride == math.prod(size for _, size in spans[:k]) for k, (stride, _) in enumerate(spans))
    if dense and x.stride(0) == x[0].numel():  # the batch outermost: same strides for any n
        return torch.empty_strided((n, *x.shape[1:]), x.stride(), dtype=x.dtype, device=x.device)
    return torch.empty((n, *x.shape[1:]), dtype=x.dtype, device=x.device)


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
    ckpt_dir = checkpoint_dir_of(out_path, checkpoint_dir)

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
    # Classifier-free-guidance context dropout is drawn here per global batch (see
    # the training loop), not inside the network from each rank's local batch.
    context_dropout = 0.0
    for module in net.modules():
        if isinstance(module, ConditionEmbedding):
            context_dropout, module.context_dropout = module.context_dropout, 0.0
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
    state = load_resumable(ckpt_dir, identity, settings["stale_checkpoints"]) if env.is_main else None
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
        set_rng_state(state["rng"])
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
                "rng": rng_state(),
                "history": history,
                "model_config": model_config,
                "train_config": settings,
                "seed": run_seed,
                "identity": identity,
            }
            path = save_checkpoint(ckpt_dir, at, payload, int(settings["keep_checkpoints"]))
            log.info("checkpoint %s", path)
            block_point("train.checkpoint", at)
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

    stop = StopRequest()
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
    with signal_handlers(stop):
        while step < total_steps:
            # Augmentation, sigma and noise of the whole global batch come from one
            # stream per step, the same on every rank; each rank keeps its share.  So
            # sample j of a step gets the same draws whatever the number of processes,
            # and N processes train the weights of one at the same global batch.
            torch.manual_seed(_step_seed(run_seed, step, 0))
            share = slice(env.rank * local_batch, (env.rank + 1) * local_batch)
            idx = batch_indices(train_idx.size, step=step, global_batch=global_batch, seed=run_seed,
                                rank=env.rank, world=env.world)
            sel = torch.from_numpy(idx).to(store)
            x = to_model_range(images[sel].to(device, non_blocking=True))
            if settings["augment"]:
                x = augment(x, share=share, global_batch=global_batch)
            c = context[sel].to(device, non_blocking=True) if cond else None
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sigma = sample_sigma(global_batch, p_mean=float(settings["p_mean"]), p_std=float(settings["p_std"]),
                                 device=device)[share]
            noise = torch.randn_like(_batch_like(x, global_batch))[share]
            context_mask = None
            if cond and context_dropout > 0:
                context_mask = (torch.rand(global_batch, device=device) < context_dropout)[share]
            if env.distributed:
                # dropout in the network: a stream of this rank's own (rank 0 of one
                # process continues the shared stream, as before)
                torch.manual_seed(_step_seed(run_seed, step, env.world + env.rank))
            with _autocast(device, precision):
                loss = denoising_loss(model, x, sigma, noise, context=c, context_mask=context_mask,
                                      sigma_data=_sigma_data(net)).mean()
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


