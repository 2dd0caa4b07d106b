"""Progress of long loops: a tqdm bar at a terminal, log lines with rates in batch jobs.

SLURM logs are files, where a redrawn bar becomes thousands of lines; there a
:class:`Progress` writes one log line every ``every_s`` seconds (and at the
end) with the count, the rate and the time left.  At an interactive terminal
it shows a tqdm bar instead.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["Progress"]


class Progress:
    """Count finished items of a loop of known length.

    Parameters
    ----------
    total : int
        Items in the loop.
    desc : str
        What is counted, e.g. ``"P205+55 cutouts"`` or ``"shard 3 images"``.
    logger : logging.Logger
        Where the log lines go when stderr is not a terminal.
    every_s : float
        Seconds between log lines.
    interactive : bool, optional
        Force the bar (True) or the log lines (False); default: whether stderr
        is a terminal.
    """

    def __init__(self, total: int, desc: str, *, logger: logging.Logger, every_s: float = 30.0,
                 interactive: bool | None = None) -> None:
        self.total = int(total)
        self.desc = desc
        self.logger = logger
        self.every_s = float(every_s)
        self.done = 0
        self._start = self._last = time.monotonic()
        if interactive is None:
            interactive = sys.stderr.isatty()
        self._bar = None
        if interactive:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit="it", dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        """Add ``n`` finished items."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.logger.info("%s: %d/%d (%.3g/s, %.0f s elapsed, %.0f s left)", self.desc, self.done,
                         self.total, rate, elapsed, left)

    def close(self) -> None:
        """Final line (or close the bar)."""
        if self._bar is not None:
            self._bar.close()
        else:
            self._log(time.monotonic())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
