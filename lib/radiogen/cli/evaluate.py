"""``radiogen evaluate-*``: class conditioning, similarity, distances and summary tables.

Subcommands (each one workflow rule, each writing its own outputs):

* ``evaluate classify``            classifier probabilities + embeddings of one image set
* ``evaluate class-conditioning``  accuracy-vs-guidance table, confusion matrices (Fig. 19, Table 7)
* ``evaluate similarity``          nearest training images by SSIM, memorisation number (App. A)
* ``evaluate distances``           size-matched W1 / KS: real vs generated (and classical) and the floor
* ``evaluate feature-distances``   size-matched Frechet distance and KID of classifier embeddings
* ``evaluate summary``             one table per generated set from the two above
* ``evaluate overview``            the report's first page: judge accuracy and floor ratios
* ``evaluate size``                measured vs requested size (size-conditioned LoTSS model)

Seeds: every subcommand takes ``--seed``, the global seed (the workflow passes
``config["seed"]``); each draw uses its own ``evaluation.*`` stream of radiogen.seeds.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from radiogen.cli.options import json_object, nonnegative_float
from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.seeds import integer as seed_stream

log = logging.getLogger("radiogen.evaluate")


#: Defaults of the evaluation sub-sections, from their schemas.
CLASSES_DEFAULTS = section_defaults("evaluation.classes")
SUMMARY_DEFAULTS = section_defaults("evaluation.summary")
SIZE_DEFAULTS = section_defaults("evaluation.size")


def _settings(text: str | None, defaults: dict, name: str) -> dict:
    given = json_object(text, option=f"--settings for {name}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"evaluation.{name}: unknown key(s) {', '.join(unknown)}")
    return {**defaults, **given}


def cmd_size(args) -> int:
    from radiogen.evaluation.size import size_conditioning

    size_conditioning({"real": args.real, "generated": args.generated}, args.output_json, args.figure,
                      seed=args.seed, settings=_settings(args.settings, SIZE_DEFAULTS, "size"),
                      max_images=args.max_images)
    return 0


def register(topics) -> None:
    sub = topics.topic("evaluate")
    p = sub.add_parser("classify", help="classifier probabilities and embeddings of one image set")
    p.add_argument("--images", required=True, help="image-set HDF5 (/images in [0, 1])")
    p.add_argument("--classifier", required=True, help="classifier.pt")
    p.add_argument("--output", required=True, help="output HDF5 with /probabilities, /embeddings")
    p.add_argument("--split-dataset", default=None, help="keep rows where this dataset ...")
    p.add_argument("--split-value", type=int, nargs="+", default=None, help="... equals one of these values")
    p.add_argument("--settings", default=None, help="JSON of evaluation.classes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("class-conditioning", help="accuracy table and confusion matrices")
    p.add_argument("--real", required=True, help="scores of the real test split (from classify)")
    p.add_argument("--generated", nargs="+", required=True, help="scores of generated sets")
    p.add_argument("--main-guidance", type=nonnegative_float, required=True, help="guidance of the main generated set")
    p.add_argument("--output-table", required=True, help="accuracy CSV")
    p.add_argument("--output-html", required=True, help="accuracy table as HTML")
    p.add_argument("--output-figure", required=True, help="confusion matrices PNG")
    p.set_defaults(func=cmd_class_conditioning)

    p = sub.add_parser("similarity", help="nearest training images (SSIM) and memorisation number")
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

    p = sub.add_parser("distances", help="size-matched W1 and KS of real vs generated (and classical) with the floor")
    p.add_argument("--real", required=True, help="real image set")
    p.add_argument("--generated", required=True, help="generated image set")
    p.add_argument("--classical", default=None, help="classical simulated image set (LoTSS)")
    p.add_argument("--real-pybdsf", default=None, help="PyBDSF CSV of the real set")
    p.add_argument("--generated-pybdsf", default=None, help="PyBDSF CSV of the generated set")
    p.add_argument("--classical-pybdsf", default=None, help="PyBDSF CSV of the classical set")
    p.add_argument("--settings", default=None, help="JSON of evaluation.summary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="CSV")
    p.set_defaults(func=cmd_distances)

    p = sub.add_parser("feature-distances", help="size-matched Frechet distance and KID of classifier embeddings")
    p.add_argument("--real", required=True, help="scores (classify output) of the real set")
    p.add_argument("--generated", required=True, help="scores of the generated set")
    p.add_argument("--classical", default=None, help="scores of the classical simulation")
    p.add_argument("--settings", default=None, help="JSON of evaluation.summary")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="CSV")
    p.set_defaults(func=cmd_feature_distances)

    p = sub.add_parser("summary", help="summary table of one generated set")
    p.add_argument("--distances", required=True, help="CSV of evaluate-distances")
    p.add_argument("--features", default=None, help="CSV of evaluate-feature-distances")
    p.add_argument("--title", required=True)
    p.add_argument("--output-csv", required=True)
    p.add_argument("--output-html", required=True)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("size", help="measured vs requested source size, real and generated")
    p.add_argument("--real", required=True,
                   help="training_set.h5 with /size (its context's size, arcsec) and the size measure's settings")
    p.add_argument("--generated", required=True, help="samples.h5 of a size-conditioned model (/size, /peak_flux)")
    p.add_argument("--settings", default=None, help="JSON of evaluation.size (flux_bins, n_shuffles, max_images)")
    p.add_argument("--seed", type=int, default=0, help="global seed (stream evaluation.size_null)")
    p.add_argument("--max-images", type=int, default=None,
                   help="measure at most this many per set (overrides evaluation.size.max_images)")
    p.add_argument("--output-json", required=True)
    p.add_argument("--figure", required=True)
    p.set_defaults(func=cmd_size)

    p = sub.add_parser("overview", help="one-page table of what the run achieved")
    p.add_argument("--accuracy", required=True, help="accuracy CSV of evaluate-class-conditioning")
    p.add_argument("--summary", action="append", required=True, metavar="DATASET=CSV",
                   help="summary CSV of one dataset (repeatable), e.g. first=results/evaluation/summary/first.csv")
    p.add_argument("--main-guidance", type=nonnegative_float, required=True, help="guidance of the main generated FIRST set")
    p.add_argument("--size-json", default=None, help="size_conditioning.json (size-conditioned LoTSS model)")
    p.add_argument("--skymap", default=None, help="validation.tsv of the simulated map")
    p.add_argument("--output-csv", required=True)
    p.add_argument("--output-html", required=True)
    p.set_defaults(func=cmd_overview)


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
        seed=seed_stream(args.seed, "evaluation.classify_subset"),
        batch_size=int(s["batch_size"]),
        device=s["device"],
    )
    log.info("%s: %d images, accuracy %s", args.images, result["n_images"], result["accuracy"])
    return 0


def cmd_class_conditioning(args) -> int:
    from radiogen.evaluation.classes import (
        accuracy_table,
        class_metrics,
        paired_tests,
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
    generated, scores_by_guidance = [], {}
    for path in args.generated:
        scores = read_scores(path)
        if np.any(scores["label"] < 0):
            raise InputFileError(f"{path}: generated set has no /label (class it was conditioned on)")
        if scores["class_names"] != names:
            raise InputFileError(f"{path}: class names {scores['class_names']} differ from {names}")
        if any(np.isclose(scores["guidance"], w) for w in scores_by_guidance):
            raise InputFileError(f"{path}: a second generated set at guidance {scores['guidance']:g}")
        scores_by_guidance[scores["guidance"]] = scores
        generated.append((scores["guidance"], path, class_metrics(scores["label"], scores["predicted"], class_names=names)))
    for guidance, _, metrics in sorted(generated, key=lambda g: g[0]):
        entries.append((f"generated, guidance {guidance:g}", guidance, metrics))
    main = [g for g in generated if np.isclose(g[0], args.main_guidance)]
    if not main:
        raise InputFileError(f"no generated set has guidance = {args.main_guidance}")
    panels.append((f"generated, guidance {args.main_guidance:g}", main[0][2]["confusion"]))
    table = accuracy_table(entries, paired=paired_tests(scores_by_guidance, main_guidance=args.main_guidance))
    write_csv(table, args.output_table)
    write_table_html(
        table,
        args.output_html,
        title="Classifier accuracy on the real FIRST test split and on class-conditioned generated sets",
        notes=[
            "accuracy_percent: share of images whose predicted class equals the true (real) or conditioned (generated) class; "
            "accuracy_low_percent .. accuracy_high_percent: its 1-sigma (68.27%) Wilson score interval, "
            "which stays inside 0..100% near 0 or 1.",
            "recall_<class>_percent: the same within one class (diagonal of the row-normalised confusion matrix), "
            "with its Wilson interval.",
            f"Paired comparison with the main guidance {args.main_guidance:g}: sets sampled from the same latents "
            "(same seed, model, conditioning and image indices) are compared image by image. pairs_right_only_here / "
            "pairs_right_only_at_main count the images classified correctly at only one of the two guidance values; "
            "mcnemar_p_exact is McNemar's exact two-sided p-value (binomial test of these discordant pairs), "
            "mcnemar_p_mid its mid-p value. paired_with_main says why a set is not paired when it is not.",
            "Paper (Table 7): 81.5% on the real test split, 83.4% at guidance 0.75.",
        ],
    )
    plot_confusions(panels, names, args.output_figure)
    return 0


def cmd_similarity(args) -> int:
    from radiogen.evaluation.memorisation import memorisation_analysis

    _set_threads(args.threads)
    memorisation_analysis(args.generated, args.training, settings=json_object(args.settings, option="--settings"),
                          seed=args.seed, label=args.label, output_h5=args.output_h5, output_json=args.output_json,
                          output_figure=args.output_figure, output_html=args.output_html)
    return 0


def _read_csv(path, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: cannot read {what} ({err})") from err


def cmd_distances(args) -> int:
    from radiogen.evaluation import summary as sm
    from radiogen.evaluation.imagesets import open_image_set
    from radiogen.evaluation.pybdsf_shards import model_flux_columns

    s = _settings(args.settings, SUMMARY_DEFAULTS, "summary")
    if args.classical_pybdsf and not args.classical:
        raise ConfigError("--classical-pybdsf needs --classical")
    paths = {"real": args.real, "generated": args.generated}
    pybdsf = {"real": args.real_pybdsf, "generated": args.generated_pybdsf}
    if args.classical:
        paths["classical"], pybdsf["classical"] = args.classical, args.classical_pybdsf
    with open_image_set(args.real) as real_set:
        n_real = real_set.n_images
    # One pixel count per image for every set, so that equal image counts mean equal pixel counts.
    per_image = sm.pixels_per_image(s["max_pixels"], n_real)
    sets = {name: sm.image_set_distributions(path, pixels_per_image=per_image,
                                             seed=seed_stream(args.seed, "evaluation.pixels", k))
            for k, (name, path) in enumerate(paths.items())}
    given = [name for name, path in pybdsf.items() if path is not None]
    if given and len(given) != len(pybdsf):
        raise ConfigError(f"PyBDSF tables given for {', '.join(given)} only: give one for every set or none")
    if given:
        tables = {name: _read_csv(path, "PyBDSF table") for name, path in pybdsf.items()}
        columns = model_flux_columns(*tables.values())
        for name, table in tables.items():
            sets[name].update(sm.pybdsf_per_image(table, len(sets[name]["image_mean"]), flux_columns=columns, path=pybdsf[name]))
    table = sm.matched_distance_table(
        sets["real"], sets["generated"], classical=sets.get("classical"),
        repeats=int(s["floor_repeats"]), seed=seed_stream(args.seed, "evaluation.partitions"),
        reference=f"{args.real} ({n_real} images)",
    )
    sm.write_csv(table, args.output)
    log.info("distances (%s pixels per image):\n%s", "all" if per_image is None else per_image, table.to_string(index=False))
    return 0


def cmd_feature_distances(args) -> int:
    from radiogen.evaluation import summary as sm
    from radiogen.evaluation.classes import read_scores

    s = _settings(args.settings, SUMMARY_DEFAULTS, "summary")
    real = read_scores(args.real)
    table = sm.feature_distance_table(
        real["embeddings"],
        read_scores(args.generated)["embeddings"],
        classical=read_scores(args.classical)["embeddings"] if args.classical else None,
        seed=seed_stream(args.seed, "evaluation.feature_partitions"),
        reference=f"{real['source'] or args.real}, {real['rows']}",
        **sm.feature_distance_options(s),
    )
    sm.write_csv(table, args.output)
    log.info("feature distances:\n%s", table.to_string(index=False))
    return 0


def cmd_summary(args) -> int:
    from radiogen.evaluation import summary as sm

    table = sm.summary_table(
        _read_csv(args.distances, "distance table"),
        _read_csv(args.features, "feature-distance table") if args.features else None,
    )
    sm.write_csv(table, args.output_csv)
    first = table.iloc[0] if len(table) else None
    sizes = (f"{int(first['n_reference'])} reference real images against {int(first['n_compared'])} of each "
             f"compared set, {int(first['repeats'])} partitions") if first is not None else "no rows"
    notes = [
        "W1: Wasserstein-1 distance (area between the empirical CDFs, in the unit of the quantity); "
        "KS: two-sample Kolmogorov-Smirnov statistic (largest CDF difference, 0..1). Smaller is closer. "
        "No KS p-values: pixels of one image are correlated, so a p-value counting them as independent would be false precision.",
        "Size-matched: each of R seeded partitions splits the real set into a reference part A and a held-out part B "
        "of m = min(generated images, real images / 2) images; real_vs_generated = d(A, m generated images), "
        "real_vs_real_floor = d(A, B), real_vs_classical = d(A, m classical images). Values are medians over the "
        f"partitions ({sizes}); floor_sd is the floor's spread over them.",
        "generated_over_floor: real_vs_generated / real_vs_real_floor; about 1 means indistinguishable at this sample size. "
        "generated_floor_z: (real_vs_generated - real_vs_real_floor) / floor_sd; within about +-2 is sampling noise. "
        "Read every ratio with its z and its sizes n_reference, n_compared: the floor shrinks as 1/sqrt(m).",
        "Feature distances on the FIRST morphology classifier's embeddings (for LoTSS a generic feature space: the "
        "classifier never saw LoTSS images). Their real set (reference column) is one the classifier never trained on, "
        "like the generated images: for FIRST the archive's valid and test splits (the valid split only chose the "
        "classifier's epoch), not the diffusion training set, ~80% of which is the classifier's own training split, "
        "whose in-sample embeddings would make generated images look farther away than they are; its floor is "
        "measured between size-matched parts of that same out-of-sample set. Read KID: the unbiased MMD^2 with kernel (x.y/d + 1)^3 (Binkowski et al. 2018), "
        "expectation 0 for equal distributions at any size (it can be negative), so its ratio to the floor is not given; "
        "read its z. Frechet (FID-like) is computed in the top principal components of the reference part A (label column; "
        "in all 512 dimensions, with fewer images than dimensions, its z was not calibrated: 4.3 in a null test with held-out "
        "real FIRST images at 80 vs 40); it is biased upwards at these set sizes, so only its ratio to the size-matched "
        "floor and its z mean something.",
        "PyBDSF model flux is that of the min-max-scaled images, as in the paper's Fig. 15; "
        "'PyBDSF model flux (Jy)' (LoTSS) undoes the scaling with each image's peak flux. "
        "PyBDSF rows use only images PyBDSF modelled (status ok).",
    ]
    if table["real_vs_classical"].notna().any():
        notes.append("real_vs_classical: the classical simulated survey at the same sizes (classical_over_floor, "
                     "classical_floor_z as for the generated set); generated_beats_classical "
                     "is True where the diffusion model is closer to the real data.")
    if "reference" in table.columns:
        for reference, rows in table.groupby("reference", sort=False):
            notes.append(f"Real set of {', '.join(dict.fromkeys(rows['label']))}: {reference}.")
    html_table = table.drop(columns=[c for c in ("distribution", "reference") if c in table.columns])
    sm.write_table_html(html_table, args.output_html, title=args.title, notes=notes)
    log.info("summary:\n%s", table.to_string(index=False))
    return 0


def cmd_overview(args) -> int:
    from radiogen.evaluation import overview as ov
    from radiogen.evaluation.summary import write_csv

    summaries = {}
    for item in args.summary:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--summary expects DATASET=CSV, got {item!r}")
        summaries[name] = _read_csv(path, "summary table")
    size = None
    if args.size_json:
        import json
        from pathlib import Path

        if not Path(args.size_json).exists():
            raise InputFileError(f"{args.size_json}: size-conditioning JSON does not exist")
        size = json.loads(Path(args.size_json).read_text())
    skymap = None
    if args.skymap:
        try:
            skymap = pd.read_csv(args.skymap, sep="\t")
        except (OSError, ValueError) as err:
            raise InputFileError(f"{args.skymap}: cannot read the map validation table ({err})") from err
    table = ov.overview_table(_read_csv(args.accuracy, "accuracy table"), summaries, main_guidance=args.main_guidance,
                              size=size, skymap=skymap)
    write_csv(table, args.output_csv)
    ov.write_overview_html(table, args.output_html)
    log.info("overview:\n%s", table.to_string(index=False))
    return 0
