"""Read the labelled FIRST dataset of Griese et al. (2023) from its zip archive.

The archive (Zenodo record 7689127, ``galaxy_data.zip``) holds 2158 PNG images
of 300x300 px at 1.8 arcsec/px, already min-max scaled to 0..255, in folders
``galaxy_data/<split>/<class>/RA_DEC_LABEL_CATALOGUE.png`` with split in
``train``, ``valid``, ``test``.  An extra ``galaxy_data/all/`` folder repeats
every image once; it is used only as a completeness check (every image listed
there must appear in exactly one split folder).

For the diffusion model and the classifier each image is centre-cropped to
80x80 px and min-max rescaled to [0, 1] (paper Sect. 3.2, Eq. 11).
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from radiogen.errors import InputFileError
from radiogen.surveys import FIRST, FIRST_CLASS_NAMES

__all__ = [
    "CLASS_NAMES",
    "SPLIT_NAMES",
    "PIXEL_SCALE_ARCSEC",
    "BEAM_ARCSEC",
    "FREQUENCY_HZ",
    "FirstDataset",
    "list_first_zip",
    "decode_png",
    "centre_crop",
    "minmax_scale",
    "read_first_zip",
    "class_counts_table",
]

log = logging.getLogger(__name__)

#: Morphological classes in label order (label = index).
CLASS_NAMES = FIRST_CLASS_NAMES
#: Split folders of the archive in code order: 0 train, 1 valid, 2 test.
SPLIT_NAMES = ("train", "valid", "test")
#: FIRST pixel scale (arcsec/px), beam FWHM (arcsec; not stored in the PNGs), frequency (Hz).
PIXEL_SCALE_ARCSEC = FIRST.pixel_scale_arcsec
BEAM_ARCSEC = FIRST.beam_arcsec
FREQUENCY_HZ = FIRST.frequency_hz

_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAME_RE = re.compile(rf"^(?P<ra>{_FLOAT})_(?P<dec>{_FLOAT})_(?P<label>-?\d+)_(?P<catalogue>.+)$")


@dataclass
class FirstDataset:
    """All images of the archive with their metadata.

    Attributes
    ----------
    images : numpy.ndarray
        float32 (N, H, W) in [0, 1] (cropped and rescaled) or uint8 (N, 300, 300).
    table : pandas.DataFrame
        One row per image: ``member`` (path in the zip), ``split`` (name),
        ``first_split`` (0 train, 1 valid, 2 test), ``label`` (0..3), ``class_name``,
        ``ra``, ``dec`` (deg), ``catalogue`` (source catalogue of the label),
        ``source_name`` (file stem, unique).
    """

    images: np.ndarray
    table: pd.DataFrame


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise InputFileError(f"{path}: FIRST dataset zip does not exist")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise InputFileError(f"{path}: not a readable zip archive ({err})") from err


def _parse_member(zip_path: Path, member: str, split: str, class_name: str) -> dict:
    stem = PurePosixPath(member).stem
    match = _NAME_RE.match(stem)
    if match is None:
        raise InputFileError(
            f"{zip_path}: {member}: file name does not follow RA_DEC_LABEL_CATALOGUE.png"
        )
    label = int(match["label"])
    if not 0 <= label < len(CLASS_NAMES):
        raise InputFileError(
            f"{zip_path}: {member}: label {label} outside 0-{len(CLASS_NAMES) - 1} "
            f"({', '.join(f'{i}={n}' for i, n in enumerate(CLASS_NAMES))})"
        )
    if CLASS_NAMES[label] != class_name:
        raise InputFileError(
            f"{zip_path}: {member}: label {label} ({CLASS_NAMES[label]}) disagrees with "
            f"its class folder {class_name!r}"
        )
    ra, dec = float(match["ra"]), float(match["dec"])
    if not (0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
        raise InputFileError(f"{zip_path}: {member}: RA/Dec {ra}, {dec} out of range")
    return {
        "member": member,
        "split": split,
        "first_split": SPLIT_NAMES.index(split),
        "label": label,
        "class_name": class_name,
        "ra": ra,
        "dec": dec,
        "catalogue": match["catalogue"],
        "source_name": stem,
    }


def list_first_zip(path: str | Path) -> pd.DataFrame:
    """List and validate the images of the FIRST archive without decoding them.

    Parameters
    ----------
    path : str or Path
        The ``galaxy_data.zip`` archive.

    Returns
    -------
    pandas.DataFrame
        One row per image, columns as in :class:`FirstDataset`, ordered by split,
        label and file name.

    Raises
    ------
    InputFileError
        Not a zip; no ``<split>/<class>/`` folders (a different layout); a missing
        split or class folder; a file name that does not parse; a label outside
        0-3 or disagreeing with its folder; a duplicated image; an image listed in
        ``all/`` but missing from the split folders (or the reverse).
    """
    path = Path(path)
    with _open_zip(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
    rows, listed_all, unexpected = [], set(), []
    for member in names:
        parts = PurePosixPath(member).parts
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue  # archiver metadata, not data
        if len(parts) < 3:
            unexpected.append(member)
            continue
        split, class_name, filename = parts[-3], parts[-2], parts[-1]
        if split == "all" and class_name in CLASS_NAMES:
            listed_all.add(filename)
            continue
        if split not in SPLIT_NAMES or class_name not in CLASS_NAMES:
            unexpected.append(member)
            continue
        if not filename.lower().endswith(".png"):
            raise InputFileError(f"{path}: {member}: not a PNG file in a class folder")
        rows.append(_parse_member(path, member, split, class_name))
    if not rows:
        example = f" (e.g. {unexpected[0]})" if unexpected else ""
        raise InputFileError(
            f"{path}: no images in the expected layout "
            f"<root>/{{{','.join(SPLIT_NAMES)}}}/{{{','.join(CLASS_NAMES)}}}/RA_DEC_LABEL_CATALOGUE.png"
            f"{example}; is this the Griese et al. (2023) galaxy_data.zip?"
        )
    if unexpected:
        raise InputFileError(
            f"{path}: {unexpected[0]}: unexpected entry outside the "
            f"<split>/<class>/ layout ({len(unexpected)} such entries)"
        )
    table = pd.DataFrame(rows)
    duplicated = table["source_name"][table["source_name"].duplicated()]
    if len(duplicated):
        raise InputFileError(
            f"{path}: image {duplicated.iloc[0]}.png appears in more than one split folder"
        )
    if listed_all:
        present = {PurePosixPath(m).name for m in table["member"]}
        missing = sorted(listed_all - present)
        if missing:
            raise InputFileError(
                f"{path}: all/.../{missing[0]} has no copy in the train/valid/test folders "
                f"({len(missing)} image(s) missing)"
            )
        extra = sorted(present - listed_all)
        if extra:
            raise InputFileError(
                f"{path}: {extra[0]} is in a split folder but missing from all/ "
                f"({len(extra)} image(s))"
            )
    for split in SPLIT_NAMES:
        for class_name in CLASS_NAMES:
            if not ((table["split"] == split) & (table["class_name"] == class_name)).any():
                raise InputFileError(
                    f"{path}: folder {split}/{class_name}/ is missing or holds no PNG images"
                )
    table = table.sort_values(["first_split", "label", "source_name"], kind="stable")
    return table.reset_index(drop=True)


def decode_png(data: bytes, *, name: str, size: int | None = 300) -> np.ndarray:
    """Decode one greyscale PNG into a uint8 array.

    Parameters
    ----------
    data : bytes
        PNG file content.
    name : str
        Name used in error messages (archive and member).
    size : int or None
        Required side length in pixels; None accepts any square image.

    Raises
    ------
    InputFileError
        Empty or undecodable data, a colour image, or a wrong size.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputFileError(f"{name}: empty PNG file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.format != "PNG":
                raise InputFileError(f"{name}: not a PNG image (format {img.format})")
            mode = img.mode
            if mode in ("L", "P", "I", "I;16"):
                array = np.asarray(img.convert("L") if mode == "P" else img)
            elif mode in ("RGB", "RGBA", "LA"):
                rgb = np.asarray(img.convert("RGB"))
                if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    raise InputFileError(f"{name}: colour PNG; FIRST images are greyscale")
                array = rgb[..., 0]
            else:
                raise InputFileError(f"{name}: unsupported PNG mode {mode}")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputFileError(f"{name}: corrupt PNG ({err})") from err
    if array.dtype != np.uint8:
        raise InputFileError(f"{name}: expected 8-bit pixels, got {array.dtype}")
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise InputFileError(f"{name}: expected a square greyscale image, got shape {array.shape}")
    if size is not None and array.shape != (size, size):
        raise InputFileError(f"{name}: expected {size}x{size} px, got {array.shape[1]}x{array.shape[0]}")
    return array


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Central ``size`` x ``size`` pixels of the last two axes.

    The crop is symmetric when the input and crop sides have the same parity
    (300 -> 80: pixels 110..189), so the image centre stays the crop centre.
    """
    height, width = image.shape[-2:]
    if size > min(height, width):
        raise ValueError(f"crop size {size} exceeds image size {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def minmax_scale(images: np.ndarray) -> np.ndarray:
    """Per-image min-max scaling to [0, 1] (paper Eq. 11); constant images become 0."""
    images = np.asarray(images, dtype=np.float32)
    low = images.min(axis=(-2, -1), keepdims=True)
    span = images.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (images - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def read_first_zip(
    path: str | Path, *, crop_size: int | None = 80, image_size: int = 300
) -> FirstDataset:
    """Read, validate, crop and rescale every image of the archive.

    Parameters
    ----------
    path : str or Path
        The ``galaxy_data.zip`` archive.
    crop_size : int or None
        Side of the central crop in pixels (paper: 80, i.e. 144 arcsec); None
        keeps the full uint8 images unscaled.
    image_size : int
        Side of the archive images in pixels (300); other sizes are errors.

    Returns
    -------
    FirstDataset
        float32 images in [0, 1] of shape (N, crop_size, crop_size) and the table.
    """
    path = Path(path)
    table = list_first_zip(path)
    side = crop_size if crop_size is not None else image_size
    dtype = np.float32 if crop_size is not None else np.uint8
    images = np.empty((len(table), side, side), dtype=dtype)
    constant = []
    with _open_zip(path) as archive:
        for i, member in enumerate(table["member"]):
            name = f"{path}: {member}"
            try:
                data = archive.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise InputFileError(f"{name}: cannot be extracted ({err})") from err
            raw = decode_png(data, name=name, size=image_size)
            if crop_size is None:
                images[i] = raw
                continue
            crop = centre_crop(raw, crop_size)
            if crop.min() == crop.max():
                constant.append(member)
            images[i] = minmax_scale(crop)
    if constant:
        log.warning("%s: %d crop(s) are constant and were set to 0, e.g. %s", path, len(constant), constant[0])
    log.info("%s: read %d images (%s)", path, len(table), ", ".join(
        f"{s}={int((table['split'] == s).sum())}" for s in SPLIT_NAMES))
    return FirstDataset(images=images, table=table)


def class_counts_table(labels: np.ndarray, splits: np.ndarray) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with totals (paper Table 2).

    Parameters
    ----------
    labels : numpy.ndarray
        Class labels 0..3.
    splits : numpy.ndarray
        Split codes 0 train, 1 valid, 2 test.
    """
    labels, splits = np.asarray(labels), np.asarray(splits)
    data = {
        split: [int(((labels == k) & (splits == s)).sum()) for k in range(len(CLASS_NAMES))]
        for s, split in enumerate(SPLIT_NAMES)
    }
    table = pd.DataFrame(data, index=pd.Index(CLASS_NAMES, name="class"))
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    return table


def write_dataset_h5(dataset: FirstDataset, path: str | Path, *, source: str, seed: int | None = None) -> None:
    """Write the cropped dataset to ``path`` (atomic).

    Layout: ``/images`` float32 (N, H, W) in [0, 1]; ``/label`` int64;
    ``/ra``, ``/dec`` float64 (deg); ``/catalogue``, ``/source_name`` utf-8;
    ``/first_split`` uint8 (0 train, 1 valid, 2 test); attrs ``dataset``,
    ``class_names`` (JSON), ``split_names`` (JSON), ``pixel_scale_arcsec``,
    ``beam_arcsec``, ``frequency_hz``, ``crop_size``, ``source``.
    """
    import json

    import h5py

    from radiogen.io import atomic_path

    table = dataset.table
    strings = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("images", data=dataset.images.astype(np.float32),
                          chunks=(1, *dataset.images.shape[1:]), compression="gzip", compression_opts=4)
        h5.create_dataset("label", data=table["label"].to_numpy(np.int64))
        h5.create_dataset("ra", data=table["ra"].to_numpy(np.float64)).attrs["unit"] = "deg"
        h5.create_dataset("dec", data=table["dec"].to_numpy(np.float64)).attrs["unit"] = "deg"
        h5.create_dataset("catalogue", data=table["catalogue"].astype(str).to_numpy(object), dtype=strings)
        h5.create_dataset("source_name", data=table["source_name"].astype(str).to_numpy(object), dtype=strings)
        h5.create_dataset("first_split", data=table["first_split"].to_numpy(np.uint8))
        h5.attrs["dataset"] = "first"
        h5.attrs["class_names"] = json.dumps(list(CLASS_NAMES))
        h5.attrs["split_names"] = json.dumps(list(SPLIT_NAMES))
        h5.attrs["pixel_scale_arcsec"] = PIXEL_SCALE_ARCSEC
        h5.attrs["beam_arcsec"] = BEAM_ARCSEC
        h5.attrs["frequency_hz"] = FREQUENCY_HZ
        h5.attrs["crop_size"] = int(dataset.images.shape[-1])
        h5.attrs["source"] = str(source)
        if seed is not None:
            h5.attrs["seed"] = int(seed)


def read_dataset_h5(path: str | Path) -> FirstDataset:
    """Read a file written by :func:`write_dataset_h5`; errors name the file."""
    from radiogen.io import open_hdf5, require_datasets

    with open_hdf5(path) as h5:
        require_datasets(h5, ["images", "label", "ra", "dec", "catalogue", "source_name", "first_split"])
        images = h5["images"][()].astype(np.float32)
        table = pd.DataFrame({
            "label": h5["label"][()].astype(np.int64),
            "ra": h5["ra"][()],
            "dec": h5["dec"][()],
            "catalogue": h5["catalogue"].asstr()[()],
            "source_name": h5["source_name"].asstr()[()],
            "first_split": h5["first_split"][()].astype(np.uint8),
        })
    if images.ndim != 3 or len(images) != len(table):
        raise InputFileError(f"{path}: /images has shape {images.shape}, expected ({len(table)}, H, W)")
    if table["label"].min() < 0 or table["label"].max() >= len(CLASS_NAMES):
        raise InputFileError(f"{path}: /label has values outside 0-{len(CLASS_NAMES) - 1}")
    table["split"] = [SPLIT_NAMES[s] for s in table["first_split"]]
    table["class_name"] = [CLASS_NAMES[k] for k in table["label"]]
    return FirstDataset(images=images, table=table)
