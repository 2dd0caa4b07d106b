"""The memorisation analysis of paper Appendix A, from image-set files to figure and tables.

:mod:`radiogen.evaluation.similarity` holds the measures (alignment, SSIM,
nearest training images, the memorisation number); this module runs them on a
generated set and its training set: row selection (seeded, from the global
seed's ``evaluation.similarity_*`` streams), alignment, the nearest-neighbour
search, the reference distribution of training images against each other,
and the outputs (HDF5 of indices and SSIMs, JSON, figure, HTML table).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.evaluation.imagesets import open_image_set
from radiogen.evaluation.similarity import (
    SSIM_C1,
    SSIM_C2,
    align_images,
    memorisation_number,
    nearest_training,
    plot_nearest,
    reference_nearest,
)
from radiogen.evaluation.summary import write_table_html
from radiogen.io import atomic_path, write_json_atomic
from radiogen.seeds import generator as seed_generator
from radiogen.seeds import integer as seed_stream

__all__ = ["memorisation_analysis"]

log = logging.getLogger(__name__)


def _training_rows(path) -> np.ndarray:
    """Rows of the training split (/split == 0), or all rows of a set without a split."""
    with open_image_set(path) as s:
        split = s.split()
        n = s.n_images
    return np.arange(n) if split is None else np.flatnonzero(split == 0)


def _read_rows(path, rows) -> np.ndarray:
    with open_image_set(path) as s:
        images = s.images()
    return images[rows]


def memorisation_analysis(
    generated_path: str | Path,
    training_path: str | Path,
    *,
    settings: dict | None,
    seed: int,
    label: str,
    output_h5: str | Path,
    output_json: str | Path,
    output_figure: str | Path,
    output_html: str | Path,
) -> dict:
    """Nearest training images of generated ones by SSIM and the memorisation number.

    Parameters
    ----------
    generated_path, training_path : str or Path
        Image sets (shared HDF5 layout); training rows with ``/split == 0``.
    settings : dict or None, keyword-only
        ``evaluation.similarity`` keys (missing ones take the schema defaults).
    seed : int, keyword-only
        Global seed.
    label : str, keyword-only
        Name of the generated set in titles and tables.
    output_h5, output_json, output_figure, output_html : str or Path, keyword-only
        Indices and SSIMs, the result, the figure of the most similar (or
        random) samples and their nearest training images, and the table.

    Returns
    -------
    dict
        What ``output_json`` holds: the memorisation number, its threshold
        and counts, settings and run time.
    """
    defaults = section_defaults("evaluation.similarity")
    unknown = sorted(set(settings or {}) - set(defaults))
    if unknown:
        raise ConfigError(f"evaluation.similarity: unknown key(s) {', '.join(unknown)}")
    s = {**defaults, **(settings or {})}
    if s["show"] not in ("most_similar", "random"):
        raise ConfigError(f"evaluation.similarity.show must be most_similar or random, got {s['show']!r}")
    started = time.monotonic()
    train_rows = _training_rows(training_path)
    if s["max_training"] is not None and train_rows.size > s["max_training"]:
        rng = seed_generator(seed, "evaluation.similarity_training")
        train_rows = np.sort(rng.choice(train_rows, size=int(s["max_training"]), replace=False))
    training = _read_rows(training_path, train_rows)
    with open_image_set(generated_path) as g:
        n_gen = g.n_images
    gen_rows = np.arange(n_gen)
    if s["n_generated"] is not None and n_gen > s["n_generated"]:
        rng = seed_generator(seed, "evaluation.similarity_generated")
        gen_rows = np.sort(rng.choice(n_gen, size=int(s["n_generated"]), replace=False))
    generated = _read_rows(generated_path, gen_rows)
    if generated.shape[1:] != training.shape[1:]:
        raise InputFileError(
            f"{generated_path}: image size {generated.shape[1:]} differs from training {training.shape[1:]} in {training_path}"
        )
    log.info("aligning %d generated and %d training images", len(generated), len(training))
    align = dict(n_sigma=float(s["tau_pca_sigma"]), weights=s["pca_weights"])
    gen_aligned, _ = align_images(generated, **align)
    train_aligned, _ = align_images(training, **align)
    opts = dict(window=s["window"], flips=bool(s["flips"]), batch_size=int(s["batch_size"]))
    nearest_s, nearest_i = nearest_training(gen_aligned, train_aligned, k=int(s["k"]), **opts)
    ref_s, ref_rows = reference_nearest(
        train_aligned, n_reference=s["n_reference"], seed=seed_stream(seed, "evaluation.similarity_reference"), **opts
    )
    result = memorisation_number(nearest_s[:, 0], ref_s, percentile=float(s["percentile"]))
    result.update(
        generated_file=str(generated_path),
        training_file=str(training_path),
        n_training=int(len(training)),
        settings=s,
        c1=SSIM_C1,
        c2=SSIM_C2,
        seconds=time.monotonic() - started,
    )
    n_show = min(int(s["n_show"]), len(generated))
    if s["show"] == "most_similar":
        show = np.argsort(-nearest_s[:, 0], kind="stable")[:n_show]
    else:
        show = np.sort(seed_generator(seed, "evaluation.similarity_figure").choice(len(generated), n_show, replace=False))
    plot_nearest(
        gen_aligned,
        train_aligned,
        nearest_i,
        nearest_s,
        show,
        output_figure,
        generated_ids=gen_rows,
        training_ids=train_rows,
        title=(
            f"{label}: {'most similar' if s['show'] == 'most_similar' else 'random'} samples of {len(generated)} "
            f"and their {nearest_i.shape[1]} nearest training images (aligned; SSIM {s['window']})"
        ),
    )
    with atomic_path(output_h5) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("generated_index", data=gen_rows)
            h5.create_dataset("nearest_index", data=train_rows[nearest_i])
            h5.create_dataset("nearest_ssim", data=nearest_s)
            h5.create_dataset("reference_index", data=train_rows[ref_rows])
            h5.create_dataset("reference_nearest_ssim", data=ref_s)
            h5.attrs["threshold_ssim"] = result["threshold_ssim"]
            h5.attrs["fraction"] = result["fraction"]
    write_json_atomic(result, output_json)
    write_table_html(
        pd.DataFrame(
            [
                {
                    "generated set": label,
                    "generated images": result["n_generated"],
                    "training images": result["n_training"],
                    "reference images": result["n_reference"],
                    f"SSIM threshold (p{result['percentile']:g})": result["threshold_ssim"],
                    "memorised (above threshold)": result["n_above"],
                    "memorisation number": result["fraction"],
                    "expected if not memorised": result["expected_fraction_if_not_memorised"],
                    "median nearest SSIM, generated": result["generated_nearest_ssim_median"],
                    "median nearest SSIM, training": result["reference_nearest_ssim_median"],
                }
            ]
        ),
        output_html,
        title=f"Memorisation number of {label}",
        notes=[
            "Nearest SSIM: the highest SSIM of an image with any training image (another one, for training images), "
            f"after principal-axis alignment; SSIM window {s['window']}, flips {s['flips']}, c1 = 1e-4, c2 = 9e-4.",
            "Memorisation number: share of generated images whose nearest SSIM exceeds the given percentile of the "
            "training images' nearest SSIM; about 1 - percentile/100 for images that are new draws from the training distribution.",
        ],
    )
    log.info(
        "memorisation: %d of %d generated images above the %.1fth percentile SSIM %.4f (%.2f%%)",
        result["n_above"], result["n_generated"], result["percentile"], result["threshold_ssim"], 100 * result["fraction"],
    )
    return result
