"""Checkpoints of a training run: where they live, what run they belong to, resuming.

A checkpoint holds the weights, EMA, optimiser, step, loss history and every
RNG state; :func:`run_identity` records what the weights depend on, so a job
resumes only from checkpoints of its own run (others are set aside or refused,
``train.stale_checkpoints``).  SIGURG (the SLURM profile's early signal,
``sbatch --signal=URG@<s>``), SIGUSR1 and SIGTERM ask the training loop to
checkpoint after the current step.  SIGURG because its default action is to
be ignored: under the Snakemake SLURM executor SLURM signals every process of
the job step, and Snakemake's job-step process and the shell running the rule
must outlive the training's checkpoint (SIGUSR1 would end both at once, and
with them the job step).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
from pathlib import Path

import numpy as np
import torch

from radiogen.errors import ConfigError
from radiogen.io import atomic_path
from radiogen.model.data import TrainingData
from radiogen.model.train_settings import RESUMABLE_KEYS

__all__ = [
    "StopRequest",
    "signal_handlers",
    "checkpoint_dir_of",
    "checkpoint_files",
    "latest_checkpoint",
    "run_identity",
    "load_resumable",
    "rng_state",
    "set_rng_state",
    "save_checkpoint",
    "state_fingerprint",
]

log = logging.getLogger("radiogen.train")


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, _frame) -> None:
        self.signum = signum
        log.warning("received signal %d: checkpointing after the current step", signum)


#: Signals that stop training with a checkpoint (by name: some platforms lack some).
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGURG")


def stop_signals() -> list[int]:
    return [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]


@contextlib.contextmanager
def signal_handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in stop_signals()}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def checkpoint_dir_of(out_path: Path, checkpoint_dir) -> Path:
    return Path(checkpoint_dir) if checkpoint_dir else Path(out_path).parent / "checkpoints"


def checkpoint_files(directory: str | os.PathLike) -> list[Path]:
    """``ckpt-<step>.pt`` files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob("ckpt-*.pt") if p.stem.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.stem.split("-")[-1]))


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """Newest ``ckpt-<step>.pt`` in ``directory`` (None when there is none)."""
    found = checkpoint_files(directory)
    return found[-1] if found else None


def run_identity(data: TrainingData, model_config: dict, settings: dict, seed: int,
                 init_sha256: str | None = None) -> dict:
    """What a training run's weights depend on: data digest, network, seed, settings, starting model.

    Two runs with equal identities produce the same weights at every step, so a
    checkpoint may be resumed exactly when its stored identity equals this one.
    ``init_sha256`` is the digest of the model a fine-tuning run starts from
    (``train.{dataset}.init_from``; :mod:`~radiogen.model.init_from`): its
    contents count, not its path.  Runs from random weights leave it None, as
    checkpoints from before fine-tuning do.
    """
    identity = {
        "data_sha256": data.digest(),
        "dataset": data.dataset,
        "model_config": model_config,
        "seed": int(seed),
        "settings": {k: v for k, v in sorted(settings.items()) if k not in RESUMABLE_KEYS and k != "init_from"},
    }
    if init_sha256 is not None:
        identity["init_sha256"] = str(init_sha256)
    return identity


def identity_differences(stored: dict | None, current: dict) -> list[str]:
    if not stored:
        return ["the checkpoint records no run identity (made by an older radiogen)"]
    diffs = []
    if stored.get("data_sha256") != current["data_sha256"]:
        diffs.append("the training set's contents changed")
    if stored.get("init_sha256") != current.get("init_sha256"):
        before, after = stored.get("init_sha256"), current.get("init_sha256")
        if before is None:
            diffs.append(f"the run now starts from train.init_from (weights {after[:12]}) instead of random weights")
        elif after is None:
            diffs.append(f"the run now starts from random weights instead of train.init_from (weights {before[:12]})")
        else:
            diffs.append(f"the starting model (train.init_from) changed: weights {before[:12]} -> {after[:12]}")
    for key in ("dataset", "model_config", "seed"):
        if stored.get(key) != current[key]:
            diffs.append(f"{key} changed from {stored.get(key)!r} to {current[key]!r}")
    old, new = stored.get("settings", {}), current["settings"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            diffs.append(f"train.{key} changed from {old.get(key)!r} to {new.get(key)!r}")
    return diffs


def set_aside(paths: list[Path], folder: Path) -> None:
    """Move checkpoints out of the resume path (kept, not deleted: nothing computed is lost)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        os.replace(path, folder / path.name)


def load_resumable(ckpt_dir: Path, identity: dict, on_stale: str) -> tuple[dict | None, Path | None]:
    """Newest readable checkpoint of this run and its path, or (None, None) to start from step 0.

    An unreadable newest file (torn write on a full disk, truncated copy) is
    moved to ``corrupt/`` and the previous one is tried.  Checkpoints of
    another run (other data, network, seed or settings) are moved to
    ``stale/`` with a log line saying why, or, with ``on_stale="error"``,
    stop the job with a :class:`ConfigError`.
    """
    for path in reversed(checkpoint_files(ckpt_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            step = int(state["step"])
        except Exception as err:
            log.warning("%s: unreadable checkpoint (%s); moved to %s, trying the previous one",
                        path, err, ckpt_dir / "corrupt")
            set_aside([path], ckpt_dir / "corrupt")
            continue
        diffs = identity_differences(state.get("identity"), identity)
        if not diffs:
            return state, path
        reason = "; ".join(diffs)
        if on_stale == "error":
            raise ConfigError(
                f"{path}: checkpoint (step {step}) belongs to another run: {reason}. "
                f"Delete {ckpt_dir} or set train.stale_checkpoints: discard"
            )
        stale = checkpoint_files(ckpt_dir)
        set_aside(stale, ckpt_dir / "stale")
        log.warning("%s: checkpoint belongs to another run (%s); moved %d checkpoint(s) to %s "
                    "and starting from step 0", path, reason, len(stale), ckpt_dir / "stale")
        return None, None
    return None, None


def state_fingerprint(state: dict | None) -> list[float]:
    """Step and float64 sums of the weights, EMA and optimiser moments of a checkpoint.

    Equal on every rank exactly when all loaded the same checkpoint (the sums of
    identical tensors are identical); compared across ranks after a resume.
    """
    if state is None:
        return [0.0, 0.0, 0.0, 0.0]

    def total(tensors) -> float:
        return float(sum(t.double().sum() for t in tensors if torch.is_tensor(t) and t.is_floating_point()))

    moments = [v for group in state["optimizer"]["state"].values() for v in group.values()]
    return [float(state["step"]), total(state["model"].values()), total(state["ema"].values()), total(moments)]


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # a checkpoint from a node with more GPUs (e.g. 2-GPU run resumed on 1); every
        # step reseeds anyway, so restoring the visible devices' states is enough
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def save_checkpoint(directory: Path, step: int, payload: dict, keep: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt-{step:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    for stale in checkpoint_files(directory)[:-keep]:
        stale.unlink(missing_ok=True)
    return path
