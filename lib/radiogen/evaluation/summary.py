"""Summary tables: is a generated set as close to the real data as real data is to itself?

For each distribution of the paper's evaluation (pixel values, image mean,
image std, PyBDSF model flux, A50%, Delta+) the distances of
:mod:`radiogen.evaluation.distances` are computed between

* the real training set and a generated set,
* two disjoint seeded halves of the real set (the noise floor), and
* for LoTSS, the real set and the classical simulated survey (the baseline
  the paper argues against),

plus the Frechet distance between Gaussian fits of classifier embeddings.
:func:`summary_table` puts them side by side, one row per (distribution,
metric), so a reader sees whether the diffusion model beats the classical
simulation and how far it is above the noise floor.
"""

from __future__ import annotations

import html
import json
import logging

import numpy as np
import pandas as pd

from radiogen.errors import InputFileError
from radiogen.evaluation.distances import one_d_distances, split_halves
from radiogen.io import atomic_path

__all__ = [
    "DISTRIBUTIONS",
    "image_distributions",
    "image_set_distributions",
    "select_rows",
    "flux_column_for",
    "pybdsf_distributions",
    "distance_table",
    "noise_floor_table",
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
    ("model_flux", "PyBDSF model flux", "see model_flux_unit"),
    ("a50_pixels", "A50% (PyBDSF model)", "pixels"),
    ("delta_plus", "positive residual Delta+", "scaled 0..1 x pixels"),
]
_PYBDSF_KEYS = ("model_flux", "a50_pixels", "delta_plus")


def image_distributions(images, *, pixels_per_image: int | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-image pixel sample, mean and std of images (N, H, W) in [0, 1].

    ``pixel_value`` is (N, p): ``pixels_per_image`` pixels drawn without
    replacement from each image (all pixels when None).  Every image has the
    same number of pixels, so pooling equal-size per-image samples is an
    unbiased sample of the pooled pixel distribution, and halves of the set
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


def image_set_distributions(path, *, max_pixels: int | None, seed: int, chunk: int = 2048) -> dict[str, np.ndarray]:
    """:func:`image_distributions` of a whole image-set file, read in chunks.

    ``max_pixels`` bounds the total pixel sample (``ceil(max_pixels / N)``
    pixels per image); None keeps every pixel.
    """
    from radiogen.evaluation.imagesets import open_image_set

    rng = np.random.default_rng(seed)
    parts = []
    with open_image_set(path) as image_set:
        n = image_set.n_images
        if n == 0:
            raise InputFileError(f"{path}: image set is empty")
        per_image = None if max_pixels is None else max(1, -(-int(max_pixels) // n))
        for start in range(0, n, chunk):
            parts.append(image_distributions(image_set.images(start, min(n, start + chunk)), pixels_per_image=per_image, rng=rng))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def select_rows(distributions: dict[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """The per-image distributions of a subset of images."""
    return {key: value[rows] for key, value in distributions.items()}


def pybdsf_distributions(table: pd.DataFrame, *, flux_column: str, path="PyBDSF table") -> dict[str, np.ndarray]:
    """Model flux, A50% and Delta+ of the images PyBDSF modelled (``status == "ok"``)."""
    needed = ["index", "status", flux_column, "a50_pixels", "delta_plus"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputFileError(f"{path}: missing column(s) {', '.join(missing)}")
    ok = table[table["status"] == "ok"]
    return {
        "model_flux": ok[flux_column].to_numpy(dtype=np.float64),
        "a50_pixels": ok["a50_pixels"].to_numpy(dtype=np.float64),
        "delta_plus": ok["delta_plus"].to_numpy(dtype=np.float64),
    }


def flux_column_for(*tables: pd.DataFrame) -> str:
    """``model_flux_jy`` (Jy) when every table has it finite for its ok rows, else ``model_flux``."""
    for table in tables:
        ok = table[table["status"] == "ok"] if "status" in table.columns else table
        if "model_flux_jy" not in table.columns or not np.all(np.isfinite(ok["model_flux_jy"].to_numpy(dtype=float))):
            return "model_flux"
    return "model_flux_jy"


def _compare(a: dict, b: dict) -> pd.DataFrame:
    rows = []
    for key, label, unit in DISTRIBUTIONS:
        if key not in a or key not in b:
            continue
        try:
            d = one_d_distances(a[key], b[key], name=label)
        except Exception as err:  # an empty distribution (e.g. PyBDSF failed everywhere) is a row, not a crash
            log.warning("%s: %s", label, err)
            d = {"w1": np.nan, "ks": np.nan, "ks_pvalue": np.nan, "n_a": int(np.size(a[key])), "n_b": int(np.size(b[key]))}
        rows.append({"distribution": key, "label": label, "unit": unit, **d})
    return pd.DataFrame(rows, columns=["distribution", "label", "unit", "w1", "ks", "ks_pvalue", "n_a", "n_b"])


def distance_table(real: dict, other: dict) -> pd.DataFrame:
    """W1 and KS between matching distributions of two sets (dicts key -> values)."""
    return _compare(real, other)


def noise_floor_table(image_stats: dict, table: pd.DataFrame | None, *, flux_column: str, seed: int) -> pd.DataFrame:
    """W1 and KS between two disjoint seeded halves of one real set.

    ``image_stats`` comes from :func:`image_set_distributions`.  The halves
    split the image rows; the PyBDSF rows follow their ``index`` column into
    the same halves.
    """
    n = len(image_stats["image_mean"])
    half_a, half_b = split_halves(n, seed=seed)
    a = select_rows(image_stats, half_a)
    b = select_rows(image_stats, half_b)
    if table is not None:
        in_a = np.isin(table["index"].to_numpy(), half_a)
        a.update(pybdsf_distributions(table[in_a], flux_column=flux_column))
        b.update(pybdsf_distributions(table[~in_a], flux_column=flux_column))
    return _compare(a, b)


def summary_table(
    generated: pd.DataFrame,
    floor: pd.DataFrame,
    *,
    classical: pd.DataFrame | None = None,
    frechet: dict | None = None,
) -> pd.DataFrame:
    """One row per (distribution, metric) with the three comparisons side by side.

    Parameters
    ----------
    generated, floor, classical : DataFrame
        Outputs of :func:`distance_table` (real vs generated, real vs
        classical) and :func:`noise_floor_table`.
    frechet : dict, optional
        ``{"generated": FD, "real_halves": FD, "classical": FD or None}``.

    Returns
    -------
    DataFrame
        Columns ``distribution, metric, unit, real_vs_generated,
        real_vs_real_halves, real_vs_classical, generated_over_floor,
        generated_beats_classical, n_real, n_generated``.
    """
    rows = []
    floor = floor.set_index("distribution")
    classical = classical.set_index("distribution") if classical is not None else None
    for _, g in generated.iterrows():
        key = g["distribution"]
        for metric, unit in (("w1", g["unit"]), ("ks", "dimensionless")):
            gen = float(g[metric])
            flo = float(floor.loc[key, metric]) if key in floor.index else np.nan
            cla = float(classical.loc[key, metric]) if classical is not None and key in classical.index else np.nan
            rows.append(_row(g["label"], "W1" if metric == "w1" else "KS", unit, gen, flo, cla, g["n_a"], g["n_b"]))
    if frechet:
        cla = frechet.get("classical")
        rows.append(
            _row(
                "classifier embeddings",
                "Frechet",
                "squared embedding units",
                frechet["generated"],
                frechet.get("real_halves", np.nan),
                np.nan if cla is None else cla,
                frechet.get("n_real", np.nan),
                frechet.get("n_generated", np.nan),
            )
        )
    return pd.DataFrame(rows)


def _row(label, metric, unit, gen, floor, classical, n_real, n_gen) -> dict:
    return {
        "distribution": label,
        "metric": metric,
        "unit": unit,
        "real_vs_generated": gen,
        "real_vs_real_halves": floor,
        "real_vs_classical": classical,
        "generated_over_floor": gen / floor if floor and np.isfinite(floor) and floor > 0 else np.nan,
        "generated_beats_classical": (bool(gen < classical) if np.isfinite(classical) and np.isfinite(gen) else None),
        "n_real": n_real,
        "n_generated": n_gen,
    }


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
