"""Download the seed paper's published networks (and LoTSS training set) for ``radiogen model import``.

The authors list share links for ``parameters_LOFAR_model.pt``,
``parameters_FIRST_model.pt`` and ``LOFAR_Dataset.h5`` in their repository
(tmartinezML/LOFAR-Diffusion, ``src/utils/paths.py``); the model configs are
files of that repository.  :func:`fetch_published` places them in a folder:

* a file already in ``local_dir`` wins (offline machines, shared storage) and
  is used where it is, not copied;
* otherwise it is downloaded with :func:`radiogen.download.download_file`
  (the code the FIRST zip and LoTSS mosaics use): into ``<file>.part``,
  resumed with an HTTP Range request after an interruption, checked against the
  server's Content-Length, renamed into place only when complete;
* the size and SHA-256 of every file are recorded in ``published-files.json``
  in the output folder after its first download; a later download of the same
  file (e.g. after deleting it) must match them, and a file present in the
  folder must have the recorded size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from radiogen.download import download_file
from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path, file_digest

__all__ = ["PUBLISHED", "RECORD_NAME", "fetch_published"]

log = logging.getLogger(__name__)

_SHARE = "https://cloud.hs.uni-hamburg.de/s/{}/download"
_CONFIGS = ("https://raw.githubusercontent.com/tmartinezML/LOFAR-Diffusion/"
            "6cec4ed576535603567e724f733e03d0c2a8b875/src/model/configs/{}")

#: Published files per name: (file name here, URL).
PUBLISHED: dict[str, list[tuple[str, str]]] = {
    "lofar-diffusion-lotss": [
        ("parameters_LOFAR_model.pt", _SHARE.format("KTAFWFnLByMgNRn")),
        ("config_LOFAR_model.json", _CONFIGS.format("LOFAR_Model.json")),
        ("LOFAR_Dataset.h5", _SHARE.format("jPZdExPPmcZ48o5")),
    ],
    "lofar-diffusion-first": [
        ("parameters_FIRST_model.pt", _SHARE.format("xs7bbt99AMFf8gP")),
        ("config_FIRST_model.json", _CONFIGS.format("FIRST_Model.json")),
    ],
}

#: Size and SHA-256 of each file after its first download, in the output folder.
RECORD_NAME = "published-files.json"


def _read_record(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: unreadable download record ({err}); delete it to record again") from err


def fetch_published(
    name: str,
    out_dir: str | os.PathLike,
    *,
    local_dir: str | os.PathLike | None = None,
    urls: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    retries: int = 3,
) -> dict[str, str]:
    """Place the files of a published model in ``out_dir``; return where each one is.

    Parameters
    ----------
    name : {"lofar-diffusion-lotss", "lofar-diffusion-first"}
        Which published model.
    out_dir : path
        Download folder (also holds the size/checksum record).
    local_dir : path, optional
        Folder with copies already at hand; a file found there wins.
    urls : dict, optional
        File name -> URL overrides (mirrors; tests use a local server).
    timeout_s, retries : float, int
        Per-request socket timeout (s) and download attempts after the first.

    Returns
    -------
    dict
        File name -> path of the file to use.

    Raises
    ------
    ConfigError
        Unknown ``name``.
    InputFileError
        A download failed (offline: the message says to use ``--local-dir``), or
        a file does not match its recorded size or checksum.
    """
    if name not in PUBLISHED:
        raise ConfigError(f"unknown published model {name!r}; choose one of {', '.join(PUBLISHED)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / RECORD_NAME
    record = _read_record(record_path)
    placed = {}
    for filename, url in PUBLISHED[name]:
        url = (urls or {}).get(filename, url)
        if local_dir is not None and (Path(local_dir) / filename).is_file():
            placed[filename] = str(Path(local_dir) / filename)
            log.info("%s: using the local copy %s", filename, placed[filename])
            continue
        dest = out_dir / filename
        known = record.get(filename)
        if dest.is_file():
            if known and dest.stat().st_size != known["size"]:
                raise InputFileError(f"{dest}: {dest.stat().st_size} bytes, but {known['size']} were recorded "
                                     f"in {record_path} at its first download; delete it to download again")
            placed[filename] = str(dest)
            continue
        download_file(url, dest, size=known["size"] if known else None,
                      sha256=known["sha256"] if known else None, timeout_s=timeout_s, retries=retries,
                      hint=f"Without internet access put {filename} in a folder and pass it as --local-dir.")
        if not known:
            record[filename] = {"size": dest.stat().st_size, "sha256": file_digest(dest), "url": url}
            with atomic_path(record_path) as tmp:
                tmp.write_text(json.dumps(record, indent=2) + "\n")
        placed[filename] = str(dest)
    return placed
