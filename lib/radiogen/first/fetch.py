"""Obtain ``galaxy_data.zip``: copy a local file when present, else download it.

Order: ``local_path`` when that file exists (dev and CI machines keep the
archive in ``../shared/data/first``); otherwise ``source``, which may be a
local path or an http(s) URL (default: the Zenodo record 7689127).  Downloads
go to ``<output>.part`` and resume from its size with an HTTP Range request
after an interruption; the result must match the server's Content-Length and
be a readable zip before it is renamed onto ``output``.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

from radiogen.download import DownloadError, download_file
from radiogen.errors import InputFileError
from radiogen.io import atomic_path

__all__ = ["ZENODO_URL", "fetch_first_zip", "download"]

log = logging.getLogger(__name__)

#: Public home of the Griese et al. (2023) dataset.
ZENODO_URL = "https://zenodo.org/records/7689127/files/galaxy_data.zip"


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
    """Download ``url`` to ``output`` with resume and size check (see module docstring).

    ``retries`` counts attempts in total; a result that is not a zip is removed.
    """
    output = Path(output)
    try:
        download_file(url, output, timeout_s=timeout_s, retries=max(0, retries - 1))
    except DownloadError as err:
        hint = f", or place the archive at first.local_path ({local_hint})" if local_hint else ""
        raise InputFileError(
            f"{url}: download failed ({err}); without internet "
            f"access set first.source to a local copy of galaxy_data.zip{hint}"
        ) from err
    try:
        _check_zip(output, url)
    except InputFileError:
        output.unlink(missing_ok=True)
        raise
