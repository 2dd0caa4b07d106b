"""One time-boxed command that measures what a first GPU run should tell us.

Run through the wrapper ``benchmarks/gpu_check OUT_DIR [--budget-s 480]``.  The
global budget is split over four parts (:data:`PART_BUDGET_S`), each in its own
process so that a crash, a hang or a CUDA out-of-memory error of one part costs
only that part:

``ceilings``
    bf16 matrix-product rate (TFLOP/s, large square products) and device copy
    bandwidth (GB/s, bytes read plus bytes written), the device description and
    the forward FLOPs of the paper network per image.
``train``
    images/s and peak memory of the paper network (31 M parameters, batch 256,
    bf16 autocast) through :func:`radiogen.model.train.launch` on a synthetic
    training set in the shared layout, in the fixed slots of
    :data:`TRAIN_SLOTS`: NHWC + torch.compile first (its compile time recorded
    apart from its steady-state rate), then NHWC and NCHW eager, which decide
    ``train.channels_last``; one process per GPU (NCCL) when there are several.
``sample``
    images/s of the paper network through the project's sampler
    (:func:`radiogen.sampler.generate.generate_images`: 25 Heun steps, batched
    classifier-free guidance w = 0.75, bf16), batch 64 to 1024 or until OOM;
    the fastest batch is the value for ``sample.cuda_batch_size``.
``first``
    the real FIRST archive -> training set (the ``radiogen first`` functions),
    the ResNet-18 classifier for a few epochs, a small diffusion model (base 64
    channels, batch 128) for a fixed time, 100 images per class at w = 0.75,
    scored by that classifier: real-test and generated accuracy with binomial
    errors sqrt(p (1 - p) / n).

Every part stops itself at its deadline (training runs are stopped through
train()'s own SIGUSR1 checkpoint-and-stop mechanism) and is killed 30 s after
it; the whole command ends within budget + :data:`OVERRUN_S` (9 minutes at the
default budget).  A variant or part that fails is recorded as a row with its
error and the others still run; every file and the table are written before the
exit status (1) says that something failed.  Figures go to
``OUT_DIR/results.json`` (rewritten after every part), the log to
``OUT_DIR/gpu_check.log``, the FIRST sample grid and loss curves to PNGs; large
work files (training sets, checkpoints) to ``--work-dir`` so that OUT_DIR
stays small (a device run brings back at most 8 files).  ``--device cpu --smoke`` runs tiny sizes in seconds per
part (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FIRST_ZIP = REPO.parent / "shared" / "data" / "first" / "galaxy_data.zip"
PARTS = ("ceilings", "train", "sample", "first")
#: Seconds of each part at the default --budget-s (their sum).  With another budget
#: a part gets the same share of the time left when it starts: time a part leaves
#: unused passes on to the later ones.
PART_BUDGET_S = {"ceilings": 20.0, "train": 210.0, "sample": 70.0, "first": 180.0}
DEFAULT_BUDGET_S = sum(PART_BUDGET_S.values())
#: The hard limit of the whole command (a device run has 10 minutes per command).
COMMAND_LIMIT_S = 540.0
#: A training variant is sent SIGTERM this long after its deadline, SIGKILL 10 s
#: later; a part GRACE_S + 15 s after its deadline, so that the part's own clean-up
#: of a variant comes first.  The command ends within ~budget + 40 s.
GRACE_S = 15.0
PART_GRACE_S = GRACE_S + 15.0
#: How long after the budget the command can end at worst: the last part killed
#: PART_GRACE_S after it, 10 s from SIGTERM to SIGKILL, 5 s for its output, 5 s for
#: start-up and the table.
OVERRUN_S = PART_GRACE_S + 10.0 + 5.0 + 5.0
#: Targets on one H100-class GPU and the paper's figures on an A100.
TARGETS = {"train_images_per_s": 1500.0, "sample_images_per_s": 40.0}
PAPER_A100 = {"train_images_per_s": 375.0, "sample_images_per_s": 5.1}
#: Morphology classes of the FIRST archive, in label order.
FIRST_CLASSES = ("FRI", "FRII", "Compact", "Bent")
GUIDANCE = 0.75
#: A network small enough for the CPU smoke run (0.13 M parameters).
TINY_MODEL = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8}

log = logging.getLogger("gpu_check")


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one mode (GPU run or CPU smoke run)."""

    image_size: int = 80
    paper_model: dict = field(default_factory=dict)  # {} = schema defaults = paper.yaml
    train_batch: int = 256
    train_steps: int = 60
    train_log_every: int = 10
    train_images: int = 2048
    sample_batches: tuple = (64, 128, 256, 512, 1024)
    sample_steps: int = 25
    matmul_n: int = 8192
    matmul_repeats: int = 10
    copy_bytes: int = 2 << 30
    copy_repeats: int = 10
    first_model: dict = field(default_factory=lambda: {"base_channels": 64})
    first_batch: int = 128
    first_log_every: int = 100
    first_n_per_class: int = 100
    first_sample_steps: int = 25
    first_sample_batch: int = 400
    classifier_max_epochs: int = 40
    classifier_images_per_epoch: int | None = None
    #: Seconds kept back in the FIRST part for finishing the model, sampling, scoring, figures.
    first_reserve_s: float = 35.0
    #: Upper limit of the FIRST diffusion training time (None: all the part's time left).
    first_train_max_s: float | None = None


GPU_SIZES = Sizes()
SMOKE_SIZES = Sizes(
    image_size=16,
    paper_model=TINY_MODEL,
    train_batch=8,
    train_steps=4,
    train_log_every=1,
    train_images=48,
    sample_batches=(2, 4),
    sample_steps=2,
    matmul_n=256,
    matmul_repeats=3,
    copy_bytes=16 << 20,
    copy_repeats=3,
    first_model=TINY_MODEL,
    first_batch=4,
    first_log_every=5,
    first_n_per_class=2,
    first_sample_steps=2,
    first_sample_batch=8,
    classifier_max_epochs=1,
    classifier_images_per_epoch=16,
    first_reserve_s=10.0,
    first_train_max_s=3.0,
)


# --------------------------------------------------------------------------- small helpers


def _clean(value):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None, paths and tuples to str/list."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``, or {} when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def binomial_error(p: float, n: int) -> float | None:
    """Standard error sqrt(p (1 - p) / n) of a fraction p of n trials."""
    return math.sqrt(p * (1.0 - p) / n) if n > 0 else None


def _error_entry(err: BaseException) -> dict:
    return {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}


@contextlib.contextmanager
def guarded(entry: dict, what: str):
    """Run one measurement; an exception marks ``entry`` as failed instead of ending the part."""
    try:
        yield entry
        entry.setdefault("status", "ok")
    except Exception as err:  # any failure of one measurement: record it, go on
        log.error("%s failed: %s: %s", what, type(err).__name__, err)
        entry.update(_error_entry(err))


class Record:
    """A part's results, saved atomically after every measurement so a kill keeps them."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {}

    def save(self) -> None:
        write_json(self.data, self.path)


def _left(deadline: float) -> float:
    return deadline - time.time()


def _cuda_sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device) -> float | None:
    """Peak CUDA allocation (GiB) since the last reset, or the process peak RSS on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --------------------------------------------------------------------------- training hook


class StepProbe:
    """``on_step`` hook for :func:`radiogen.model.train.train`: a deadline and a memory probe.

    At ``deadline`` (a ``time.time()`` value) it raises SIGUSR1 in its own
    process, which train() answers like SLURM's pre-timeout signal: checkpoint
    after the current step and return ``"interrupted"``; with several
    processes the stop is agreed over all ranks.  A run that has not reached
    ``min_steps`` by then (a slow torch.compile) may go on until ``deadline +
    overtime_s`` to reach them, so that it still yields a timed interval.  At the first step, every
    ``every`` steps and at the stop it writes ``probe-rank<R>.json`` into
    ``report_dir``: step, wall time of the first step and peak CUDA memory.
    Picklable, so :func:`~radiogen.model.train.launch` can hand it to spawned workers.

    Parameters
    ----------
    deadline : float
        Wall-clock time (``time.time()``) at which to ask for the stop.
    min_steps, overtime_s : int, float
        Steps worth running past the deadline for, and for how long at most.
    report_dir : str
        Folder of the per-rank probe files.
    every : int
        Steps between probe files.
    """

    def __init__(self, *, deadline: float, report_dir: str, every: int,
                 min_steps: int = 0, overtime_s: float = 0.0) -> None:
        self.deadline = float(deadline)
        self.min_steps = int(min_steps)
        self.overtime_s = float(overtime_s)
        self.report_dir = str(report_dir)
        self.every = max(1, int(every))
        self.first_step_at: float | None = None
        self.fired = False

    def __call__(self, step: int) -> None:
        now = time.time()
        if self.first_step_at is None:
            self.first_step_at = now
        due = now >= self.deadline and (step >= self.min_steps or now >= self.deadline + self.overtime_s)
        stop = due and not self.fired
        if step == 1 or step % self.every == 0 or stop:
            self._report(step, now, stopped=stop)
        if stop:
            self.fired = True
            # Only train()'s own handler may receive the signal: the default
            # action of SIGUSR1 would kill the process.
            handler = signal.getsignal(signal.SIGUSR1)
            if callable(handler):
                signal.raise_signal(signal.SIGUSR1)
            else:
                log.warning("deadline reached but no SIGUSR1 handler is installed; not stopping")

    def _report(self, step: int, now: float, *, stopped: bool) -> None:
        import torch

        rank = int(os.environ.get("RANK", "0"))
        peak = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            peak = torch.cuda.max_memory_allocated() / 2**30
        write_json(
            {"rank": rank, "step": step, "time": now, "first_step_at": self.first_step_at,
             "peak_cuda_gib": peak, "stopped_by_deadline": stopped},
            Path(self.report_dir) / f"probe-rank{rank}.json",
        )


def read_probes(report_dir: str | os.PathLike) -> list[dict]:
    """All per-rank probe files of one run, rank order."""
    found = [read_json(p) for p in sorted(Path(report_dir).glob("probe-rank*.json"))]
    return sorted((p for p in found if p), key=lambda p: p.get("rank", 0))


def run_history(out_path: Path, checkpoint_dir: Path) -> tuple[dict, int, str]:
    """(history, step, "done" | "interrupted" | "none") of a training run.

    The model file holds the history of a finished run; an interrupted run
    has it only in its newest checkpoint.
    """
    import torch

    from radiogen.model.checkpoints import latest_checkpoint

    if out_path.exists():
        payload = torch.load(out_path, map_location="cpu", weights_only=True)
        return dict(payload.get("history") or {}), int(payload["step"]), "done"
    ckpt = latest_checkpoint(checkpoint_dir)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        return dict(state.get("history") or {}), int(state["step"]), "interrupted"
    return {}, 0, "none"


def precision_used(out_path: Path, checkpoint_dir: Path) -> str | None:
    """The precision a training run used, from its model file or newest checkpoint (None: neither says)."""
    import torch

    from radiogen.model.checkpoints import latest_checkpoint

    if out_path.exists():
        payload = torch.load(out_path, map_location="cpu", weights_only=True)
        return (payload.get("train_config") or {}).get("precision_used")
    ckpt = latest_checkpoint(checkpoint_dir)
    if ckpt is not None:
        return torch.load(ckpt, map_location="cpu", weights_only=False).get("precision_used")
    return None


def steady_rate(rates: list[float]) -> float | None:
    """Median images/s over the log intervals after the first (which holds warm-up and compile)."""
    steady = [float(r) for r in rates[1:]]
    return float(statistics.median(steady)) if steady else None


def _paper_model_settings(sizes: Sizes, *, smoke: bool) -> tuple[dict, str]:
    """The ``model`` section of workflow/config/paper.yaml (schema defaults when unreadable)."""
    if smoke:
        return dict(sizes.paper_model), "tiny smoke network"
    path = REPO / "workflow" / "config" / "paper.yaml"
    try:
        import yaml

        section = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        return dict(section), str(path.relative_to(REPO))
    except Exception as err:  # yaml missing on the device image, or no file: same network
        log.warning("%s unreadable (%s); using the schema defaults (the same network)", path, err)
        return {}, "radiogen.model.MODEL_DEFAULTS"


# --------------------------------------------------------------------------- part: ceilings


def _timed_cuda(fn: Callable[[], Any], *, device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` (CUDA events on GPU, a host clock on CPU)."""
    import torch

    for _ in range(warmup):
        fn()
    _cuda_sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def describe_device(device) -> dict:
    """Device, driver and library versions, for the record."""
    import torch

    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            device_count=torch.cuda.device_count(),
            bf16_supported=torch.cuda.is_bf16_supported(),
            cudnn=torch.backends.cudnn.version(),
            )
        with contextlib.suppress(Exception):
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        with contextlib.suppress(Exception):
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            info["nvidia_smi"] = smi.stdout.strip().splitlines()
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def _matmul_rate(n: int, *, device, repeats: int) -> dict:
    """bf16 rate of an n x n x n product on random data (zeros run faster than real data)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    times = _timed_cuda(lambda: a @ b, device=device, warmup=3, repeats=repeats)
    t = statistics.median(times)
    return {"n": n, "seconds_median": t, "tflops": 2 * n**3 / t / 1e12, "repeats": len(times)}


def _copy_rate(nbytes: int, *, device, repeats: int) -> dict:
    """Device-to-device copy bandwidth, counting the bytes read plus the bytes written."""
    import torch

    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    times = _timed_cuda(lambda: dst.copy_(src), device=device, warmup=2, repeats=repeats)
    t = statistics.median(times)
    moved = 2 * src.numel() * 4
    return {"bytes_per_copy": moved, "seconds_median": t, "gbps": moved / t / 1e9, "counting": "read + write"}


def part_ceilings(ctx: dict, rec: Record) -> None:
    """Matrix-product rate, copy bandwidth, paper-network FLOPs per image."""
    import torch

    sizes = _sizes(ctx)
    device = torch.device(ctx["device"])
    rec.data["device"] = describe_device(device)
    rec.save()

    entry = rec.data.setdefault("matmul_bf16", {})
    with guarded(entry, "bf16 matmul"):
        entry.update(_matmul_rate(sizes.matmul_n, device=device, repeats=sizes.matmul_repeats))
        log.info("bf16 matmul %d^3: %.1f TFLOP/s", sizes.matmul_n, entry["tflops"])
    rec.save()

    entry = rec.data.setdefault("copy", {})
    with guarded(entry, "device copy"):
        entry.update(_copy_rate(sizes.copy_bytes, device=device, repeats=sizes.copy_repeats))
        log.info("device copy of %.2f GB: %.0f GB/s (read + write)", sizes.copy_bytes / 1e9, entry["gbps"])
    rec.save()

    entry = rec.data.setdefault("paper_forward", {})
    with guarded(entry, "paper-network FLOP count"):
        from torch.utils.flop_counter import FlopCounterMode

        from radiogen.model import build_network, model_config_from

        settings, source = _paper_model_settings(sizes, smoke=ctx["smoke"])
        cfg = model_config_from(settings, image_channels=1, image_size=[sizes.image_size] * 2, context_dim=4)
        net = build_network(cfg).to(device).eval()
        x = torch.randn(2, 1, sizes.image_size, sizes.image_size, device=device)
        context = torch.eye(4, device=device)[:2]
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x, torch.full((2,), 1.0, device=device), context)
        entry.update(
            model_settings=settings, source=source,
            parameters=sum(p.numel() for p in net.parameters()),
            gflop_per_image=counter.get_total_flops() / 2 / 1e9,
            counted="convolutions and matrix products of one forward, per image",
        )
        log.info("paper network: %.2f M parameters, %.1f GFLOP per image forward",
                 entry["parameters"] / 1e6, entry["gflop_per_image"])
    rec.save()


# --------------------------------------------------------------------------- part: train


@dataclass(frozen=True)
class Variant:
    """One training-throughput case and its time slot."""

    name: str
    channels_last: bool
    compile: bool
    #: Seconds at the default budget (scaled with the train part's budget).
    slot_s: float
    #: Not started with less time left.
    min_s: float = 15.0


#: Training cases in the order they run.  NHWC + torch.compile, the most
#: informative and the slowest to start (a cold Inductor compile of forward and
#: backward takes 1-2 minutes), comes first with the largest fixed slot, so it
#: is never squeezed out by the others; its time to the first step is recorded
#: apart from its steady-state rate.  NHWC and NCHW eager decide
#: train.channels_last.  (NCHW + compile is left out: the time is better spent.)
TRAIN_SLOTS = (
    Variant("NHWC compile", channels_last=True, compile=True, slot_s=140.0, min_s=60.0),
    Variant("NHWC eager", channels_last=True, compile=False, slot_s=35.0),
    Variant("NCHW eager", channels_last=False, compile=False, slot_s=35.0),
)
#: Test hook: a training variant of this name kills its own process at the start,
#: as a CUDA crash or the kernel's out-of-memory killer would.
FAIL_VARIANT_ENV = "GPU_CHECK_FAIL_VARIANT"


def train_variants(*, cuda: bool, skip_compile: bool) -> list[tuple[Variant, str | None]]:
    """:data:`TRAIN_SLOTS`, each with the reason it is skipped (None: run it)."""
    out = []
    for case in TRAIN_SLOTS:
        reason = None
        if case.compile and skip_compile:
            reason = "--skip-compile"
        elif case.compile and not cuda:
            reason = "torch.compile on CPU takes minutes (not part of the smoke run)"
        out.append((case, reason))
    return out


def _train_settings(sizes: Sizes, *, precision: str, variant: Variant) -> dict:
    steps = sizes.train_steps
    return {
        "precision": precision,
        "channels_last": variant.channels_last,
        "compile": variant.compile,
        "log_every": sizes.train_log_every,
        # Validation is not what is timed: one batch at three noise levels.
        "val_sigmas": [0.01, 0.2, 5.0],
        "val_max_images": sizes.train_batch,
        "keep_checkpoints": 1,
        "lotss": {"batch_size": sizes.train_batch, "steps": steps, "val_every": 10 * steps,
                  "checkpoint_every": 10 * steps},
    }


def part_train(ctx: dict, rec: Record) -> None:
    """Paper-network training throughput through launch(), one subprocess per variant."""
    import torch

    from radiogen.model.data import write_synthetic_training_set

    sizes = _sizes(ctx)
    deadline = ctx["deadline"]
    cuda = ctx["device"].startswith("cuda")
    work = Path(ctx["work"]) / "train"
    shutil.rmtree(work, ignore_errors=True)  # a reused --work-dir must not resume old runs
    work.mkdir(parents=True, exist_ok=True)
    settings, source = _paper_model_settings(sizes, smoke=ctx["smoke"])
    world = (torch.cuda.device_count() if cuda else 1) if ctx["nproc"] == "auto" else int(ctx["nproc"])
    # "auto" is bf16 autocast on GPUs that have it (fp16 + loss scaling otherwise);
    # asking torch here would create a CUDA context in this launcher process.
    precision = "auto"
    data = write_synthetic_training_set(
        work / "lotss_synthetic.h5", n=sizes.train_images, size=sizes.image_size, dataset="lotss",
        val_fraction=0.125, seed=int(ctx["seed"]),
    )
    rec.data.update(
        model_settings=settings, model_source=source, batch=sizes.train_batch, world_size=world,
        backend="nccl" if cuda and world > 1 else ("gloo" if world > 1 else "single process"),
        precision=precision, steps_per_run=sizes.train_steps, log_every=sizes.train_log_every,
        data=f"synthetic LoTSS-layout set, {sizes.train_images} images of {sizes.image_size}x{sizes.image_size}",
        rate_source="history['train_images_per_s'] of the model file/checkpoint: median over log "
                    "intervals after the first (warm-up, compile)",
        variants=[],
    )
    rec.save()
    plan = train_variants(cuda=cuda, skip_compile=ctx["skip_compile"])
    for i, (case, reason) in enumerate(plan):
        entry = {"name": case.name, "channels_last": case.channels_last, "compile": case.compile}
        rec.data["variants"].append(entry)
        if reason:
            entry.update(status="skipped", reason=reason)
            rec.save()
            continue
        # Each case's slot, scaled to the time left over the slots of the cases still to run.
        todo = [c for c, r in plan[i:] if r is None]
        budget = _left(deadline) * case.slot_s / sum(c.slot_s for c in todo)
        if _left(deadline) < case.min_s:
            entry.update(status="skipped", reason=f"out of time ({_left(deadline):.0f} s left)")
            rec.save()
            continue
        budget = max(budget, case.min_s)
        entry["budget_s"] = budget
        with guarded(entry, f"training variant {case.name}"):
            entry.update(_run_variant(ctx, case, data=data, work=work / f"v{i}", budget=budget,
                                      settings=_train_settings(sizes, precision=precision, variant=case),
                                      model_settings=settings))
        rec.save()
    _compile_time(rec.data["variants"])
    done = [v for v in rec.data["variants"] if v.get("images_per_s")]
    if done:
        best = max(done, key=lambda v: v["images_per_s"])
        rec.data["best"] = {"name": best["name"], "images_per_s": best["images_per_s"]}
    rec.save()


def _compile_time(variants: list[dict]) -> None:
    """The compile variant's compile time: its time to the first step less the eager NHWC one's.

    Both include the same process start, data loading and CUDA set-up; the
    difference is the Inductor compile of forward and backward (and the first
    step's extra cost).  Its ``images_per_s`` counts only log intervals after
    the first, so it is the steady-state rate without the compile.
    """
    by_name = {v["name"]: v for v in variants}
    compiled, eager = by_name.get("NHWC compile", {}), by_name.get("NHWC eager", {})
    if compiled.get("time_to_first_step_s") is None:
        return
    compiled["compile_s"] = compiled["time_to_first_step_s"] - (eager.get("time_to_first_step_s") or 0.0)
    compiled["compile_s_source"] = ("time to first step less the NHWC eager one's" if eager.get(
        "time_to_first_step_s") is not None else "time to first step (no eager run to subtract)")


def _run_variant(ctx: dict, case: Variant, *, data: Path, work: Path, budget: float, settings: dict,
                 model_settings: dict) -> dict:
    """Train one variant in a fresh process (its own peak memory, compile cache, failure)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = {
        "data": str(data), "out": str(work / "model.pt"), "checkpoints": str(work / "checkpoints"),
        "probe_dir": str(work), "result": str(work / "result.json"), "device": ctx["device"],
        "nproc": ctx["nproc"], "seed": int(ctx["seed"]), "settings": settings,
        "model_settings": model_settings, "name": case.name,
        "deadline": time.time() + budget, "log_every": settings["log_every"], "threads": ctx.get("threads"),
    }
    write_json(spec, work / "spec.json")
    log.info("variant %s: up to %.0f s", case.name, budget)
    cmd = [sys.executable, __file__, "--variant", str(work / "spec.json")]
    rc, timed_out, tail = run_child(cmd, name=f"train:{case.name}", hard_deadline=spec["deadline"] + GRACE_S)
    result = read_json(work / "result.json")
    probes = read_probes(work)
    out: dict[str, Any] = {k: v for k, v in result.items() if k not in ("spec",)}
    peaks = [p["peak_cuda_gib"] for p in probes if p.get("peak_cuda_gib") is not None]
    if peaks:
        out["peak_memory_gib"] = max(peaks)
        out["peak_memory_gib_per_rank"] = peaks
    first = [p["first_step_at"] for p in probes if p.get("first_step_at")]
    if first and result.get("launched_at"):
        out["time_to_first_step_s"] = min(first) - result["launched_at"]
    if probes:
        out.setdefault("steps_done", max(p.get("step", 0) for p in probes))
    if rc != 0 or timed_out:
        out["status"] = "error"
        out["error"] = out.get("error") or (f"killed after its deadline (+{GRACE_S:.0f} s)" if timed_out
                                            else f"variant process exited with status {rc}")
        out["log_tail"] = tail
    return out


def variant_main(spec_path: str) -> int:
    """Body of one training variant (``--variant SPEC``): launch(), then read the rates back."""
    spec = read_json(spec_path)
    result: dict[str, Any] = {}
    try:
        import torch

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        if os.environ.get(FAIL_VARIANT_ENV) == spec["name"]:
            log.warning("%s=%s: this variant's process kills itself", FAIL_VARIANT_ENV, spec["name"])
            os.kill(os.getpid(), signal.SIGKILL)
        from radiogen.model.train import launch

        # Two log intervals: the first (warm-up, compile) and one timed.
        probe = StepProbe(deadline=spec["deadline"], report_dir=spec["probe_dir"], every=spec["log_every"],
                          min_steps=2 * spec["log_every"],
                          overtime_s=GRACE_S / 2)
        result["launched_at"] = time.time()
        status = launch(
            nproc=spec["nproc"], data_path=spec["data"], out_path=spec["out"], train_settings=spec["settings"],
            model_settings=spec["model_settings"], seed=spec["seed"], checkpoint_dir=spec["checkpoints"],
            device=spec["device"], on_step=probe,
        )
        result["finished_at"] = time.time()
        history, step, state = run_history(Path(spec["out"]), Path(spec["checkpoints"]))
        # What train() resolved "auto" to, as it wrote it into the model file or checkpoint.
        result["precision_used"] = precision_used(Path(spec["out"]), Path(spec["checkpoints"]))
        rates = [float(r) for r in history.get("train_images_per_s", [])]
        batch = int(spec["settings"]["lotss"]["batch_size"])
        rate = steady_rate(rates)
        result.update(
            run_status=status["status"], steps_done=step, history_from=state,
            images_per_s_intervals=rates, images_per_s=rate,
            s_per_step=batch / rate if rate else None,
            train_loss=history.get("train_loss", []),
        )
        if rate is None:
            result["note"] = "stopped before a steady-state log interval (see time_to_first_step_s)"
        result["status"] = "ok" if rate else "partial"
        write_json(result, spec["result"])
        return 0
    except Exception as err:  # recorded for the parent, which carries on with the next case
        log.exception("variant failed")
        result.update(_error_entry(err))
        write_json(result, spec["result"])
        return 1


# --------------------------------------------------------------------------- part: sample


def part_sample(ctx: dict, rec: Record) -> None:
    """Paper-network sampling rate through the project's sampler, growing batch until OOM."""
    import numpy as np
    import torch

    from radiogen.model import build_network, model_config_from, save_model
    from radiogen.sampler.generate import generate_images, load_sampling_model, resolve_autocast

    sizes = _sizes(ctx)
    deadline = ctx["deadline"]
    device = torch.device(ctx["device"])
    work = Path(ctx["work"]) / "sample"
    settings, source = _paper_model_settings(sizes, smoke=ctx["smoke"])
    cfg = model_config_from(settings, image_channels=1, image_size=[sizes.image_size] * 2, context_dim=4)
    torch.manual_seed(int(ctx["seed"]))
    path = work / "paper_untrained_first.pt"
    # Through a model file, as the workflow does: load_sampling_model places it on the device.
    save_model(path, model_config=cfg, state_dict=build_network(cfg).state_dict(), dataset="first",
               train_config={}, step=0, class_names=list(FIRST_CLASSES))
    net, meta = load_sampling_model(path, device=device)
    amp = resolve_autocast("auto", device)
    steps = sizes.sample_steps
    rec.data.update(
        model_settings=settings, model_source=source, parameters=sum(p.numel() for p in net.parameters()),
        num_steps=steps, guidance=GUIDANCE, evaluations_per_image=2 * steps - 1,
        image_forwards_per_image=2 * (2 * steps - 1), precision="bf16" if amp is torch.bfloat16 else "fp32",
        cfg="batched: one forward of 2B images per evaluation", weights="untrained (speed only)",
        batches=[], extras=[],
    )
    rec.save()

    def run(batch: int, *, num_steps: int, autocast_dtype) -> tuple[float, float | None]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _cuda_sync(device)
        t0 = time.perf_counter()
        generate_images(
            net, meta, np.arange(batch), seed=int(ctx["seed"]), guidance=GUIDANCE,
            sampler={"num_steps": num_steps}, settings={"n_per_class": math.ceil(batch / 4)},
            batch_size=batch, device=device, autocast_dtype=autocast_dtype,
        )
        _cuda_sync(device)
        return time.perf_counter() - t0, _peak_gib(device)

    evals = 2 * steps - 1
    # The process's first CUDA work (library loading, handles) would inflate the
    # first batch's warm-up and so its predicted time.
    run(2, num_steps=1, autocast_dtype=amp)
    for batch in sizes.sample_batches:
        entry: dict[str, Any] = {"batch": batch}
        rec.data["batches"].append(entry)
        try:
            # One-evaluation warm-up at this shape (kernel choice, allocator), then the full run.
            t_warm, _ = run(batch, num_steps=1, autocast_dtype=amp)
            predicted = evals * t_warm
            if predicted > _left(deadline):
                entry.update(status="skipped", reason=f"predicted {predicted:.0f} s > {_left(deadline):.0f} s left")
                rec.save()
                break
            seconds, peak = run(batch, num_steps=steps, autocast_dtype=amp)
            entry.update(status="ok", seconds=seconds, images_per_s=batch / seconds, peak_memory_gib=peak)
            log.info("sampling batch %d: %.2f images/s (%.1f s, peak %.2f GiB)", batch, batch / seconds,
                     seconds, peak or float("nan"))
        except torch.cuda.OutOfMemoryError as err:
            entry.update(status="oom", error=str(err).splitlines()[0])
            log.warning("sampling batch %d: out of memory; stopping the batch sweep", batch)
            torch.cuda.empty_cache()
            rec.save()
            break
        except Exception as err:  # record and stop growing the batch
            log.error("sampling batch %d failed: %s", batch, err)
            entry.update(_error_entry(err))
            rec.save()
            break
        rec.save()
    done = [b for b in rec.data["batches"] if b.get("images_per_s")]
    if not done:
        raise RuntimeError("no batch size completed")
    best = max(done, key=lambda b: b["images_per_s"])
    rec.data["best"] = {"batch": best["batch"], "images_per_s": best["images_per_s"],
                        "seconds": best["seconds"]}
    rec.save()

    if device.type != "cuda":
        return
    # Where time is left, at the best batch: fp32 (no autocast).  cudnn.benchmark is
    # on throughout (load_sampling_model switches it on for CUDA, as sampling jobs do).
    for name, dtype in (("fp32", None),):
        entry = {"name": name, "batch": best["batch"]}
        rec.data["extras"].append(entry)
        predicted = best["seconds"] * (3.0 if dtype is None else 1.2)
        if predicted > _left(deadline):
            entry.update(status="skipped", reason=f"predicted {predicted:.0f} s > {_left(deadline):.0f} s left")
            rec.save()
            continue
        with guarded(entry, f"sampling extra {name}"):
            run(best["batch"], num_steps=1, autocast_dtype=dtype)
            seconds, peak = run(best["batch"], num_steps=steps, autocast_dtype=dtype)
            entry.update(seconds=seconds, images_per_s=best["batch"] / seconds, peak_memory_gib=peak)
        rec.save()


# --------------------------------------------------------------------------- part: first


def part_first(ctx: dict, rec: Record) -> None:
    """FIRST: training set, classifier, short diffusion run, 100 images per class, scores, figures."""
    zip_path = Path(ctx["first_zip"])
    if not zip_path.is_file():
        raise FileNotFoundError(
            f"FIRST dataset zip not found: {zip_path}; pass --first-zip PATH "
            f"(default {DEFAULT_FIRST_ZIP}, which is not copied to the device machines)"
        )
    import numpy as np
    import torch

    from radiogen.first.balance import build_training_set, write_training_set
    from radiogen.first.dataset import CLASS_NAMES, read_first_zip

    sizes = _sizes(ctx)
    deadline = ctx["deadline"]
    device = torch.device(ctx["device"])
    seed = int(ctx["seed"])
    work = Path(ctx["work"]) / "first"
    shutil.rmtree(work, ignore_errors=True)  # a reused --work-dir must not resume old runs
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(ctx["out"])

    t0 = time.time()
    dataset = read_first_zip(zip_path, crop_size=80, image_size=300)
    arrays = build_training_set(dataset, balance="undersample", validation_fraction=0.1, seed=seed)
    training_set = work / "training_set.h5"
    write_training_set(arrays, training_set, seed=seed, balance="undersample", source=str(zip_path))
    splits = dataset.table["first_split"].to_numpy()
    rec.data["dataset"] = {
        "zip": str(zip_path), "images": len(dataset.table),
        "archive_splits": {n: int((splits == k).sum()) for k, n in enumerate(("train", "valid", "test"))},
        "training_set": int(len(arrays["label"])), "training_set_validation": int(arrays["split"].sum()),
        "seconds": time.time() - t0,
    }
    rec.save()
    log.info("FIRST: %d images, balanced training set of %d", len(dataset.table), len(arrays["label"]))

    # Time left after the reserve: a quarter (at most 60 s) for the classifier, the rest for diffusion.
    usable = _left(deadline) - sizes.first_reserve_s
    classifier_budget = min(60.0, 0.25 * usable) if not ctx["smoke"] else 0.0
    clf = rec.data.setdefault("classifier", {})
    classifier = None
    with guarded(clf, "classifier training"):
        classifier = _train_classifier(dataset, sizes=sizes, seed=seed, work=work, device=device,
                                       budget=classifier_budget, entry=clf)
    rec.save()

    diff = rec.data.setdefault("diffusion", {})
    model_path = work / "model.pt"
    with guarded(diff, "FIRST diffusion training"):
        budget = _left(deadline) - sizes.first_reserve_s
        if sizes.first_train_max_s is not None:
            budget = min(budget, sizes.first_train_max_s)
        if budget < min(5.0, sizes.first_train_max_s or 5.0):
            raise RuntimeError(f"out of time: {budget:.0f} s left for training")
        diff.update(_train_first_diffusion(ctx, sizes=sizes, data=training_set, out=model_path,
                                           work=work, budget=budget))
        with contextlib.suppress(Exception):
            from radiogen.model.loss_curves import plot_loss_curves

            history, _, _ = run_history(model_path, work / "checkpoints")
            plot_loss_curves(history, out_dir / "first_loss.png",
                             title=f"FIRST quick run: base {sizes.first_model.get('base_channels')} ch, "
                                   f"batch {sizes.first_batch}, {diff.get('steps')} steps")
            diff["loss_figure"] = "first_loss.png"
    rec.save()
    if not model_path.exists():
        raise RuntimeError("no FIRST model file: nothing to sample")

    gen = rec.data.setdefault("generated", {})
    samples = work / "samples.h5"
    with guarded(gen, "FIRST sampling"):
        from radiogen.sampler.shards import write_shard

        n = sizes.first_n_per_class * len(CLASS_NAMES)
        t1 = time.perf_counter()
        write_shard(model_path, samples, shard=0, seed=seed, guidance=GUIDANCE,
                    settings={"n_per_class": sizes.first_n_per_class},
                    sampler={"num_steps": sizes.first_sample_steps}, images_per_shard=n,
                    batch_size=sizes.first_sample_batch, device=ctx["device"], precision="auto")
        seconds = time.perf_counter() - t1
        gen.update(n_images=n, n_per_class=sizes.first_n_per_class, guidance=GUIDANCE,
                   num_steps=sizes.first_sample_steps, seconds=seconds, images_per_s=n / seconds)
    rec.save()

    with guarded(rec.data.setdefault("figure", {}), "sample grid"):
        from radiogen.sampler.plots import plot_samples_vs_training

        plot_samples_vs_training(samples, training_set, out_dir / "first_samples.png",
                                 n_per_panel=16, seed=seed)
        rec.data["figure"]["path"] = "first_samples.png"
    rec.save()

    if classifier is None:
        raise RuntimeError("no classifier: generated images not scored")
    with guarded(gen, "scoring generated images"):
        import h5py

        from radiogen.classifier import classify

        with h5py.File(samples, "r") as h5:
            images, labels = h5["images"][()], h5["label"][()]
        probabilities, _ = classify(images, model=classifier, batch_size=256, device=device)
        predicted = probabilities.argmax(1)
        p = float((predicted == labels).mean())
        gen.update(accuracy=p, accuracy_err=binomial_error(p, len(labels)), per_class={})
        for k, name in enumerate(CLASS_NAMES):
            mask = labels == k
            pk = float((predicted[mask] == k).mean()) if mask.any() else float("nan")
            gen["per_class"][name] = {"n": int(mask.sum()), "accuracy": pk,
                                      "accuracy_err": binomial_error(pk, int(mask.sum()))}
        gen["predicted_counts"] = np.bincount(predicted, minlength=len(CLASS_NAMES)).tolist()
        log.info("generated (w=%g): classifier accuracy %.3f +- %.3f over %d images", GUIDANCE, p,
                 gen["accuracy_err"], len(labels))
    rec.save()


def _train_classifier(dataset, *, sizes: Sizes, seed: int, work: Path, device, budget: float, entry: dict):
    """ResNet-18 on the archive splits for as many epochs as ``budget`` allows (at least one)."""
    from radiogen.classifier.train import train_classifier

    settings = {
        "learning_rate": 3e-4,  # short run (config.yaml's demo value; paper 1e-4 over 200 epochs)
        "batch_size": 32,
        "eval_batch_size": 256,
        "bn_recalibration_images": 256,
        "max_train_images_per_epoch": sizes.classifier_images_per_epoch,
        # A short run should end at a low learning rate, not where the plateau rule left it.
        "lr_schedule": "cosine",
    }
    t0 = time.perf_counter()
    # One epoch first, to size the run; its checkpoint is for other settings, so the
    # full run starts over in its own folder.
    result = train_classifier(dataset, settings={**settings, "epochs": 1}, seed=seed,
                              checkpoint_dir=work / "classifier_1epoch", device=device)
    first_epoch = time.perf_counter() - t0
    epochs = max(1, min(sizes.classifier_max_epochs, int((budget - first_epoch) / (1.1 * first_epoch))))
    if epochs > 1:
        result = train_classifier(dataset, settings={**settings, "epochs": epochs}, seed=seed,
                                  checkpoint_dir=work / "classifier", device=device)
    test = result["metrics"]["test"]
    p, n = float(test["accuracy"]), int(test["n_images"])
    entry.update(
        epochs=len(result["history"]), best_epoch=result["best_epoch"], settings=settings,
        first_epoch_s=first_epoch, seconds=time.perf_counter() - t0, device=result["device"],
        valid_accuracy=result["metrics"]["valid"]["accuracy"],
        test_accuracy=p, test_accuracy_err=binomial_error(p, n), n_test=n,
        test_per_class={name: {"n": c["support"], "accuracy": c["recall"],
                               "accuracy_err": binomial_error(c["recall"], c["support"]) if c["recall"] is not None
                               else None}
                        for name, c in test["per_class"].items()},
    )
    log.info("classifier: %d epochs, real test accuracy %.3f +- %.3f (n=%d)", entry["epochs"], p,
             entry["test_accuracy_err"], n)
    return result["model"]


def _train_first_diffusion(ctx: dict, *, sizes: Sizes, data: Path, out: Path, work: Path,
                           budget: float) -> dict:
    """Train for ``budget`` seconds (deadline stop), then let train() write the model file.

    The second call resumes from the stop checkpoint with ``steps`` set to the
    step reached, so it trains nothing and only runs the final validation and
    writes ``model.pt`` (train()'s own resume path; the learning rate is
    constant, so ``steps`` does not change the trajectory).
    """
    from radiogen.model.train import launch

    big = 10**7
    settings = {
        "lr": 2e-4,  # config.yaml's short-run value (paper 2e-5 over 40k steps)
        # The paper's fixed 0.9999 would still be mostly the untrained network after minutes.
        "ema_decay": 0.999,
        "ema_rampup_ratio": 0.05,
        "precision": "auto",
        "channels_last": ctx["device"].startswith("cuda"),
        "log_every": sizes.first_log_every,
        "val_sigmas": [0.01, 0.05, 0.2, 1.0, 5.0],
        "val_max_images": 256,
        "keep_checkpoints": 1,
        "first": {"batch_size": sizes.first_batch, "steps": big, "val_every": big, "checkpoint_every": big},
    }
    common = dict(data_path=str(data), out_path=str(out), model_settings=dict(sizes.first_model),
                  seed=int(ctx["seed"]), checkpoint_dir=str(work / "checkpoints"), device=ctx["device"])
    probe = StepProbe(deadline=time.time() + budget, report_dir=str(work), every=sizes.first_log_every)
    t0 = time.perf_counter()
    first = launch(nproc=ctx["nproc"], train_settings=settings, on_step=probe, **common)
    train_s = time.perf_counter() - t0
    step = int(first["step"])
    if first["status"] != "done":
        final = {**settings, "first": {**settings["first"], "steps": step}}
        launch(nproc=ctx["nproc"], train_settings=final, **common)
    history, step, _ = run_history(out, work / "checkpoints")
    rates = history.get("train_images_per_s", [])
    val = history.get("val_ema") or []
    return {
        "model_settings": dict(sizes.first_model), "batch": sizes.first_batch, "steps": step,
        "train_settings": {k: v for k, v in settings.items() if k != "first"},
        "train_seconds": train_s, "seconds": time.perf_counter() - t0,
        "images_per_s": steady_rate(rates) or (rates[0] if rates else None),
        "val_ema_mean_first": float(sum(val[0]) / len(val[0])) if val else None,
        "val_ema_mean_last": float(sum(val[-1]) / len(val[-1])) if val else None,
        "peak_memory_gib": max((p["peak_cuda_gib"] for p in read_probes(work) if p.get("peak_cuda_gib")),
                               default=None),
    }


# --------------------------------------------------------------------------- part process


PART_FUNCS = {"ceilings": part_ceilings, "train": part_train, "sample": part_sample, "first": part_first}


def _sizes(ctx: dict) -> Sizes:
    return SMOKE_SIZES if ctx["smoke"] else GPU_SIZES


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def part_main(name: str, context_path: str) -> int:
    """Body of one part process (``--part NAME --context JSON``)."""
    ctx = read_json(context_path)
    rec = Record(ctx["part_json"])
    rec.data.update(part=name, status="running", started=time.time())
    rec.save()
    t0 = time.perf_counter()
    try:
        if ctx.get("threads"):
            import torch

            torch.set_num_threads(int(ctx["threads"]))
        PART_FUNCS[name](ctx, rec)
        # A failed measurement inside the part leaves the rest standing: "partial".
        rec.data["status"] = "partial" if _has_errors(rec.data) else "ok"
    except Exception as err:  # the orchestrator goes on with the next part
        log.exception("part %s failed", name)
        rec.data.update(_error_entry(err))
    finally:
        rec.data["elapsed_s"] = time.perf_counter() - t0
        rec.save()
    return 0 if rec.data["status"] == "ok" else 1


def _has_errors(value) -> bool:
    """Whether any nested entry has status "error"."""
    if isinstance(value, dict):
        return value.get("status") == "error" or any(_has_errors(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_errors(v) for v in value)
    return False


# --------------------------------------------------------------------------- orchestrator


class Console:
    """Timestamped progress lines to stdout and the log file in OUT_DIR."""

    def __init__(self, path: Path, start: float) -> None:
        self.start = start
        self.fh = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def line(self, text: str, *, prefix: str = "gpu_check") -> None:
        stamp = f"{datetime.datetime.now():%H:%M:%S} +{time.time() - self.start:5.0f}s"
        with self.lock:
            for row in text.rstrip("\n").splitlines() or [""]:
                out = f"{stamp} [{prefix}] {row}"
                print(out, flush=True)
                self.fh.write(out + "\n")

    def raw(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)
            self.fh.write(text + "\n")


_CONSOLE: Console | None = None


def run_child(cmd: list[str], *, name: str, hard_deadline: float) -> tuple[int, bool, list[str]]:
    """Run ``cmd`` in its own process group, echoing its output; kill the group at ``hard_deadline``.

    Returns (exit status, whether it was killed, last 30 lines of its output).
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, cwd=REPO, bufsize=1)
    tail: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            del tail[:-30]
            if _CONSOLE is not None:
                _CONSOLE.line(line, prefix=name)
            else:
                print(f"[{name}] {line}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    while proc.poll() is None:
        if time.time() > hard_deadline:
            timed_out = True
            # SIGTERM first: a training run checkpoints and stops on it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            break
        time.sleep(0.2)
    reader.join(timeout=5)
    return proc.returncode, timed_out, list(tail)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/gpu_check", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Targets on one H100-class GPU: training >= 1,500 images/s, sampling >= 40 images/s "
               "(paper, A100: ~375 and 5.1).")
    p.add_argument("out_dir", nargs="?", help="folder for results.json, the log and the figures")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help=f"total seconds for all parts (default {DEFAULT_BUDGET_S:.0f}; the command ends within "
                        f"budget + {OVERRUN_S:.0f} s)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds per part (CPU tests)")
    p.add_argument("--first-zip", default=str(DEFAULT_FIRST_ZIP),
                   help=f"FIRST galaxy_data.zip (default {DEFAULT_FIRST_ZIP})")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--nproc", default="auto", help="training processes (auto: one per GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile training cases")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per part (0: torch default)")
    p.add_argument("--work-dir", default="", help="work files (default: a temporary folder, removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--context", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (args.part or args.variant) and not args.out_dir:
        p.error("OUT_DIR is required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts within the budget; write results.json; print the table."""
    global _CONSOLE
    args = parse_args(argv)
    if args.variant:
        _setup_logging()
        return variant_main(args.variant)
    if args.part:
        _setup_logging()
        return part_main(args.part, args.context)

    start = time.time()
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    console = _CONSOLE = Console(out_dir / "gpu_check.log", start)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        console.line(f"unknown part(s) {unknown}; known: {list(PARTS)}")
        return 2
    temporary = not args.work_dir
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="radiogen-gpu-check-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        import torch
    except ImportError as err:
        console.line(f"cannot import torch with {sys.executable}: {err}")
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        console.line(f"--device {args.device}: no CUDA device visible to torch {torch.__version__}; "
                     "use --device cpu --smoke for the CPU check")
        return 2
    first_zip = Path(args.first_zip).expanduser().resolve()
    if "first" in parts and not first_zip.is_file():
        console.line(f"ERROR: FIRST zip missing: {first_zip} (pass --first-zip PATH); the first part will fail")

    results: dict[str, Any] = {
        "meta": {
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "budget_s": args.budget_s, "device": args.device, "smoke": args.smoke, "parts": parts,
            "python": sys.executable, "torch": torch.__version__, "host": platform.node(),
            "git_commit": _git_commit(), "first_zip": str(first_zip), "work_dir": str(work),
            "targets": TARGETS, "paper_a100": PAPER_A100,
        }
    }
    write_json(results, out_dir / "results.json")
    console.line(f"budget {args.budget_s:.0f} s, device {args.device}{' (smoke)' if args.smoke else ''}, "
                 f"parts {','.join(parts)}, torch {torch.__version__} from {sys.executable}, work {work}")
    end = start + args.budget_s
    for i, name in enumerate(parts):
        now = time.time()
        shares = [PART_BUDGET_S[p] for p in parts[i:]]
        budget = max(0.0, (end - now) * PART_BUDGET_S[name] / sum(shares))
        if budget < 3.0:
            results[name] = {"status": "skipped", "reason": f"out of budget ({end - now:.0f} s left)"}
            console.line(f"part {name}: skipped, out of budget")
            write_json(results, out_dir / "results.json")
            continue
        deadline = now + budget
        ctx = {
            "part_json": str(work / f"part-{name}.json"), "deadline": deadline, "device": args.device,
            "smoke": args.smoke, "first_zip": str(first_zip), "nproc": args.nproc, "seed": args.seed,
            "skip_compile": args.skip_compile, "threads": args.threads, "work": str(work), "out": str(out_dir),
        }
        write_json(ctx, work / f"context-{name}.json")
        console.line(f"part {name}: up to {budget:.0f} s")
        hard = min(deadline, end) + PART_GRACE_S
        rc, timed_out, tail = run_child(
            [sys.executable, __file__, "--part", name, "--context", str(work / f"context-{name}.json")],
            name=name, hard_deadline=hard)
        part = read_json(ctx["part_json"])
        if timed_out:
            part["status"] = "timeout" if part.get("status") in (None, "running", "ok") else part["status"]
            part["error"] = part.get("error") or f"killed {PART_GRACE_S:.0f} s after its deadline"
        elif rc != 0 and part.get("status") in (None, "running", "ok"):
            part["status"] = "error"
            part["error"] = part.get("error") or f"part process exited with status {rc}"
        if part.get("status") != "ok":
            part["log_tail"] = tail
        part["wall_s"] = time.time() - now
        part["budget_s"] = budget
        results[name] = part
        write_json(results, out_dir / "results.json")
        console.line(f"part {name}: {part.get('status')} in {part['wall_s']:.0f} s"
                     + (f" ({part.get('error')})" if part.get("error") else ""))
    results["summary"] = summarise(results)
    results["meta"]["elapsed_s"] = time.time() - start
    write_json(results, out_dir / "results.json")
    console.raw("")
    console.raw(format_table(results))
    if temporary and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    failed = [p for p in parts if results.get(p, {}).get("status") != "ok"]
    return 1 if failed else 0


def _git_commit() -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    return None


# --------------------------------------------------------------------------- summary and table


def summarise(results: dict) -> dict:
    """Headline figures, utilisation against the measured ceilings, and the targets."""
    ceilings = results.get("ceilings", {})
    peak = (ceilings.get("matmul_bf16") or {}).get("tflops")
    gflop = (ceilings.get("paper_forward") or {}).get("gflop_per_image")
    train = results.get("train", {})
    sample = results.get("sample", {})
    first = results.get("first", {})
    out: dict[str, Any] = {
        "matmul_bf16_tflops": peak,
        "copy_gbps": (ceilings.get("copy") or {}).get("gbps"),
        "paper_forward_gflop_per_image": gflop,
        "train_best": train.get("best"),
        "sample_best": sample.get("best"),
    }
    # Training ~ 3 forward-equivalents per image (forward + backward); sampling
    # 2 (2N - 1) forwards per image with batched guidance.  Only on GPUs: the
    # ceiling is the bf16 matrix rate, which a CPU run (fp32) does not use.
    on_gpu = str((ceilings.get("device") or {}).get("device", "")).startswith("cuda")
    if peak and gflop and on_gpu:
        for v in train.get("variants", []):
            if v.get("images_per_s"):
                v["utilisation"] = v["images_per_s"] * 3 * gflop / 1e3 / peak
        for b in sample.get("batches", []) + sample.get("extras", []):
            if b.get("images_per_s"):
                b["utilisation"] = b["images_per_s"] * sample.get("image_forwards_per_image", 0) * gflop / 1e3 / peak
        if sample.get("image_forwards_per_image"):
            out["sample_compute_limit_images_per_s"] = peak * 1e3 / (sample["image_forwards_per_image"] * gflop)
        out["train_compute_limit_images_per_s"] = peak * 1e3 / (3 * gflop)
    tb = (train.get("best") or {}).get("images_per_s")
    sb = (sample.get("best") or {}).get("images_per_s")
    world = train.get("world_size") or 1
    out["targets"] = {
        "train_images_per_s_per_gpu": {"target": TARGETS["train_images_per_s"],
                                       "measured": tb / world if tb else None,
                                       "met": bool(tb and tb / world >= TARGETS["train_images_per_s"])},
        "sample_images_per_s": {"target": TARGETS["sample_images_per_s"], "measured": sb,
                                "met": bool(sb and sb >= TARGETS["sample_images_per_s"])},
    }
    gen, clf = first.get("generated", {}), first.get("classifier", {})
    out["first"] = {
        "real_test_accuracy": clf.get("test_accuracy"), "real_test_accuracy_err": clf.get("test_accuracy_err"),
        "generated_accuracy": gen.get("accuracy"), "generated_accuracy_err": gen.get("accuracy_err"),
        "diffusion_steps": (first.get("diffusion") or {}).get("steps"),
    }
    out["parts"] = {p: results.get(p, {}).get("status") for p in PARTS if p in results}
    out["settings_to_record"] = recommended_settings(results)
    return out


def recommended_settings(results: dict) -> dict:
    """Config values the measurements choose (only on a GPU, only from successful rows).

    ``train.channels_last``: NHWC or NCHW, whichever eager variant trained
    faster; ``train.compile``: whether the compiled variant's steady-state rate
    beat the best eager one; ``sample.cuda_batch_size``: the fastest batch of
    the sampling sweep.
    """
    if not str((results.get("meta") or {}).get("device", "")).startswith("cuda"):
        return {}
    out: dict[str, Any] = {}
    rate = {v["name"]: v.get("images_per_s") for v in (results.get("train") or {}).get("variants", [])
            if v.get("status") == "ok" and v.get("images_per_s")}
    if "NHWC eager" in rate and "NCHW eager" in rate:
        out["train.channels_last"] = rate["NHWC eager"] >= rate["NCHW eager"]
    eager = max((r for n, r in rate.items() if "eager" in n), default=None)
    if "NHWC compile" in rate and eager:
        out["train.compile"] = rate["NHWC compile"] > eager
    best = (results.get("sample") or {}).get("best") or {}
    if best.get("batch"):
        out["sample.cuda_batch_size"] = int(best["batch"])
    return out


def _f(value, fmt: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def _g(value) -> str:
    """One decimal for large values, three significant digits for small ones (CPU smoke runs)."""
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _pm(p, err) -> str:
    return "-" if p is None else f"{p:.3f} ± {_f(err, '.3f')}"


def format_table(results: dict) -> str:
    """The short plain-text table printed last."""
    meta, s = results.get("meta", {}), results.get("summary", {})
    dev = (results.get("ceilings", {}).get("device") or {})
    net = "tiny smoke net" if meta.get("smoke") else "paper net"
    rows = [
        f"gpu_check summary: {dev.get('name', meta.get('device'))}"
        f"{' (smoke)' if meta.get('smoke') else ''}, torch {meta.get('torch')}, "
        f"{_f(meta.get('elapsed_s'), '.0f')} s of budget {_f(meta.get('budget_s'), '.0f')} s",
        "parts: " + ", ".join(f"{k} {v}" for k, v in (s.get("parts") or {}).items()),
        f"ceilings: bf16 matmul {_g(s.get('matmul_bf16_tflops'))} TFLOP/s | copy {_g(s.get('copy_gbps'))} GB/s "
        f"(read+write) | paper forward {_g(s.get('paper_forward_gflop_per_image'))} GFLOP/image",
    ]
    train = results.get("train", {})
    if train:
        used = sorted({v["precision_used"] for v in train.get("variants", []) if v.get("precision_used")})
        rows.append(f"training: {net}, batch {train.get('batch')}, precision {train.get('precision')}"
                    f"{' -> ' + '/'.join(used) if used else ''}, "
                    f"{train.get('world_size')} process(es) [{train.get('backend')}]  "
                    f"(compute limit {_f(s.get('train_compute_limit_images_per_s'), '.0f')} images/s)")
        rows.append(f"  {'variant':28} {'status':8} {'images/s':>9} {'s/step':>7} {'peak GiB':>8} "
                    f"{'1st step s':>10} {'compile s':>9} {'util':>5}")
        for v in train.get("variants", []):
            rows.append(f"  {v.get('name', '?'):28} {v.get('status', '?'):8} {_f(v.get('images_per_s')):>9} "
                        f"{_f(v.get('s_per_step'), '.3f'):>7} {_f(v.get('peak_memory_gib'), '.2f'):>8} "
                        f"{_f(v.get('time_to_first_step_s')):>10} {_f(v.get('compile_s')):>9} "
                        f"{_pct(v.get('utilisation')):>5}"
                        + (f"  {v.get('reason') or v.get('error') or ''}"[:90] if v.get("status") != "ok" else ""))
    sample = results.get("sample", {})
    if sample:
        rows.append(f"sampling: {net}, {sample.get('num_steps')} Heun steps, w={sample.get('guidance')} batched, "
                    f"{sample.get('precision')}  (compute limit "
                    f"{_f(s.get('sample_compute_limit_images_per_s'), '.0f')} images/s)")
        rows.append(f"  {'batch':>28} {'status':8} {'images/s':>9} {'s/batch':>7} {'peak GiB':>8} {'':>10} {'util':>5}")
        for b in sample.get("batches", []) + sample.get("extras", []):
            label = f"{b.get('name', sample.get('precision'))} {b.get('batch')}"
            rows.append(f"  {label:>28} {b.get('status', '?'):8} {_f(b.get('images_per_s'), '.2f'):>9} "
                        f"{_f(b.get('seconds'), '.1f'):>7} {_f(b.get('peak_memory_gib'), '.2f'):>8} {'':>10} "
                        f"{_pct(b.get('utilisation')):>5}")
    first = results.get("first", {})
    if first:
        d, c, g = first.get("diffusion", {}), first.get("classifier", {}), first.get("generated", {})
        base = (d.get("model_settings") or {}).get("base_channels")
        rows.append(f"FIRST ({first.get('status')}): diffusion base {base}, batch {d.get('batch')}, "
                    f"{d.get('steps')} steps in {_f(d.get('train_seconds'), '.0f')} s at "
                    f"{_f(d.get('images_per_s'), '.0f')} images/s; EMA val loss "
                    f"{_f(d.get('val_ema_mean_first'), '.3f')} -> {_f(d.get('val_ema_mean_last'), '.3f')}")
        rows.append(f"  classifier: {c.get('epochs')} epochs; real test accuracy "
                    f"{_pm(c.get('test_accuracy'), c.get('test_accuracy_err'))} (n={c.get('n_test')})")
        classes = g.get("per_class") or {}
        order = [c for c in FIRST_CLASSES if c in classes] + sorted(set(classes) - set(FIRST_CLASSES))
        per = " ".join(f"{k} {_f(classes[k].get('accuracy'), '.2f')}" for k in order)
        rows.append(f"  generated ({g.get('n_per_class')}/class, w={g.get('guidance')}): accuracy "
                    f"{_pm(g.get('accuracy'), g.get('accuracy_err'))} [{per}]; "
                    f"{_f(g.get('images_per_s'), '.1f')} images/s sampling")
        if first.get("error"):
            rows.append(f"  error: {first['error']}"[:160])
    chosen = s.get("settings_to_record") or {}
    if chosen:
        rows.append("settings the measurements choose: "
                    + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in chosen.items()))
    t = s.get("targets") or {}
    if t:
        tr, sa = t.get("train_images_per_s_per_gpu", {}), t.get("sample_images_per_s", {})
        rows.append(f"targets (one H100-class GPU): training >= {tr.get('target'):.0f} images/s: "
                    f"{_f(tr.get('measured'), '.0f')} {'MET' if tr.get('met') else 'not met'} | sampling >= "
                    f"{sa.get('target'):.0f} images/s: {_f(sa.get('measured'), '.1f')} "
                    f"{'MET' if sa.get('met') else 'not met'}  (paper A100: {PAPER_A100['train_images_per_s']:.0f}, "
                    f"{PAPER_A100['sample_images_per_s']})")
    return "\n".join(rows)


def _pct(value) -> str:
    return "-" if value is None else f"{100.0 * value:.0f}%"


if __name__ == "__main__":
    sys.exit(main())
