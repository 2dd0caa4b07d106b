"""``radiogen first ...``: fetch, prepare and balance the labelled FIRST dataset."""

from __future__ import annotations

import logging

from radiogen.cli.options import json_object, positive_float
from radiogen.config import section_defaults

log = logging.getLogger("radiogen.first")




def cmd_fetch(args) -> int:
    from radiogen.first.fetch import fetch_first_zip

    origin = fetch_first_zip(args.output, source=args.source, local_path=args.local_path or None,
                             timeout_s=args.timeout, retries=args.retries)
    log.info("FIRST archive from %s at %s", origin, args.output)
    return 0


def cmd_prepare(args) -> int:
    from radiogen.first.dataset import (
        class_counts_table,
        read_first_zip,
        write_dataset_h5,
    )
    from radiogen.first.figures import plot_examples
    from radiogen.io import atomic_path

    given = json_object(args.settings)
    settings = {**section_defaults("first"), **given}
    crop = int(settings["crop_size"])
    dataset = read_first_zip(args.zip, crop_size=crop, image_size=int(settings["image_size"]))
    write_dataset_h5(dataset, args.output, source=str(given.get("source", args.zip)), seed=args.seed)
    counts = class_counts_table(dataset.table["label"], dataset.table["first_split"])
    with atomic_path(args.counts) as tmp:
        counts.to_csv(tmp)
    log.info("class counts per split:\n%s", counts.to_string())
    if args.examples:
        plot_examples(dataset.images, dataset.table["label"].to_numpy(), args.examples,
                      per_class=int(settings["examples_per_class"]), seed=args.seed,
                      title=f"FIRST (Griese et al. 2023), {crop}x{crop} px centre crops")
    return 0


def cmd_balance(args) -> int:
    from radiogen.first.balance import build_training_set, write_training_set
    from radiogen.first.dataset import read_dataset_h5

    settings = {**section_defaults("first"), **json_object(args.settings)}
    dataset = read_dataset_h5(args.dataset)
    balance = settings["balance"]
    arrays = build_training_set(dataset, balance=balance,
                                validation_fraction=float(settings["validation_fraction"]),
                                seed=args.seed, max_per_class=settings["max_per_class"])
    write_training_set(arrays, args.output, seed=args.seed, balance=balance, source=str(args.dataset))
    return 0


def register(topics) -> None:
    from radiogen.first.fetch import ZENODO_URL

    sub = topics.topic("first")

    fetch = sub.add_parser("fetch", help="copy galaxy_data.zip from a local path or download it")
    fetch.add_argument("--source", default=ZENODO_URL, help="URL or path used when --local-path is absent")
    fetch.add_argument("--local-path", default="", help="preferred local copy (used when it exists)")
    fetch.add_argument("--output", required=True, help="destination zip")
    fetch.add_argument("--timeout", type=positive_float, default=60.0, help="HTTP timeout per request (s)")
    fetch.add_argument("--retries", type=int, default=3, help="download attempts (each resumes)")
    fetch.set_defaults(func=cmd_fetch)

    prepare = sub.add_parser("prepare", help="crop and rescale all images to dataset.h5, counts and examples")
    prepare.add_argument("--zip", required=True, help="galaxy_data.zip")
    prepare.add_argument("--output", required=True, help="dataset HDF5")
    prepare.add_argument("--counts", required=True, help="CSV of images per class and split (paper Table 2)")
    prepare.add_argument("--examples", default="", help="PNG grid of random examples per class (paper Fig. 5)")
    prepare.add_argument("--settings", default="{}", help="JSON of the `first` config section")
    prepare.add_argument("--seed", type=int, required=True, help="global seed")
    prepare.set_defaults(func=cmd_prepare)

    balance = sub.add_parser("balance", help="class-balanced training set for the diffusion model")
    balance.add_argument("--dataset", required=True, help="dataset HDF5 from `first prepare`")
    balance.add_argument("--output", required=True, help="training-set HDF5")
    balance.add_argument("--settings", default="{}", help="JSON of the `first` config section")
    balance.add_argument("--seed", type=int, required=True, help="global seed")
    balance.set_defaults(func=cmd_balance)
