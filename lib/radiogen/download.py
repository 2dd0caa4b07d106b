"""Resumable, verified, atomic downloads (LoTSS-DR2 mosaics and catalogue, the FIRST zip).

A DR2 mosaic is ~400 MB, so an interrupted transfer is resumed with an HTTP
``Range`` request into ``<dest>.part`` instead of starting over; the file is
checked (size, and sha256 or md5 when configured) and only then renamed onto
``<dest>``.  A download that fails leaves ``<dest>`` absent, so a workflow
rerun retries exactly what failed.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from radiogen.errors import InputFileError
from radiogen.io import file_digest

__all__ = ["DownloadError", "download_file"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: First retry waits this many seconds, doubling per attempt (capped at 30 s).
_BACKOFF_S = 2.0


class DownloadError(InputFileError):
    """A file could not be fetched or failed its size/checksum check."""


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    timeout_s: float = 60.0,
    retries: int = 3,
    hint: str = "",
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download.

    Parameters
    ----------
    url : str
        ``http(s)://`` or ``file://`` URL.
    dest : path-like
        Final file; the transfer goes to ``dest + ".part"``.
    size : int, optional
        Expected size in bytes (also taken from ``Content-Length`` when known).
    sha256, md5 : str, optional
        Expected hex digests; a mismatch deletes the ``.part`` file.
    timeout_s : float
        Socket timeout per request, seconds.
    retries : int
        Attempts after a dropped connection, each resuming where the last stopped.
    hint : str
        Appended to error messages (e.g. which config key to set).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    DownloadError
        Unreachable server / offline, HTTP error, size or checksum mismatch;
        the message names the URL and what to do.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    suffix = f" {hint}" if hint else ""
    attempt = 0
    while True:
        attempt += 1
        try:
            total = _fetch_into(url, part, timeout_s=timeout_s)
            if total is not None and _size(part) < total:
                raise ConnectionError(f"connection closed after {_size(part)} of {total} bytes")
            break
        except urllib.error.HTTPError as err:
            if err.code == 416 and part.exists():
                # Range beyond the end: the .part file already holds everything.
                total = part.stat().st_size
                break
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason} while downloading to {dest}.{suffix}") from err
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, dropped connections
            reason = getattr(err, "reason", err)
            if attempt > retries:
                raise DownloadError(
                    f"{url}: cannot download ({reason}); the machine seems offline or the server is "
                    f"unreachable. {part.name} keeps {_size(part)} bytes and a rerun resumes it.{suffix}"
                ) from err
            wait = min(_BACKOFF_S * 2.0 ** (attempt - 1), 30.0)
            log.warning("%s: %s; retry %d/%d in %.0f s (resuming)", url, reason, attempt, retries, wait)
            time.sleep(wait)
    expected = size if size is not None else total
    actual = part.stat().st_size
    if expected is not None and actual != expected:
        raise DownloadError(f"{url}: size mismatch for {dest}: got {actual} bytes, expected {expected}; "
                            f"{part.name} kept so a rerun resumes it.{suffix}")
    for algorithm, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = file_digest(part, algorithm)
            if got.lower() != want.lower():
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: {algorithm} mismatch for {dest}: got {got}, expected {want}; "
                                    f"the corrupt download was deleted.{suffix}")
    os.replace(part, dest)
    log.info("%s: saved %s (%d bytes)", url, dest, actual)
    return dest


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _fetch_into(url: str, part: Path, *, timeout_s: float) -> int | None:
    """Append the rest of ``url`` to ``part``; return the full size when the server says."""
    have = _size(part)
    request = urllib.request.Request(url, headers={"User-Agent": "radiogen"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        if have and status == 206:
            mode, start = "ab", have
            content_range = response.headers.get("Content-Range", "")
            total = int(content_range.rsplit("/", 1)[1]) if "/" in content_range and not content_range.endswith("*") else None
            log.info("%s: resuming at byte %d", url, have)
        else:
            # Server ignored the Range header (or nothing to resume): start over.
            mode, start = "wb", 0
            total = int(length) if length is not None else None
        done, started, last = start, time.monotonic(), time.monotonic()
        with open(part, mode) as fh:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                fh.write(chunk)
                done += len(chunk)
                now = time.monotonic()
                if now - last >= 10.0:
                    rate = (done - start) / (now - started) / 1e6
                    log.info("%s: %.1f/%s MB (%.1f MB/s)", url, done / 1e6,
                             f"{total / 1e6:.1f}" if total else "?", rate)
                    last = now
    return total
