"""Test hook: stop a long job at a known point so that a test can kill it there.

Tests of what a killed job leaves behind (``kill -9`` of a training run, of a
sampling or PyBDSF shard) must kill the process after some of its work is
saved and before it is finished.  Waiting a fixed time and then killing
depends on the machine's speed: on a fast machine the job is already done.
So the long loops call :func:`block_point` after each unit of saved work (a
checkpoint, a written batch), and with the environment variable

    RADIOGEN_TEST_BLOCK_AFTER=<point>:<count>

set, the process writes ``radiogen test hook: blocked after <point> <count>``
to stderr once it reaches that point for the ``count``-th time and then
waits for a signal: ``kill -9`` ends it there; a signal the job handles
(SIGTERM or SIGUSR1 to a training run, as SLURM sends before its time limit)
ends the wait, and the job goes on to handle it.  Unset (every normal run),
the hook does nothing.  This is for tests only; the points are listed in
:data:`POINTS`.
"""

from __future__ import annotations

import os
import signal
import sys
import time

__all__ = ["ENV", "POINTS", "block_point", "blocked_message"]

#: The environment variable that arms the hook.
ENV = "RADIOGEN_TEST_BLOCK_AFTER"

#: Points where long jobs call :func:`block_point`, and what ``count`` counts there.
POINTS = {
    "sample.batch": "batches of a sampling shard written to its checkpoint folder",
    "generate.shard": "shard files of a local `radiogen generate` run written to <out>.shards",
    "train.checkpoint": "diffusion training step of a checkpoint just written",
    "classifier.epoch": "classifier epochs finished and checkpointed",
    "pybdsf.chunk": "PyBDSF shard checkpoint chunks written",
}


def blocked_message(point: str, count: int) -> str:
    """The stderr line written when the hook blocks at ``point`` after ``count``."""
    return f"radiogen test hook: blocked after {point} {count}"


def block_point(point: str, count: int) -> None:
    """Wait here for a signal when ``RADIOGEN_TEST_BLOCK_AFTER`` is ``point:count``.

    Parameters
    ----------
    point : str
        One of :data:`POINTS`.
    count : int
        How many units of work at this point are done and saved.
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, wanted = spec.rpartition(":")
    if name != point or not wanted.isdigit() or int(wanted) != int(count):
        return
    sys.stderr.write(blocked_message(point, count) + "\n")
    sys.stderr.flush()
    if hasattr(signal, "pause"):
        signal.pause()  # returns once a handled signal has run its handler
        return
    while True:  # no signal.pause (Windows): until the test kills the process
        time.sleep(3600)
