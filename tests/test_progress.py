"""Progress of long loops: log lines with rates in batch jobs, a bar at a terminal."""

from __future__ import annotations

import io
import logging

from radiogen.progress import Progress


def test_log_lines_with_rate_and_time_left(caplog, monkeypatch):
    clock = iter([0.0, 10.0, 40.0, 41.0, 100.0])
    monkeypatch.setattr("radiogen.progress.time.monotonic", lambda: next(clock))
    logger = logging.getLogger("radiogen.test")
    with caplog.at_level(logging.INFO, logger="radiogen.test"):
        with Progress(4, "shard 0 images", logger=logger, every_s=30, interactive=False) as bar:
            bar.update()   # t = 10: too soon for a line
            bar.update()   # t = 40: a line
            bar.update(2)  # t = 41: done; the final line comes at close
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["shard 0 images: 2/4 (0.05/s, 40 s elapsed, 40 s left)",
                     "shard 0 images: 4/4 (0.04/s, 100 s elapsed, 0 s left)"]


def test_bar_at_a_terminal(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with Progress(3, "images", logger=logging.getLogger("x"), interactive=True) as bar:
        for _ in range(3):
            bar.update()
    assert "images" in stream.getvalue() and "3/3" in stream.getvalue()
