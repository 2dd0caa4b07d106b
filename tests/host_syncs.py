"""Counting, per training step, the operations that make the host wait or the ranks meet.

An ``on_step`` hook for :func:`radiogen.model.train.train` that is picklable (so
:func:`~radiogen.model.train.launch` can hand it to spawned workers).  From its
first call on it watches every operation torch dispatches in the training
thread, after autocast and autograd, and counts

* ``_local_scalar_dense``: a tensor read back to the host (``.item()``,
  ``float(t)``, ``bool(t)``), which waits for the device;
* ``allreduce_`` (and other c10d collectives): a meeting of the ranks, also
  counted as ``allreduce_:<elements>`` by the size of the reduced tensors
  (DistributedDataParallel's gradient buckets are large, control flags small).

Reads inside ``optimizer.step`` (torch.optim's step counters, CPU tensors
even for CUDA weights) are counted apart as ``optimizer_step_counter_read``.

The operations between ``on_step(k)`` and ``on_step(k + 1)`` are what train()
does after step k (log point, stop agreement, checkpoint) and the forward and
backward of step k + 1; they are written, per step k, to a JSON file per rank.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode

WATCHED = ("_local_scalar_dense", "allreduce_", "allgather_", "broadcast_", "barrier", "reduce_")


def _numel(args) -> int:
    """Elements of the tensors a collective works on (its first argument: a tensor or a list of them)."""
    first = args[0] if args else None
    tensors = first if isinstance(first, (list, tuple)) else [first]
    return sum(t.numel() for t in tensors if hasattr(t, "numel"))


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.in_optimizer = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense" and self.in_optimizer:
            # torch.optim's step counters live on the CPU even for CUDA weights:
            # reading them does not wait for the device.
            name = "optimizer_step_counter_read"
        if name in WATCHED or name == "optimizer_step_counter_read":
            self.counts[name] += 1
        if name in ("allreduce_", "broadcast_"):
            self.counts[f"{name}:{_numel(args)}"] += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """``on_step`` hook; writes ``{step: {op: count}}`` to ``folder/syncs-rank<R>.json`` at every step."""

    def __init__(self, folder: str) -> None:
        self.folder = str(folder)
        self.per_step: dict[int, dict] = {}
        self._recorder: _Recorder | None = None
        self._last: int | None = None

    def __getstate__(self):
        return {"folder": self.folder, "per_step": {}, "_recorder": None, "_last": None}

    def __call__(self, step: int) -> None:
        if self._recorder is None:
            recorder = self._recorder = _Recorder()
            recorder.__enter__()  # stays on for the rest of the run in this thread

            def enter(*_args):
                recorder.in_optimizer = True

            def leave(*_args):
                recorder.in_optimizer = False

            register_optimizer_step_pre_hook(enter)
            register_optimizer_step_post_hook(leave)
        else:
            self.per_step[self._last] = dict(self._recorder.counts)
            self._recorder.counts.clear()
        self._last = step
        rank = os.environ.get("RANK", "0")
        Path(self.folder, f"syncs-rank{rank}.json").write_text(json.dumps(self.per_step))


def read_counts(folder) -> dict[int, dict[int, dict]]:
    """{rank: {step: {op: count}}} of every rank's file in ``folder``."""
    out = {}
    for path in sorted(Path(folder).glob("syncs-rank*.json")):
        rank = int(path.stem.removeprefix("syncs-rank"))
        out[rank] = {int(k): v for k, v in json.loads(path.read_text()).items()}
    return out
