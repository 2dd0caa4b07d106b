"""Summary tables: is a generated set as close to the real data as real data is to itself?

For each distribution of the paper's evaluation (pixel values, image mean,
image std, PyBDSF model flux, A50%, Delta+) the distances of
:mod:`radiogen.evaluation.distances` are computed, size-matched, between

* a reference part A of the real set and a subsample of the generated set,
* A and a held-out part B of the real set of the same size (the noise floor),
* for LoTSS, A and a subsample of the classical simulated survey (the
  baseline the paper argues against), of the same size again,

over R seeded partitions (medians reported), plus the Frechet distance and
the KID of classifier embeddings.  :func:`summary_table` puts them side by
side, one row per (distribution, metric), so a reader sees whether the
diffusion model beats the classical simulation and how far it is above the
noise floor.

Every per-image quantity is kept row-aligned with the image set (PyBDSF rows
follow their image ``index``; images PyBDSF did not model are NaN and drop out
of the distances), so one partition of the image rows partitions every
distribution alike.
"""

from __future__ import annotations

import html
import json
import logging
import warnings
from typing import Mapping

import numpy as np
import pandas as pd

from radiogen.errors import InputFileError, RadiogenError
from radiogen.evaluation.distances import (
    kernel_inception_distance,
    one_d_distances,
    reference_frechet_distance,
    size_matched,
)
from radiogen.evaluation.pybdsf import MODEL_FLUX_UNITS
from radiogen.io import atomic_path

__all__ = [
    "DISTRIBUTIONS",
    "UNBIASED_METRICS",
    "DISTANCE_COLUMNS",
    "pixels_per_image",
    "image_distributions",
    "image_set_distributions",
    "pybdsf_per_image",
    "distance_rows",
    "matched_distance_table",
    "feature_distance_table",
    "feature_distance_options",
    "summary_table",
    "write_table_html",
    "write_csv",
    "read_json",
]

log = logging.getLogger(__name__)

#: (key, label, unit) of every compared distribution, in table order.
DISTRIBUTIONS = [
    ("pixel_value", "pixel values", "scaled 0..1"),
    ("image_mean", "image mean", "scaled 0..1"),
    ("image_std", "image std", "scaled 0..1"),
    ("model_flux", "PyBDSF model flux", MODEL_FLUX_UNITS["model_flux"]),
    ("model_flux_jy", "PyBDSF model flux (Jy)", MODEL_FLUX_UNITS["model_flux_jy"]),
    ("a50_pixels", "A50% (PyBDSF model)", "pixels"),
    ("delta_plus", "positive residual Delta+", "scaled 0..1 x pixels"),
]
_PYBDSF_KEYS = ("model_flux", "model_flux_jy", "a50_pixels", "delta_plus")

#: Metrics whose estimate has expectation 0 for equal distributions: their
#: floor is about 0, so a ratio to it means nothing (read the z column).
UNBIASED_METRICS = frozenset({"KID"})

#: Columns of :func:`matched_distance_table` and :func:`feature_distance_table`.
DISTANCE_COLUMNS = [
    "distribution",
    "label",
    "metric",
    "unit",
    "real_vs_generated",
    "real_vs_real_floor",
    "floor_sd",
    "real_vs_classical",
    "n_reference",
    "n_compared",
    "repeats",
    "reference",
]


def pixels_per_image(max_pixels: int | None, n_images: int) -> int | None:
    """Pixels drawn from every image so that the real set gives about ``max_pixels``.

    The same number is drawn from every image of every compared set, so that
    equal numbers of images mean equal numbers of pixels (the size matching
    of :mod:`radiogen.evaluation.distances` counts images).  None keeps every
    pixel.
    """
    if max_pixels is None:
        return None
    if n_images < 1:
        raise RadiogenError("an empty image set has no pixels to sample")
    return max(1, -(-int(max_pixels) // int(n_images)))


def image_distributions(images, *, pixels_per_image: int | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image pixel sample, mean and std of images (N, H, W) in [0, 1].

    ``pixel_value`` is (N, p): ``pixels_per_image`` pixels drawn without
    replacement from each image (all pixels when None).  Every image has the
    same number of pixels, so pooling equal-size per-image samples is an
    unbiased sample of the pooled pixel distribution, and parts of the set
    select their pixels simply by rows.
    """
    images = np.asarray(images, dtype=np.float32)
    flat = images.reshape(len(images), -1)
    if pixels_per_image is None or pixels_per_image >= flat.shape[1]:
        pixels = flat.copy()
    else:
        pick = np.argsort(rng.random(flat.shape), axis=1)[:, :pixels_per_image]
        pixels = np.take_along_axis(flat, pick, axis=1)
    return {"pixel_value": pixels, "image_mean": flat.mean(axis=1), "image_std": flat.std(axis=1)}


def image_set_distributions(path, *, pixels_per_image: int | None, seed: int, chunk: int = 2048) -> dict[str, np.ndarray]:
    """:func:`image_distributions` of a whole image-set file, read in chunks.

    Parameters
    ----------
    path : path-like
        Image-set HDF5 (``/images`` in [0, 1]).
    pixels_per_image : int or None, keyword-only
        Pixels sampled per image (see :func:`pixels_per_image`); None keeps all.
    seed : int, keyword-only
        Seed of the pixel sample.
    chunk : int, keyword-only
        Images read at a time.
    """
    from radiogen.evaluation.imagesets import open_image_set

    rng = np.random.default_rng(seed)
    parts = []
    with open_image_set(path) as image_set:
        n = image_set.n_images
        if n == 0:
            raise InputFileError(f"{path}: image set is empty")
        for start in range(0, n, chunk):
            parts.append(image_distributions(image_set.images(start, min(n, start + chunk)), pixels_per_image=pixels_per_image, rng=rng))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def pybdsf_per_image(table: pd.DataFrame, n_images: int, *, flux_columns, path="PyBDSF table") -> dict[str, np.ndarray]:
    """PyBDSF quantities aligned with the image rows (NaN where PyBDSF did not model the image).

    Parameters
    ----------
    table : DataFrame
        Merged PyBDSF table (``index`` = image row).
    n_images : int
        Number of images in the set.
    flux_columns : list of str, keyword-only
        From :func:`radiogen.evaluation.pybdsf.model_flux_columns`.
    path : keyword-only
        Name of the table, for errors.

    Returns
    -------
    dict
        (n_images,) float arrays: the flux columns, ``a50_pixels`` and
        ``delta_plus``; only rows with ``status == "ok"`` are finite.
    """
    columns = [*flux_columns, "a50_pixels", "delta_plus"]
    missing = [c for c in ["index", "status", *columns] if c not in table.columns]
    if missing:
        raise InputFileError(f"{path}: missing column(s) {', '.join(missing)}")
    index = table["index"].to_numpy(dtype=np.int64)
    if index.size and (index.min() < 0 or index.max() >= n_images):
        raise InputFileError(f"{path}: image indices outside 0..{n_images - 1}")
    ok = (table["status"] == "ok").to_numpy()
    out = {}
    for column in columns:
        values = np.full(n_images, np.nan)
        values[index[ok]] = table[column].to_numpy(dtype=np.float64)[ok]
        out[column] = values
    return out


def distance_rows(a: dict, b: dict) -> dict[str, float]:
    """W1 and KS between matching distributions of two sets (dicts key -> per-image values).

    Returns ``{"<key>/w1": ..., "<key>/ks": ...}``; a distribution with no
    finite values on one side (e.g. PyBDSF failed everywhere) gives NaN.
    """
    out = {}
    for key, label, _ in DISTRIBUTIONS:
        if key not in a or key not in b:
            continue
        try:
            d = one_d_distances(a[key], b[key], name=label)
        except RadiogenError as err:  # an empty distribution is a NaN row, not a crash
            log.warning("%s: %s", label, err)
            d = {"w1": np.nan, "ks": np.nan}
        out[f"{key}/w1"], out[f"{key}/ks"] = d["w1"], d["ks"]
    return out


def _median(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values[np.isfinite(values)])) if np.isfinite(values).any() else np.nan


def _sd(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size > 1 else np.nan


def _rows(result: dict, entries, *, classical: bool, reference: str) -> pd.DataFrame:
    """Rows of DISTANCE_COLUMNS from a :func:`size_matched` result.

    ``entries``: (result key, distribution, label, metric, unit) per row;
    ``reference``: what the real set is, in words.
    """
    rows = []
    for name, key, label, metric, unit in entries:
        if name not in result["floor"]:
            continue
        rows.append({
            "distribution": key,
            "label": label,
            "metric": metric,
            "unit": unit,
            "real_vs_generated": _median(result["others"][0][name]),
            "real_vs_real_floor": _median(result["floor"][name]),
            "floor_sd": _sd(result["floor"][name]),
            "real_vs_classical": _median(result["others"][1][name]) if classical else np.nan,
            "n_reference": result["n_reference"],
            "n_compared": result["n_compared"],
            "repeats": result["repeats"],
            "reference": reference,
        })
    return pd.DataFrame(rows, columns=DISTANCE_COLUMNS)


def matched_distance_table(real: dict, generated: dict, *, classical: dict | None = None, repeats: int, seed: int,
                           reference: str = "real set") -> pd.DataFrame:
    """Size-matched W1 and KS of every distribution, real vs generated (and classical) and the floor.

    Parameters
    ----------
    real, generated, classical : dict
        Row-aligned per-image distributions (key -> array with one row per
        image), from :func:`image_set_distributions` and
        :func:`pybdsf_per_image`.
    repeats, seed : int, keyword-only
        Number of seeded partitions and their seed
        (:func:`radiogen.evaluation.distances.size_matched_splits`).
    reference : str, keyword-only
        What the real set is, in words (the ``reference`` column).

    Returns
    -------
    DataFrame
        One row per (distribution, metric) with the columns
        :data:`DISTANCE_COLUMNS`: medians over the partitions of
        ``d(A, generated)``, ``d(A, B)`` (floor), ``d(A, classical)``, the
        floor's standard deviation over the partitions, ``n_reference``
        (images in A), ``n_compared`` (images in B and in each compared
        subsample) and ``repeats``.
    """
    others = [generated] + ([classical] if classical is not None else [])
    result = size_matched(distance_rows, real, others, repeats=repeats, seed=seed)
    entries = [
        (f"{key}/{m}", key, label, metric, unit if m == "w1" else "dimensionless")
        for key, label, unit in DISTRIBUTIONS
        for m, metric in (("w1", "W1"), ("ks", "KS"))
    ]
    return _rows(result, entries, classical=classical is not None, reference=reference)


def feature_distance_options(settings: Mapping) -> dict:
    """Keyword options of :func:`feature_distance_table` from ``evaluation.summary`` settings."""
    return {
        "repeats": int(settings["floor_repeats"]),
        "kid_subset_size": int(settings["kid_subset_size"]),
        "kid_subsets": int(settings["kid_subsets"]),
        "frechet_components": int(settings["frechet_components"]),
    }


def feature_distance_table(
    real,
    generated,
    *,
    classical=None,
    repeats: int,
    seed: int,
    kid_subset_size: int = 1000,
    kid_subsets: int = 20,
    frechet_components: int = 16,
    reference: str = "real set",
) -> pd.DataFrame:
    """Size-matched Frechet distance and KID of classifier embeddings, with their floors.

    The real embeddings must be out of the classifier's training sample, like
    the generated ones: a network maps the images it was trained on to
    tighter, more typical embeddings than new images, a bias the floor (both
    parts real) would not see.  For FIRST the workflow therefore passes the
    archive's valid and test splits, not the diffusion training set (about
    80% of which is the classifier's training split).

    Parameters
    ----------
    real, generated, classical : array_like
        Embeddings (N, d) of the real, generated and (optional) classical sets.
    repeats, seed : int, keyword-only
        Seeded partitions, as in :func:`matched_distance_table`; the KID
        subsets use ``default_rng([seed, 2**32 - 1])``.
    kid_subset_size, kid_subsets : int, keyword-only
        See :func:`radiogen.evaluation.distances.kernel_inception_distance`.
    frechet_components : int, keyword-only
        Principal components of the reference part A in which the Frechet
        distance is computed (at most m - 1); see
        :func:`radiogen.evaluation.distances.reference_frechet_distance`.
        The KID uses every dimension.
    reference : str, keyword-only
        What the real set is, in words (the ``reference`` column).

    Returns
    -------
    DataFrame
        Two rows (``Frechet``, ``KID``) with the columns :data:`DISTANCE_COLUMNS`.
    """
    rng = np.random.default_rng([int(seed), 2**32 - 1])

    def metric(a, b) -> dict:
        return {
            "frechet": reference_frechet_distance(a, b, components=frechet_components),
            "kid": kernel_inception_distance(a, b, subset_size=kid_subset_size, subsets=kid_subsets, rng=rng),
        }

    arrays = [np.asarray(x, dtype=np.float64) for x in (real, generated, *(() if classical is None else (classical,)))]
    result = size_matched(metric, arrays[0], arrays[1:], repeats=repeats, seed=seed)
    k = min(int(frechet_components), arrays[0].shape[1], result["n_compared"] - 1)
    entries = [
        ("frechet", "embeddings", f"classifier embeddings, top {k} principal components of A", "Frechet",
         "squared embedding units"),
        ("kid", "embeddings", "classifier embeddings", "KID", "squared kernel units"),
    ]
    return _rows(result, entries, classical=classical is not None, reference=reference)


def summary_table(distances: pd.DataFrame, features: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (distribution, metric) with the comparisons and their reading side by side.

    Parameters
    ----------
    distances, features : DataFrame
        Outputs of :func:`matched_distance_table` and
        :func:`feature_distance_table`.

    Returns
    -------
    DataFrame
        The input columns plus ``generated_over_floor`` (real_vs_generated /
        real_vs_real_floor; NaN for unbiased metrics, whose floor is about 0),
        ``generated_floor_z`` ((real_vs_generated - real_vs_real_floor) /
        floor_sd, floor spreads above the floor), ``classical_over_floor``,
        ``classical_floor_z`` (the same for the classical set; NaN without
        one) and ``generated_beats_classical`` (None without a classical
        set).  Every ratio is measured at ``n_reference`` real vs
        ``n_compared`` compared items; the floor shrinks as ``1/sqrt(m)``.
    """
    table = pd.concat([t for t in (distances, features) if t is not None], ignore_index=True)
    gen, floor = table["real_vs_generated"].to_numpy(float), table["real_vs_real_floor"].to_numpy(float)
    cla, sd = table["real_vs_classical"].to_numpy(float), table["floor_sd"].to_numpy(float)
    biased = ~table["metric"].isin(UNBIASED_METRICS).to_numpy()
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        positive = biased & np.isfinite(floor) & (floor > 0)
        table["generated_over_floor"] = np.where(positive, gen / np.where(positive, floor, 1.0), np.nan)
        table["generated_floor_z"] = np.where(np.isfinite(sd) & (sd > 0), (gen - floor) / sd, np.nan)
        table["classical_over_floor"] = np.where(positive, cla / np.where(positive, floor, 1.0), np.nan)
        table["classical_floor_z"] = np.where(np.isfinite(sd) & (sd > 0), (cla - floor) / sd, np.nan)
    table["generated_beats_classical"] = [
        bool(g < c) if np.isfinite(g) and np.isfinite(c) else None for g, c in zip(gen, cla)
    ]
    return table


def write_table_html(table: pd.DataFrame, path, *, title: str, notes: list[str]) -> None:
    """A standalone HTML page with the table and explanatory notes (shown inline in the report)."""
    formatted = table.copy()
    for column in formatted.columns:
        if formatted[column].dtype.kind == "f":
            formatted[column] = formatted[column].map(lambda v: "—" if not np.isfinite(v) else f"{v:.4g}")
        elif formatted[column].dtype == object:
            formatted[column] = formatted[column].map(lambda v: "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v)
    body = formatted.to_html(index=False, border=0, classes="summary", escape=True)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; font-size: 13px; margin: 1em; }}
table.summary {{ border-collapse: collapse; }}
table.summary th, table.summary td {{ padding: 3px 8px; border-bottom: 1px solid #ccc; text-align: right; }}
table.summary td:first-child, table.summary td:nth-child(2), table.summary td:nth-child(3) {{ text-align: left; }}
</style></head>
<body><h3>{html.escape(title)}</h3>
{body}
<ul>{notes_html}</ul>
</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")


def write_csv(table: pd.DataFrame, path) -> None:
    """Write a table as CSV, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def read_json(path) -> dict:
    """Read a JSON file with an error that names it."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: cannot read JSON ({err})") from err
