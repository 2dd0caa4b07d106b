"""PyBDSF's run-time behaviour, tamed for many small images in one process.

Three measured pitfalls of PyBDSF 1.14, handled here:

* ``import bdsf`` sets numpy's *global* error state to ``divide='raise'``;
  :func:`import_bdsf` restores the caller's state, and :func:`bdsf_errstate`
  gives PyBDSF the state it expects while it runs;
* PyBDSF calls ``gc.collect()`` after every step; in a long-lived process that
  walks every live object and dominates the run time (~1.1 s of ~1.2 s per
  80x80 image).  :func:`gc_frozen` calls ``gc.freeze()`` once before a loop;
* PyBDSF replaces its log handlers on every call without closing the log file
  (:func:`close_bdsf_log`), and a fit can hang (:func:`time_limit`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from radiogen.errors import ConfigError

__all__ = ["import_bdsf", "bdsf_errstate", "gc_frozen", "Timeout", "time_limit", "close_bdsf_log", "fit_workdir"]

_BDSF = None
_BDSF_ERRSTATE: dict | None = None
_FREEZE_DEPTH = 0


def import_bdsf():
    """Import PyBDSF once without changing numpy's global error state.

    Returns
    -------
    module
        The ``bdsf`` module.

    Raises
    ------
    ConfigError
        If PyBDSF is not installed.
    """
    global _BDSF, _BDSF_ERRSTATE
    if _BDSF is None:
        before = np.geterr()
        try:
            import bdsf
        except ImportError as err:  # pragma: no cover - environment problem
            raise ConfigError(
                "PyBDSF (package 'bdsf') is not installed; use the pybdsf environment"
            ) from err
        finally:
            _BDSF_ERRSTATE = np.geterr()
            np.seterr(**before)
        # PyBDSF logs every step at INFO to its own file and console handlers; passing
        # them on to the root logger as well would flood job logs (and cost time).
        logging.getLogger("PyBDSF").propagate = False
        _BDSF = bdsf
    return _BDSF


def bdsf_errstate():
    """``numpy.errstate`` as PyBDSF set it at import (it relies on ignored warnings)."""
    import_bdsf()
    return np.errstate(**_BDSF_ERRSTATE)


@contextlib.contextmanager
def gc_frozen(enabled: bool = True):
    """Keep the objects alive now out of the cyclic garbage collector's reach.

    PyBDSF calls ``gc.collect()`` after each of its ~16 steps; each call walks
    every tracked object of the process, which in a long-lived process costs
    about a second per image.  ``gc.freeze()`` moves the current objects to a
    permanent generation that collections skip; objects created later (one
    image's PyBDSF state) are still collected.  Reverted on exit.
    """
    global _FREEZE_DEPTH
    if not enabled:
        yield
        return
    gc.collect()
    gc.freeze()
    _FREEZE_DEPTH += 1
    try:
        yield
    finally:
        _FREEZE_DEPTH -= 1
        # only the outermost exit unfreezes: nested use must not thaw the caller's objects
        if _FREEZE_DEPTH == 0:
            gc.unfreeze()


class Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float | None):
    # SIGALRM only works in the main thread; elsewhere the limit is not enforced.
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    message = f"PyBDSF exceeded the time limit of {seconds:g} s"
    fired = False

    def _raise(signum, frame):
        nonlocal fired
        fired = True
        raise Timeout(message)

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
        # PyBDSF catches broad exceptions in places; a Timeout raised there is
        # swallowed and the fit runs on, so an expired limit fails on exit too.
        if fired:
            raise Timeout(message)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def close_bdsf_log() -> None:
    # PyBDSF replaces its handlers on every call without closing the log file.
    logger = logging.getLogger("PyBDSF")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def fit_workdir(workdir: str | os.PathLike | None, *, prefix: str) -> Iterator[Path]:
    """Folder for one PyBDSF fit's FITS file and PyBDSF's own outputs, left clean on exit.

    ``None`` makes a private temporary folder (removed afterwards); a given
    folder (reused across the fits of a loop) is emptied of what the fit left.
    """
    own_dir = workdir is None
    path = Path(tempfile.mkdtemp(prefix=prefix) if own_dir else workdir)
    try:
        yield path
    finally:
        if own_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for leftover in path.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
                else:
                    shutil.rmtree(leftover, ignore_errors=True)
