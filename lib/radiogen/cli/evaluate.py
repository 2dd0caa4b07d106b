"""``radiogen evaluate-*``: class conditioning, similarity, distances and summary tables.

Subcommands (each one workflow rule, each writing its own outputs):

* ``evaluate-classify``            classifier probabilities + embeddings of one image set
* ``evaluate-class-conditioning``  accuracy-vs-omega table, confusion matrices (Fig. 19, Table 7)
* ``evaluate-similarity``          nearest training images by SSIM, memorisation number (App. A)
* ``evaluate-distances``           W1 / KS between a real and another image set
* ``evaluate-noise-floor``         W1 / KS between two halves of a real set
* ``evaluate-frechet``             Frechet distance of classifier embeddings
* ``evaluate-summary``             one table per generated set from the above

Seeds: every subcommand takes ``--seed`` (the workflow passes ``config["seed"]``)
and adds a fixed offset per use, listed in :data:`SEED_OFFSETS`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from radiogen.cli.options import json_object
from radiogen.errors import ConfigError, InputFileError
from radiogen.io import atomic_path, write_json_atomic

log = logging.getLogger("radiogen.evaluate")

#: Offsets added to ``--seed`` so that each random draw has its own stream.
SEED_OFFSETS = {
    "classify_subset": 601,
    "similarity_generated": 602,
    "similarity_reference": 603,
    "similarity_figure": 604,
    "halves": 605,
    "pixels": 606,
    "similarity_training": 607,
}

CLASSES_DEFAULTS = {"batch_size": 256, "device": "cpu", "max_images": None, "threads": 2}
SIMILARITY_DEFAULTS = {
    "n_generated": 200,
    "n_reference": 500,
    "max_training": None,
    "k": 5,
    "tau_pca_sigma": 5.0,
    "pca_weights": "intensity",
    "window": "global",
    "flips": True,
    "percentile": 99.0,
    "batch_size": 2048,
    "n_show": 6,
    "show": "most_similar",
    "threads": 2,
}
SUMMARY_DEFAULTS = {"max_pixels": 2_000_000}


def _settings(text: str | None, defaults: dict, name: str) -> dict:
    given = json_object(text, option=f"--settings for {name}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"evaluation.{name}: unknown key(s) {', '.join(unknown)}")
    return {**defaults, **given}


def register(subparsers) -> None:
    sub = subparsers
    p = sub.add_parser("evaluate-classify", help="classifier probabilities and embeddings of one image set")
    p.add_argument("--images", required=True, help="image-set HDF5 (/images in [0, 1])")
    p.add_argument("--classifier", required=True, help="classifier.pt")
    p.add_argument("--output", required=True, help="output HDF5 with /probabilities, /embeddings")
    p.add_argument("--split-dataset", default=None, help="keep rows where this dataset ...")
    p.add_argument("--split-value", type=int, default=None, help="... equals this value")
    p.add_argument("--settings", default=None, help="JSON of evaluation.classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("evaluate-class-conditioning", help="accuracy table and confusion matrices")
    p.add_argument("--real", required=True, help="scores of the real test split (from classify)")
    p.add_argument("--generated", nargs="+", required=True, help="scores of generated sets")
    p.add_argument("--main-omega", type=float, required=True, help="omega of the main generated set")
    p.add_argument("--output-table", required=True, help="accuracy CSV")
    p.add_argument("--output-html", required=True, help="accuracy table as HTML")
    p.add_argument("--output-figure", required=True, help="confusion matrices PNG")
    p.set_defaults(func=cmd_class_conditioning)

    p = sub.add_parser("evaluate-similarity", help="nearest training images (SSIM) and memorisation number")
    p.add_argument("--generated", required=True, help="generated image set")
    p.add_argument("--training", required=True, help="training set (rows with /split == 0 are used)")
    p.add_argument("--label", default="generated", help="name of the generated set for titles")
    p.add_argument("--settings", default=None, help="JSON of evaluation.similarity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--output-json", required=True)
    p.add_argument("--output-figure", required=True)
    p.add_argument("--output-h5", required=True)
    p.add_argument("--output-html", required=True, help="memorisation number as an HTML table")
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("evaluate-distances", help="W1 and KS between a real and another image set")
    p.add_argument("--real", required=True)
    p.add_argument("--other", required=True)
    p.add_argument("--real-pybdsf", default=None, help="PyBDSF CSV of the real set")
    p.add_argument("--other-pybdsf", default=None, help="PyBDSF CSV of the other set")
    p.add_argument("--settings", default=None, help="JSON of evaluation.summary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="CSV")
    p.set_defaults(func=cmd_distances)

    p = sub.add_parser("evaluate-noise-floor", help="W1 and KS between two halves of a real set")
    p.add_argument("--real", required=True)
    p.add_argument("--real-pybdsf", default=None)
    p.add_argument("--settings", default=None, help="JSON of evaluation.summary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="CSV")
    p.set_defaults(func=cmd_noise_floor)

    p = sub.add_parser("evaluate-frechet", help="Frechet distance of classifier embeddings")
    p.add_argument("--real", required=True, help="scores (classify output) of the real set")
    p.add_argument("--generated", required=True, help="scores of the generated set")
    p.add_argument("--classical", default=None, help="scores of the classical simulation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="JSON")
    p.set_defaults(func=cmd_frechet)

    p = sub.add_parser("evaluate-summary", help="summary table of one generated set")
    p.add_argument("--generated", required=True, help="distances CSV real vs generated")
    p.add_argument("--noise-floor", required=True, help="noise-floor CSV of the real set")
    p.add_argument("--classical", default=None, help="distances CSV real vs classical")
    p.add_argument("--frechet", default=None, help="Frechet JSON")
    p.add_argument("--title", required=True)
    p.add_argument("--output-csv", required=True)
    p.add_argument("--output-html", required=True)
    p.set_defaults(func=cmd_summary)


def _set_threads(threads) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def cmd_classify(args) -> int:
    from radiogen.evaluation.classes import classify_file

    _set_threads(args.threads)
    if (args.split_dataset is None) != (args.split_value is None):
        raise ConfigError("--split-dataset and --split-value go together")
    s = _settings(args.settings, CLASSES_DEFAULTS, "classes")
    result = classify_file(
        args.images,
        args.classifier,
        args.output,
        split_dataset=args.split_dataset,
        split_value=args.split_value,
        max_images=s["max_images"],
        seed=args.seed + SEED_OFFSETS["classify_subset"],
        batch_size=int(s["batch_size"]),
        device=s["device"],
    )
    log.info("%s: %d images, accuracy %s", args.images, result["n_images"], result["accuracy"])
    return 0


def cmd_class_conditioning(args) -> int:
    from radiogen.evaluation.classes import (
        accuracy_table,
        class_metrics,
        plot_confusions,
        read_scores,
    )
    from radiogen.evaluation.summary import write_csv, write_table_html

    real = read_scores(args.real)
    names = real["class_names"]
    if np.any(real["label"] < 0):
        raise InputFileError(f"{args.real}: the real test split has no labels")
    entries = [("real test split", float("nan"), class_metrics(real["label"], real["predicted"], class_names=names))]
    panels = [("real test split", entries[0][2]["confusion"])]
    generated = []
    for path in args.generated:
        scores = read_scores(path)
        if np.any(scores["label"] < 0):
            raise InputFileError(f"{path}: generated set has no /label (class it was conditioned on)")
        if scores["class_names"] != names:
            raise InputFileError(f"{path}: class names {scores['class_names']} differ from {names}")
        generated.append((scores["guidance"], path, class_metrics(scores["label"], scores["predicted"], class_names=names)))
    for omega, _, metrics in sorted(generated, key=lambda g: g[0]):
        entries.append((f"generated, omega={omega:g}", omega, metrics))
    main = [g for g in generated if np.isclose(g[0], args.main_omega)]
    if not main:
        raise InputFileError(f"no generated set has guidance omega = {args.main_omega}")
    panels.append((f"generated, omega={args.main_omega:g}", main[0][2]["confusion"]))
    table = accuracy_table(entries)
    write_csv(table, args.output_table)
    write_table_html(
        table,
        args.output_html,
        title="Classifier accuracy on the real FIRST test split and on class-conditioned generated sets",
        notes=[
            "accuracy_percent: share of images whose predicted class equals the true (real) or conditioned (generated) class.",
            "recall_<class>_percent: the same within one class (diagonal of the row-normalised confusion matrix).",
            "Paper (Table 7): 81.5% on the real test split, 83.4% at omega = 0.75.",
        ],
    )
    plot_confusions(panels, names, args.output_figure)
    return 0


def _training_rows(path) -> np.ndarray:
    from radiogen.evaluation.imagesets import open_image_set

    with open_image_set(path) as s:
        split = s.split()
        n = s.n_images
    return np.arange(n) if split is None else np.flatnonzero(split == 0)


def _read_rows(path, rows) -> np.ndarray:
    from radiogen.evaluation.imagesets import open_image_set

    with open_image_set(path) as s:
        images = s.images()
    return images[rows]


def cmd_similarity(args) -> int:
    from radiogen.evaluation import similarity as sim

    _set_threads(args.threads)
    s = _settings(args.settings, SIMILARITY_DEFAULTS, "similarity")
    if s["show"] not in ("most_similar", "random"):
        raise ConfigError(f"evaluation.similarity.show must be most_similar or random, got {s['show']!r}")
    started = time.monotonic()
    train_rows = _training_rows(args.training)
    if s["max_training"] is not None and train_rows.size > s["max_training"]:
        rng = np.random.default_rng(args.seed + SEED_OFFSETS["similarity_training"])
        train_rows = np.sort(rng.choice(train_rows, size=int(s["max_training"]), replace=False))
    training = _read_rows(args.training, train_rows)
    from radiogen.evaluation.imagesets import open_image_set

    with open_image_set(args.generated) as g:
        n_gen = g.n_images
    gen_rows = np.arange(n_gen)
    if s["n_generated"] is not None and n_gen > s["n_generated"]:
        rng = np.random.default_rng(args.seed + SEED_OFFSETS["similarity_generated"])
        gen_rows = np.sort(rng.choice(n_gen, size=int(s["n_generated"]), replace=False))
    generated = _read_rows(args.generated, gen_rows)
    if generated.shape[1:] != training.shape[1:]:
        raise InputFileError(
            f"{args.generated}: image size {generated.shape[1:]} differs from training {training.shape[1:]} in {args.training}"
        )
    log.info("aligning %d generated and %d training images", len(generated), len(training))
    align = dict(n_sigma=float(s["tau_pca_sigma"]), weights=s["pca_weights"])
    gen_aligned, _ = sim.align_images(generated, **align)
    train_aligned, _ = sim.align_images(training, **align)
    opts = dict(window=s["window"], flips=bool(s["flips"]), batch_size=int(s["batch_size"]))
    nearest_s, nearest_i = sim.nearest_training(gen_aligned, train_aligned, k=int(s["k"]), **opts)
    ref_s, ref_rows = sim.reference_nearest(
        train_aligned, n_reference=s["n_reference"], seed=args.seed + SEED_OFFSETS["similarity_reference"], **opts
    )
    result = sim.memorisation_number(nearest_s[:, 0], ref_s, percentile=float(s["percentile"]))
    result.update(
        generated_file=str(args.generated),
        training_file=str(args.training),
        n_training=int(len(training)),
        settings=s,
        c1=sim.SSIM_C1,
        c2=sim.SSIM_C2,
        seconds=time.monotonic() - started,
    )
    n_show = min(int(s["n_show"]), len(generated))
    if s["show"] == "most_similar":
        show = np.argsort(-nearest_s[:, 0], kind="stable")[:n_show]
    else:
        show = np.sort(np.random.default_rng(args.seed + SEED_OFFSETS["similarity_figure"]).choice(len(generated), n_show, replace=False))
    sim.plot_nearest(
        gen_aligned,
        train_aligned,
        nearest_i,
        nearest_s,
        show,
        args.output_figure,
        generated_ids=gen_rows,
        training_ids=train_rows,
        title=(
            f"{args.label}: {'most similar' if s['show'] == 'most_similar' else 'random'} samples of {len(generated)} "
            f"and their {nearest_i.shape[1]} nearest training images (aligned; SSIM {s['window']})"
        ),
    )
    import h5py

    with atomic_path(args.output_h5) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("generated_index", data=gen_rows)
            h5.create_dataset("nearest_index", data=train_rows[nearest_i])
            h5.create_dataset("nearest_ssim", data=nearest_s)
            h5.create_dataset("reference_index", data=train_rows[ref_rows])
            h5.create_dataset("reference_nearest_ssim", data=ref_s)
            h5.attrs["threshold_ssim"] = result["threshold_ssim"]
            h5.attrs["fraction"] = result["fraction"]
    write_json_atomic(result, args.output_json)
    from radiogen.evaluation.summary import write_table_html

    write_table_html(
        pd.DataFrame(
            [
                {
                    "generated set": args.label,
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
        args.output_html,
        title=f"Memorisation number of {args.label}",
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
    return 0


def _read_pybdsf(path) -> pd.DataFrame | None:
    if path is None:
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: cannot read PyBDSF table ({err})") from err


def _flux_unit(column: str) -> str:
    return "Jy" if column == "model_flux_jy" else "scaled image units x beam"


def cmd_distances(args) -> int:
    from radiogen.evaluation import summary as sm

    s = _settings(args.settings, SUMMARY_DEFAULTS, "summary")
    seed = args.seed + SEED_OFFSETS["pixels"]
    real = sm.image_set_distributions(args.real, max_pixels=s["max_pixels"], seed=seed)
    other = sm.image_set_distributions(args.other, max_pixels=s["max_pixels"], seed=seed + 1)
    real_t, other_t = _read_pybdsf(args.real_pybdsf), _read_pybdsf(args.other_pybdsf)
    column = None
    if real_t is not None and other_t is not None:
        column = sm.flux_column_for(real_t, other_t)
        real.update(sm.pybdsf_distributions(real_t, flux_column=column, path=args.real_pybdsf))
        other.update(sm.pybdsf_distributions(other_t, flux_column=column, path=args.other_pybdsf))
    table = sm.distance_table(real, other)
    if column:
        table.loc[table["distribution"] == "model_flux", "unit"] = _flux_unit(column)
    sm.write_csv(table, args.output)
    log.info("distances %s vs %s:\n%s", args.real, args.other, table.to_string(index=False))
    return 0


def cmd_noise_floor(args) -> int:
    from radiogen.evaluation import summary as sm

    s = _settings(args.settings, SUMMARY_DEFAULTS, "summary")
    stats = sm.image_set_distributions(args.real, max_pixels=s["max_pixels"], seed=args.seed + SEED_OFFSETS["pixels"])
    table_in = _read_pybdsf(args.real_pybdsf)
    column = sm.flux_column_for(table_in) if table_in is not None else "model_flux"
    table = sm.noise_floor_table(stats, table_in, flux_column=column, seed=args.seed + SEED_OFFSETS["halves"])
    if table_in is not None:
        table.loc[table["distribution"] == "model_flux", "unit"] = _flux_unit(column)
    sm.write_csv(table, args.output)
    log.info("noise floor of %s:\n%s", args.real, table.to_string(index=False))
    return 0


def cmd_frechet(args) -> int:
    from radiogen.evaluation.classes import read_scores
    from radiogen.evaluation.distances import (
        frechet_distance,
        gaussian_fit,
        split_halves,
    )

    real = read_scores(args.real)["embeddings"]
    gen = read_scores(args.generated)["embeddings"]
    fit_real = gaussian_fit(real)
    result = {
        "generated": frechet_distance(*fit_real, *gaussian_fit(gen)),
        "n_real": len(real),
        "n_generated": len(gen),
        "embedding_dim": int(real.shape[1]),
        "real_file": str(args.real),
        "generated_file": str(args.generated),
    }
    a, b = split_halves(len(real), seed=args.seed + SEED_OFFSETS["halves"])
    result["real_halves"] = frechet_distance(*gaussian_fit(real[a]), *gaussian_fit(real[b]))
    result["classical"] = None
    if args.classical:
        classical = read_scores(args.classical)["embeddings"]
        result["classical"] = frechet_distance(*fit_real, *gaussian_fit(classical))
        result["n_classical"] = len(classical)
    write_json_atomic(result, args.output)
    log.info("Frechet distance: %s", result)
    return 0


def cmd_summary(args) -> int:
    from radiogen.evaluation import summary as sm

    def read(path):
        try:
            return pd.read_csv(path)
        except (OSError, ValueError) as err:
            raise InputFileError(f"{path}: cannot read distance table ({err})") from err

    frechet = sm.read_json(args.frechet) if args.frechet else None
    table = sm.summary_table(
        read(args.generated),
        read(args.noise_floor),
        classical=read(args.classical) if args.classical else None,
        frechet=frechet,
    )
    sm.write_csv(table, args.output_csv)
    notes = [
        "W1: Wasserstein-1 distance (area between the empirical CDFs, in the unit of the quantity); "
        "KS: two-sample Kolmogorov-Smirnov statistic (largest CDF difference, 0..1). Smaller is closer.",
        "real_vs_real_halves: the same distance between two disjoint seeded halves of the real set, "
        "the noise floor (each half has half the images, so the floor is slightly pessimistic).",
        "generated_over_floor: real_vs_generated / real_vs_real_halves; about 1 means indistinguishable at this sample size.",
        "Frechet: distance between Gaussian fits of the FIRST morphology classifier's 512-d embeddings "
        "(for LoTSS a generic feature space: the classifier never saw LoTSS images).",
        "PyBDSF rows use only images PyBDSF modelled (status ok).",
    ]
    if args.classical:
        notes.append("real_vs_classical: the classical simulated survey; generated_beats_classical is True where the diffusion model is closer to the real data.")
    sm.write_table_html(table, args.output_html, title=args.title, notes=notes)
    log.info("summary:\n%s", table.to_string(index=False))
    return 0
