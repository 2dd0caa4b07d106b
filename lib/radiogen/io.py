"""Atomic outputs and small HDF5 helpers shared by every workflow step.

Every file a rule declares is written to a temporary name in the same directory
and renamed into place only once it is complete, so a killed job never leaves a
truncated output that Snakemake would take for finished work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pandas as pd

from radiogen.errors import InputFileError

__all__ = [
    "atomic_path",
    "save_figure",
    "write_json_atomic",
    "write_table_hdf5",
    "read_table_hdf5",
    "file_digest",
    "open_hdf5",
    "require_datasets",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or "".join(path.suffixes) + ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the output the usual umask permissions
        # so collaborators on a shared cluster file system can read it.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure atomically; the format follows the suffix (PNG without one).

    The figure stays open: the caller closes it.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_table_hdf5(group: h5py.Group, name: str, table: pd.DataFrame) -> h5py.Group:
    """Store a DataFrame as one dataset per column under ``group[name]``.

    Strings become variable-length UTF-8; the column order is kept in the
    ``columns`` attribute.  Readable without pandas (plain h5py) and by
    :func:`read_table_hdf5`.
    """
    sub = group.create_group(name)
    for column in table.columns:
        values = table[column].to_numpy()
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            data = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                             for v in values], dtype=object)
            sub.create_dataset(str(column), data=data, dtype=h5py.string_dtype("utf-8"))
        elif values.dtype == bool:
            sub.create_dataset(str(column), data=values.astype(np.bool_))
        else:
            sub.create_dataset(str(column), data=values)
    sub.attrs["columns"] = json.dumps([str(c) for c in table.columns])
    return sub


def read_table_hdf5(group: h5py.Group) -> pd.DataFrame:
    """Inverse of :func:`write_table_hdf5`."""
    columns = json.loads(group.attrs["columns"])
    data = {}
    for column in columns:
        values = group[column][()]
        if values.dtype == object:
            values = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
        data[column] = values
    return pd.DataFrame(data, columns=columns)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256``, ``md5``, ...), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_hdf5(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """Open an HDF5 file for reading with an error that names the file."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: file does not exist")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        raise InputFileError(f"{path}: not a readable HDF5 file ({err})") from err


def require_datasets(h5: h5py.File, names: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`InputFileError` naming the file and every missing dataset."""
    missing = [n for n in names if n not in h5]
    if missing:
        raise InputFileError(f"{h5.filename}: missing required dataset(s) {', '.join(missing)}")
