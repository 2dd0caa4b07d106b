"""Obtain ``galaxy_data.zip``: copy a local file when present, else download it.

Order: ``local_path`` when that file exists (dev and CI machines keep the
archive in ``../shared/data/first``); otherwise ``source``, which may be a
local path or an http(s) URL (default: the Zenodo record 7689127).  Downloads
go to ``<output>.part`` and resume from its size with an HTTP Range request
after an interruption; the result must match the server's Content-Length and
be a readable zip before it is renamed onto ``output``.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from radiogen.errors import InputFileError
from radiogen.io import atomic_path

__all__ = ["ZENODO_URL", "fetch_first_zip", "download"]

log = logging.getLogger(__name__)

#: Public home of the Griese et al. (2023) dataset.
ZENODO_URL = "https://zenodo.org/records/7689127/files/galaxy_data.zip"

_CHUNK = 1 << 20


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "ftp://"))


def _check_zip(path: Path, origin: str) -> None:
    if not zipfile.is_zipfile(path):
        raise InputFileError(f"{origin}: not a zip archive (got {path.stat().st_size} bytes)")


def fetch_first_zip(
    output: str | Path,
    *,
    source: str = ZENODO_URL,
    local_path: str | Path | None = None,
    timeout_s: float = 60.0,
    retries: int = 3,
) -> str:
    """Place the FIRST archive at ``output``; return where it came from.

    Parameters
    ----------
    output : str or Path
        Destination zip (written atomically).
    source : str
        URL or local path used when ``local_path`` does not exist.
    local_path : str or Path or None
        Preferred local copy; relative paths are relative to the working directory.
    timeout_s : float
        Socket timeout of each HTTP request (s).
    retries : int
        Download attempts; each resumes the partial file.

    Raises
    ------
    InputFileError
        Neither a local copy nor a reachable URL; a truncated download; not a zip.
    """
    output = Path(output)
    if local_path and Path(local_path).is_file():
        origin = str(local_path)
        _check_zip(Path(local_path), origin)
        with atomic_path(output) as tmp:
            shutil.copyfile(local_path, tmp)
        log.info("copied %s -> %s", origin, output)
        return origin
    if not _is_url(source):
        path = Path(source)
        if not path.is_file():
            hint = f" and first.local_path {local_path!s} does not exist" if local_path else ""
            raise InputFileError(
                f"{source}: FIRST zip not found{hint}; set first.source to the Zenodo URL "
                f"({ZENODO_URL}) or to a local copy of galaxy_data.zip"
            )
        _check_zip(path, source)
        with atomic_path(output) as tmp:
            shutil.copyfile(path, tmp)
        log.info("copied %s -> %s", source, output)
        return source
    download(source, output, timeout_s=timeout_s, retries=retries, local_hint=local_path)
    return source


def download(
    url: str,
    output: str | Path,
    *,
    timeout_s: float = 60.0,
    retries: int = 3,
    local_hint: str | Path | None = None,
) -> None:
    """Download ``url`` to ``output`` with resume and size check (see module docstring)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    part = output.with_name(output.name + ".part")
    last_error: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            _download_once(url, part, timeout_s=timeout_s)
            _check_zip(part, url)
            os.replace(part, output)
            log.info("downloaded %s -> %s (%d bytes)", url, output, output.stat().st_size)
            return
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
            last_error = err
            log.warning("download attempt %d/%d of %s failed: %s", attempt, retries, url, err)
            if attempt < retries:
                time.sleep(min(30.0, 2.0**attempt))
    hint = f", or place the archive at first.local_path ({local_hint})" if local_hint else ""
    raise InputFileError(
        f"{url}: download failed after {retries} attempt(s) ({last_error}); without internet "
        f"access set first.source to a local copy of galaxy_data.zip{hint}"
    )


def _download_once(url: str, part: Path, *, timeout_s: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "radiogen"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        status = getattr(response, "status", 200)
        if have and status != 206:
            have = 0  # the server ignored the Range request: start over
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        done, started = have, time.monotonic()
        with open(part, mode) as handle:
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                done += len(chunk)
                if done // (50 * _CHUNK) != (done - len(chunk)) // (50 * _CHUNK):
                    rate = (done - have) / max(time.monotonic() - started, 1e-6) / 1e6
                    log.info("%s: %.0f MB (%.1f MB/s)", url, done / 1e6, rate)
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise OSError(f"incomplete download: {size} of {expected} bytes")
