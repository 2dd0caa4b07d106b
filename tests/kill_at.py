"""Kill a radiogen command at a known point of its work (``radiogen.testhooks``), whatever the machine's speed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Sequence

from radiogen.testhooks import ENV, blocked_message


def kill_at(command: Sequence[str], point: str, count: int, log: Path, *, timeout_s: float = 240) -> str:
    """Run ``command`` until the test hook blocks it at ``point`` ``count``, then ``kill -9`` it.

    The process sleeps at that point (it has saved exactly that much work) until it is
    killed, so the test does not depend on how fast the machine is.  Fails the test when
    the command ends, or does not get there within ``timeout_s``.  Returns the log text.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", ENV: f"{point}:{count}"}
    message = blocked_message(point, count)
    with open(log, "w") as handle:
        proc = subprocess.Popen(list(command), stdout=handle, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None and message not in log.read_text():
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert message in text, f"{point} {count} not reached (exit {proc.returncode}):\n{text[-2000:]}"
    assert proc.returncode == -9, text[-2000:]
    return text
