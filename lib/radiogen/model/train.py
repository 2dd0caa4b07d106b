"""Resumable, data-parallel EDM training (paper Sect. 4.2).

One call of :func:`train` trains the steps still missing: it resumes from the
newest checkpoint in ``checkpoint_dir``, writes a checkpoint every
``checkpoint_every`` steps and when SIGURG, SIGUSR1 or SIGTERM arrives
(SLURM's early signal, then the wall-time limit), and writes the model file
only after the last step.  The per-sample random draws of step ``t``
(orientation, sigma, noise, context drop) come from a generator seeded by
(seed, t) and are drawn for the whole global batch, of which each process
takes its slice: a run that is stopped and resumed produces the same weights
as one that is not (bit for bit on CPU), and W processes with batch B / W
each train like one process with batch B (up to float round-off of the
gradient average; U-Net dropout, drawn per process, is the exception).

Distributed training: started with ``torchrun``, as the tasks of an ``srun``
step, or by :func:`launch`, which spawns one process per GPU of the node
(:mod:`~radiogen.model.distributed`).  NCCL on GPUs, gloo on CPU.

A non-finite loss stops the run with :class:`~radiogen.errors.TrainingError`
before any later checkpoint is written (checked at every logging step and
before every checkpoint); non-finite gradients are zeroed or clipped first
(as Karras et al. 2022 do), except under fp16 loss scaling, which skips
such steps itself.

Fine-tuning (``train.{lotss,first}.init_from``): the run starts from a model
file's network and EMA weights instead of random ones, checked against the
training set first (:mod:`~radiogen.model.init_from`).

The parts of a run live beside this module: its settings
(:mod:`~radiogen.model.train_settings`), the process group
(:mod:`~radiogen.model.distributed`), checkpoints and stop signals
(:mod:`~radiogen.model.checkpoints`) and the loss-curve figure
(:mod:`~radiogen.model.loss_curves`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from radiogen.errors import ConfigError, TrainingError
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
    state_fingerprint,
)
from radiogen.model.data import (
    TrainingData,
    augment,
    augmentation_draws,
    batch_indices,
    read_training_set,
    to_model_range,
)
from radiogen.model.distributed import DistEnv, init_distributed, slurm_to_torch_env
from radiogen.model.ema import EMA
from radiogen.model.init_from import InitModel, match_training_set, read_init_model
from radiogen.model.loss import denoising_loss, sample_sigma
from radiogen.model.train_settings import resolve_settings
from radiogen.sampler.workflow import snapshot_path
from radiogen.seeds import integer as seed_stream
from radiogen.testhooks import block_point

__all__ = ["train", "launch", "validation_loss", "snapshot_path"]

log = logging.getLogger("radiogen.train")

def _spawned_worker(
    local_rank: int, world: int, init_method: str, kwargs: dict, log_level: int, threads: int
) -> None:
    # Share the parent's CPU threads out; oversubscribed OpenMP pools spin and
    # slow gloo runs down by orders of magnitude.
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format=f"%(asctime)s rank{local_rank} %(levelname)s %(name)s: %(message)s")
    os.environ.update(
        RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world)
    )
    train(**kwargs, init_method=init_method)


def _job_tasks_without_step() -> int:
    """Tasks of a SLURM job whose batch script started this process without ``srun`` (else 0)."""
    if "SLURM_JOB_ID" in os.environ and "SLURM_STEP_NUM_TASKS" not in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 0


def launch(*, nproc: int | str = "auto", **kwargs) -> dict:
    """Run :func:`train` in ``nproc`` processes on this node (``auto``: one per GPU).

    When the environment already describes a process group (torchrun, the
    tasks of an ``srun`` step) or ``nproc`` is 1, this process trains directly.
    Spawned processes meet through a file in a private temporary folder.
    Returns ``{"status": "done" | "interrupted", "step": ...}`` (the step is that of
    the newest checkpoint when spawned workers were interrupted).
    """
    slurm_to_torch_env()
    device = kwargs.get("device")
    use_cuda = torch.cuda.is_available() and (device in (None, "auto") or str(device).startswith("cuda"))
    visible = torch.cuda.device_count() if use_cuda else 0
    if nproc == "auto":
        nproc = visible or 1
    nproc = max(1, int(nproc))
    tasks = _job_tasks_without_step()
    if tasks > 1 and "WORLD_SIZE" not in os.environ:
        log.warning("the SLURM job has %d tasks but this process was not started by srun: training runs "
                    "in %d process(es) on this node; start it with srun to use the job's tasks", tasks, nproc)
    if "WORLD_SIZE" in os.environ or nproc == 1:
        return train(**kwargs)
    if use_cuda and nproc > visible:
        raise ConfigError(f"--nproc {nproc}: {nproc} training processes asked for but only {visible} CUDA "
                          f"device(s) are visible on this node (CUDA_VISIBLE_DEVICES, SLURM --gpus)")
    import torch.multiprocessing as mp

    rendezvous = tempfile.mkdtemp(prefix="radiogen-rendezvous-")
    try:
        ctx = mp.start_processes(
            _spawned_worker,
            args=(nproc, f"file://{rendezvous}/store", kwargs, logging.getLogger().getEffectiveLevel(),
                  max(1, torch.get_num_threads() // nproc)),
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
            try:
                while not ctx.join():
                    pass
            except mp.ProcessRaisedException as err:
                # the worker's traceback is logged with the exception; its last line is the reason
                log.error("%s", err)
                raise TrainingError(f"a training process failed: {str(err).strip().splitlines()[-1]}") from None
    finally:
        shutil.rmtree(rendezvous, ignore_errors=True)
    out = Path(kwargs["out_path"])
    ckpt = latest_checkpoint(checkpoint_dir_of(out, kwargs.get("checkpoint_dir")))
    step = int(ckpt.stem.split("-")[-1]) if ckpt else 0
    return {"status": "done" if out.exists() else "interrupted", "step": step}


# --------------------------------------------------------------------------- helpers


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _draw_seed(seed: int, step: int) -> int:
    """Seed of the per-sample draws of one step: the same on every process."""
    return int(np.random.SeedSequence([seed, step], spawn_key=(1,)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _take_over_context_dropout(net) -> float:
    """The network's classifier-free-guidance drop probability; the trainer draws the drops itself.

    The network would draw them per process from the global RNG; the trainer
    draws them per sample of the global batch and passes them as ``context_mask``.
    """
    probability = 0.0
    for module in net.modules():
        # radiogen's embedding (null token) or the lofar-diffusion network (context left out)
        if hasattr(module, "context_dropout") and (hasattr(module, "null_token") or hasattr(module, "context_kind")):
            probability = float(module.context_dropout)
            module.context_dropout = 0.0
    return probability


#: Steps between the agreements on a stop request in multi-process runs (besides log
#: points and checkpoints).  At the paper's ~0.7 s per step on an A100 a signal is
#: answered within ~25 s, well inside SLURM's early-signal margin.
STOP_CHECK_EVERY = 32


def _agree_on_stop_at(step: int, settings: dict, total_steps: int) -> bool:
    """Whether the ranks combine their stop requests after ``step`` (the same answer on every rank)."""
    return (step % int(settings["log_every"]) == 0 or step % int(settings["checkpoint_every"]) == 0
            or step % STOP_CHECK_EVERY == 0 or step == total_steps)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to ``device`` without blocking the host.

    On CUDA the tensor goes through pinned memory (torch's caching host
    allocator keeps the block until the copy has run), so the copy is
    asynchronous; a copy from pageable memory would wait.
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _sanitise_gradients(net) -> None:
    """Zero NaN and clip infinite gradients (Karras et al. 2022, training loop) so they cannot poison the weights."""
    for param in net.parameters():
        if param.grad is not None:
            torch.nan_to_num(param.grad, nan=0.0, posinf=1.0e5, neginf=-1.0e5, out=param.grad)


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


def _agreed_checkpoint(env: DistEnv, ckpt_dir: Path, identity: dict, on_stale: str) -> tuple[dict | None, Path | None]:
    """The checkpoint every rank resumes from: rank 0 chooses, the others load that file.

    Rank 0 alone sorts out stale or corrupt files and names the checkpoint (or
    none); the other ranks load exactly that file rather than list the folder
    themselves (a shared file system may still show them files rank 0 has just
    moved away).  All ranks then compare step and weight sums with rank 0's and
    stop together when any differs: DistributedDataParallel copies rank 0's
    weights at the start but not the optimiser moments or EMA, so ranks that
    resumed from different checkpoints would drift apart without an error.
    """
    state, path, problem = None, None, None
    if env.is_main:
        try:
            state, path = load_resumable(ckpt_dir, identity, on_stale)
        except Exception as err:
            if not env.distributed:
                raise
            problem = err
    if not env.distributed:
        return state, path
    choice = [{"path": None if path is None else str(path), "fingerprint": state_fingerprint(state),
               "error": None if problem is None else f"{type(problem).__name__}: {problem}"}]
    dist.broadcast_object_list(choice, src=0)
    chosen = choice[0]
    if problem is not None:
        raise problem
    if chosen["error"]:
        raise TrainingError(f"rank 0 could not choose a checkpoint to resume from: {chosen['error']}")
    failure = ""
    if not env.is_main and chosen["path"] is not None:
        try:
            state = torch.load(chosen["path"], map_location="cpu", weights_only=False)
            path = Path(chosen["path"])
        except Exception as err:  # not (yet) visible on this node's view of the file system
            failure = f"rank {env.rank} cannot read {chosen['path']} ({err})"
    if not failure and state_fingerprint(state) != chosen["fingerprint"]:
        failure = (f"rank {env.rank} loaded step {state_fingerprint(state)[0]:.0f} with other weights than rank 0 "
                   f"(step {chosen['fingerprint'][0]:.0f}, {chosen['path']})")
    reasons: list = [None] * env.world
    dist.all_gather_object(reasons, failure)
    reasons = [r for r in reasons if r]
    if reasons:
        raise TrainingError("the training processes do not agree on the checkpoint to resume from: "
                            + "; ".join(reasons))
    return state, path


class _LossHealth:
    """Mean training loss between log points, and the check that it and the weights are finite.

    The loss of every step is summed on the device (no synchronisation per step);
    at log points and before checkpoints the ranks combine their sums, so they
    all see the same value and all stop together.
    """

    def __init__(self, env: DistEnv, device: torch.device, ckpt_dir: Path) -> None:
        self.env = env
        self.ckpt_dir = ckpt_dir
        self.total = torch.zeros((), device=device, dtype=torch.float64)
        self.count = 0
        self.nonfinite = torch.zeros((), device=device, dtype=torch.float64)
        self.never = float(2**62)
        self.first_bad = torch.full((), self.never, device=device, dtype=torch.float64)
        self.since = 0  # last step checked

    def add(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss)
        self.total += loss.double()
        self.count += 1
        self.nonfinite += bad.double()
        self.first_bad = torch.where(bad, self.first_bad.clamp(max=float(step)), self.first_bad)

    def _combined(self, extra: torch.Tensor | None = None) -> tuple[float, int, int, int]:
        extra = torch.zeros((), device=self.total.device) if extra is None else extra
        sums = torch.stack([self.total, self.nonfinite, extra.to(self.total)])
        first = self.first_bad.clone()
        if self.env.distributed:
            dist.all_reduce(sums)
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        total, nonfinite, extra_sum = (float(v) for v in sums)
        return total / max(self.count * self.env.world, 1), int(nonfinite), int(float(first)), int(extra_sum)

    def _raise(self, step: int, nonfinite: int, first: int) -> None:
        newest = latest_checkpoint(self.ckpt_dir)
        raise TrainingError(
            f"non-finite training loss (NaN or inf) at step {first} ({nonfinite} loss value(s) of steps "
            f"{self.since + 1}-{step}): training stopped before writing another checkpoint; the newest "
            f"checkpoint is {newest or 'none'}. Check the training set and train.lr / train.precision; "
            f"rerunning resumes from that checkpoint"
        )

    def log_point(self, step: int) -> float:
        """Mean loss over all processes since the last log point; raises when any was non-finite."""
        mean, nonfinite, first, _ = self._combined()
        if nonfinite:
            self._raise(step, nonfinite, first)
        self.total.zero_()
        self.nonfinite.zero_()
        self.count = 0
        self.since = step
        return mean

    def check(self, step: int, net, ema) -> None:
        """Before a checkpoint: the losses since the last log point and every weight are finite."""
        weights = list(net.parameters()) + list(ema.module.parameters())
        bad_weights = torch.stack([torch.isfinite(p).all() for p in weights]).logical_not().sum()
        _, nonfinite, first, bad_weights = self._combined(extra=bad_weights)
        if nonfinite:
            self._raise(step, nonfinite, first)
        if bad_weights:
            raise TrainingError(f"non-finite weights at step {step}: training stopped before writing a checkpoint")


# --------------------------------------------------------------------------- training


def _note_ignored_model_settings(model_config: dict, init: InitModel) -> None:
    """Log which ``model`` settings a fine-tuning run ignores because the init file's network wins."""
    from radiogen.model import MODEL_DEFAULTS

    theirs = {**MODEL_DEFAULTS, **init.model_config}
    differing = [f"{key} {model_config[key]!r} -> {theirs[key]!r}" for key in sorted(MODEL_DEFAULTS)
                 if key in model_config and model_config[key] != theirs.get(key)]
    if differing:
        log.info("train.init_from: the network is that of %s; the model section is ignored for this run "
                 "(differs in %s)", init.path, ", ".join(differing))


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
    compile_cache_dir: str | os.PathLike | None = None,
    init_method: str | None = None,
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
        The ``model`` config section (network shape).  Ignored (with a log
        line naming what differs) when ``train.{dataset}.init_from`` names a
        model file to fine-tune: that file's network and EMA weights start the
        run (:mod:`~radiogen.model.init_from`).
    seed : int
        Global seed; the run uses its ``train.lotss`` / ``train.first`` stream (radiogen.seeds).
    checkpoint_dir : path, optional
        Default: ``<out_path's folder>/checkpoints``.
    device : str, optional
        ``cpu``, ``cuda`` or None/``auto`` (this rank's GPU when there is one).
    stop_after : int, optional
        Stop (with a checkpoint) after this many steps of this run, as if the
        job had been sent SIGTERM; for walltime-limited jobs and tests.  A
        signal is answered after the current step in one process, and at the
        next step where the processes agree (log point, checkpoint or every
        ``STOP_CHECK_EVERY`` steps) in several.
    on_step : callable, optional
        Called with the step count after every step (tests, progress hooks).
    compile_cache_dir : path, optional
        Where ``torch.compile`` keeps its compiled kernels (``train.compile``),
        so that a retried job reuses them.  Default: ``TORCHINDUCTOR_CACHE_DIR``
        when set, else ``<out_path's folder>/compile-cache`` (node-local
        ``/tmp``, torch's own default, is lost with every new job).
    init_method : str, optional
        Rendezvous of a process group other than ``env://`` (set by :func:`launch`).

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
        model_settings, image_channels=data.channels, image_size=data.image_size, context_dim=data.context_dim,
        dataset=data.dataset,
    )
    init = None
    if settings["init_from"] is not None:  # fine-tuning: the file's network, weights and context transform
        init = read_init_model(settings["init_from"])
        data = match_training_set(init, data)
        _note_ignored_model_settings(model_config, init)
        model_config = init.model_config
    build_network(model_config)  # raises ConfigError for shapes the U-Net cannot take
    run_seed = seed_stream(seed, f"train.{data.dataset}")
    ckpt_dir = checkpoint_dir_of(out_path, checkpoint_dir)
    if settings["compile"]:
        if compile_cache_dir is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(compile_cache_dir).resolve())
        else:
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((out_path.parent / "compile-cache").resolve()))

    env = init_distributed(device, init_method=init_method)
    try:
        return _train(data, model_config, settings, env, out_path, ckpt_dir, run_seed, stop_after, on_step, init)
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
    init: InitModel | None = None,
) -> dict:
    device = env.device
    global_batch = int(settings["batch_size"])
    if global_batch % env.world:
        raise ConfigError(f"train.batch_size={global_batch} is not divisible by the {env.world} processes")
    local_batch = global_batch // env.world
    total_steps = int(settings["steps"])
    precision = _resolve_precision(settings["precision"], device)
    channels_last = bool(settings["channels_last"])

    if device.type == "cuda":
        # Fixed shapes: let cuDNN time its convolution algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(run_seed)  # identical initial weights on every rank
    net = build_network(model_config)
    if init is not None:
        # The file's EMA weights start both the raw and (copied by EMA below) the averaged weights.
        net.load_state_dict(init.state_dict)
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

    identity = run_identity(data, model_config, settings, run_seed, None if init is None else init.digest)
    state, resumed_from = _agreed_checkpoint(env, ckpt_dir, identity, settings["stale_checkpoints"])
    step = 0
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
            log.info("resumed from step %d of %d (%s)", step, total_steps, resumed_from)
    del state
    context_dropout = _take_over_context_dropout(net)

    model = net
    if env.distributed:
        # The network's only buffers are constants (the noise embedding's
        # frequencies): broadcasting them before every forward would be a
        # collective per step for nothing.
        ddp = torch.nn.parallel.DistributedDataParallel
        no_buffer_sync = ({"forward_sync_buffers": False}  # newer torch; the older name warns there
                          if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
                          else {"broadcast_buffers": False})
        model = ddp(net, device_ids=[device.index] if device.type == "cuda" else None, **no_buffer_sync)
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
        if init is not None and step == 0:
            log.info("fine-tuning %s (step %s of its own run%s): its EMA weights start the raw and EMA weights",
                     init.path, init.meta["step"],
                     ", imported from " + str(init.meta["train_config"]["imported_from"])
                     if (init.meta.get("train_config") or {}).get("imported_from") else "")

    def checkpoint(at: int) -> None:
        health.check(at, net, ema)  # every rank, before anything is written
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
                "precision_used": precision,  # what "auto" resolved to (read back by benchmarks/gpu_check)
            }
            path = save_checkpoint(ckpt_dir, at, payload, int(settings["keep_checkpoints"]))
            log.info("checkpoint %s", path)
            block_point("train.checkpoint", at)
        if env.distributed:
            dist.barrier()

    def write_model(path: Path, at: int) -> None:
        """A model file of the EMA weights now (the final model, or a snapshot)."""
        save_model(
            path,
            model_config=model_config,
            state_dict=ema.state_dict(),
            dataset=data.dataset,
            train_config={**settings, "seed": run_seed, "world_size": env.world, "precision_used": precision,
                          **({} if init is None else {"init_sha256": init.digest, "init_step": init.meta["step"],
                                                      "init_train_config": init.meta.get("train_config")})},
            step=at,
            normalisation=data.normalisation(),
            class_names=data.class_names(),
            context_histogram=data.context_histogram(int(settings["histogram_bins"])),
            history=history,
            context_names=data.context_names(),
            size_normalisation=data.size_normalisation(),
            context_histogram_2d=data.context_histogram_2d(),
        )

    snapshot_steps = {int(s) for s in settings.get("snapshot_steps", [])}

    def write_snapshot(at: int) -> None:
        """An early model of the same run, kept as a guide for autoguidance (``train.snapshot_steps``)."""
        checkpoint(at)  # health-checked like every checkpoint; a resume at ``at`` rewrites the snapshot
        if env.is_main:
            write_model(snapshot_path(out_path, at), at)
            log.info("wrote snapshot %s (EMA weights, step %d)", snapshot_path(out_path, at), at)
        if env.distributed:
            dist.barrier()

    if step in snapshot_steps and step < total_steps and not snapshot_path(out_path, step).exists():
        write_snapshot(step)  # killed between the snapshot's checkpoint and its model file
    missed = sorted(s for s in snapshot_steps if s < step and not snapshot_path(out_path, s).exists())
    if missed:
        raise TrainingError(
            f"{ckpt_dir}: the run resumes at step {step}, past snapshot step(s) {missed} whose model files "
            f"({snapshot_path(out_path, missed[0])} ...) are missing; remove the checkpoints to train again "
            "from step 0, or drop those steps from train.snapshot_steps")

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
    health = _LossHealth(env, device, ckpt_dir)
    t_log = time.perf_counter()
    t_start = t_log
    steps_since_log = 0
    square = data.image_size[0] == data.image_size[1]
    mine = slice(env.rank * local_batch, (env.rank + 1) * local_batch)  # this process's part of the batch
    if step == 0:
        validate(0)  # the untrained network: first point of the loss curves
    with signal_handlers(stop):
        while step < total_steps:
            torch.manual_seed(_step_seed(run_seed, step, env.rank))  # U-Net dropout only
            draws = torch.Generator(device=device).manual_seed(_draw_seed(run_seed, step))
            idx = batch_indices(train_idx.size, step=step, global_batch=global_batch, seed=run_seed,
                                rank=env.rank, world=env.world)
            sel = _to_device(torch.from_numpy(idx), store)
            x = to_model_range(_to_device(images[sel], device))
            # Every per-sample draw is made for the global batch in a fixed order and
            # sliced: sample j of step t sees the same numbers on any number of processes.
            orientation = augmentation_draws(global_batch, square=square, generator=draws, device=device)
            sigma = sample_sigma(global_batch, p_mean=float(settings["p_mean"]), p_std=float(settings["p_std"]),
                                 device=device, generator=draws)[mine]
            noise = torch.randn((global_batch, *x.shape[1:]), device=device, generator=draws)[mine]
            drop = torch.rand(global_batch, device=device, generator=draws)[mine] < context_dropout
            if settings["augment"]:
                x = augment(x, tuple(d[mine] for d in orientation))
            c = _to_device(context[sel], device) if cond else None
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                noise = noise.contiguous(memory_format=torch.channels_last)
            with _autocast(device, precision):
                loss = denoising_loss(model, x, sigma, noise, context=c, context_mask=drop if cond else None,
                                      sigma_data=_sigma_data(net)).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if not scaler.is_enabled():
                _sanitise_gradients(net)  # fp16 loss scaling skips non-finite steps itself
            scaler.step(optimizer)
            scaler.update()
            step += 1
            ema.update(net, step=step)
            steps_since_log += 1
            health.add(loss.detach(), step)
            if on_step is not None:
                on_step(step)

            if step % int(settings["log_every"]) == 0 or step == total_steps:
                mean_loss = health.log_point(step)  # raises on a non-finite loss, on every rank
                now = time.perf_counter()
                rate = steps_since_log * global_batch / max(now - t_log, 1e-9)
                history["train_step"].append(step)
                history["train_loss"].append(mean_loss)
                history["train_images_per_s"].append(rate)
                if env.is_main:
                    done = step - start_step
                    eta = (now - t_start) / max(done, 1) * (total_steps - step)
                    log.info("step %d/%d loss %.4f %.1f images/s eta %.0f s", step, total_steps, mean_loss, rate, eta)
                steps_since_log = 0
                t_log = now
            if step % int(settings["val_every"]) == 0 and step < total_steps:
                validate(step)

            if step in snapshot_steps and step < total_steps:
                write_snapshot(step)

            want_stop = stop.signum is not None or (stop_after is not None and step - start_step >= stop_after)
            if env.distributed:
                # Agreeing on the stop costs an all-reduce and a host synchronisation:
                # only at steps that synchronise anyway (log points, checkpoints) and
                # every STOP_CHECK_EVERY steps, so a signal is answered within seconds.
                planned = stop_after is not None and step - start_step == stop_after  # known to all ranks
                if planned or _agree_on_stop_at(step, settings, total_steps):
                    flag = torch.tensor([1.0 if want_stop else 0.0], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    want_stop = bool(flag.item() > 0)
                else:
                    want_stop = False
            if want_stop and step < total_steps:
                checkpoint(step)
                interrupted = True
                break
            if step % int(settings["checkpoint_every"]) == 0 and step < total_steps and step not in snapshot_steps:
                checkpoint(step)

    if interrupted:
        if env.is_main:
            log.warning("stopped at step %d of %d; rerun the same command to resume", step, total_steps)
        return {"status": "interrupted", "step": step}

    validate(step)
    checkpoint(step)
    if env.is_main:
        write_model(out_path, step)
        log.info("wrote %s (EMA weights, step %d)", out_path, step)
    if env.distributed:
        dist.barrier()
    return {"status": "done", "step": step}


