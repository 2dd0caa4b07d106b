"""``radiogen lotss-*``: catalogue assignment, cutouts, aggregation, download."""

from __future__ import annotations


from radiogen.cli.options import config_default, positive_float


def register(topics) -> None:
    _register_published(topics)
    p = topics.add_parser(
        "lotss", "assign",
        help="check a catalogue and assign its sources to mosaics by WCS footprint",
    )
    p.add_argument("--catalogue", required=True, help="catalogue CSV or FITS table")
    p.add_argument("--mosaic", nargs=2, action="append", default=[], metavar=("ID", "FITS"),
                   help="a mosaic ID and its FITS file (repeat per mosaic)")
    p.add_argument("--out", required=True, help="output HDF5 (sources with centre and mosaic)")
    p.add_argument("--duplicates", choices=["error", "keep_first"], default=config_default("lotss.duplicate_names"),
                   help="duplicate Source_Name handling (default: lotss.duplicate_names)")
    p.add_argument("--sources", choices=["resolved", "all", "list"], default=config_default("lotss.sources"),
                   help="source sample: resolved (the paper, LoTSS-DR2 criterion), all, or list "
                        "(default: lotss.sources)")
    p.add_argument("--source-list", default=None, help="file of source names for --sources list")
    p.add_argument("--size", type=int, default=config_default("lotss.cutout_size"),
                   help="cutout side in pixels, for the brighter-neighbour count (default: lotss.cutout_size)")
    p.set_defaults(func=_assign)

    p = topics.add_parser("lotss", "cutouts", help="cut all assigned sources from one mosaic")
    p.add_argument("--mosaic", required=True, help="mosaic FITS file")
    p.add_argument("--mosaic-id", required=True, help="mosaic ID (as given to lotss-assign)")
    p.add_argument("--sources", required=True, help="lotss-assign output")
    p.add_argument("--out", required=True, help="output shard HDF5")
    p.add_argument("--size", type=int, default=config_default("lotss.cutout_size"),
                   help="cutout side in pixels (default: lotss.cutout_size)")
    p.add_argument("--beam-arcsec", type=positive_float, default=None,
                   help="beam FWHM for mosaics whose header lacks BMAJ (arcsec)")
    p.add_argument("--frequency-hz", type=positive_float, default=None,
                   help="frequency for mosaics whose header gives none (Hz)")
    p.add_argument("--block-rows", type=int, default=256,
                   help="mosaic rows read per block; bounds memory (default 256)")
    p.set_defaults(func=_cutouts)

    p = topics.add_parser("lotss", "aggregate", help="merge per-mosaic cutout shards")
    p.add_argument("--shards", nargs="+", required=True, help="shard HDF5 files, in order")
    p.add_argument("--sources", help="lotss-assign output (for catalogue counts)")
    p.add_argument("--out", required=True, help="aggregate HDF5")
    p.set_defaults(func=_aggregate)

    p = topics.add_parser("lotss", "plot-cutouts", help="figure of example cutouts per group")
    p.add_argument("--cutouts", required=True, help="cutout HDF5 (shard or aggregate)")
    p.add_argument("--out", required=True, help="output image (png/pdf)")
    p.add_argument("--per-row", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed choosing the examples")
    p.set_defaults(func=_plot)

    p = topics.add_parser("lotss", "download", help="fetch one file (resumable, verified)")
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, help="expected size in bytes")
    p.add_argument("--sha256", help="expected sha256 hex digest")
    p.add_argument("--md5", help="expected md5 hex digest")
    p.add_argument("--timeout-s", type=positive_float, default=60.0)
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--hint", default="", help="extra text for error messages")
    p.set_defaults(func=_download)


def _assign(args):
    from radiogen.lotss.sources import assign_sources

    assign_sources(args.catalogue, dict(args.mosaic), args.out, duplicates=args.duplicates,
                   sample=args.sources, source_list=args.source_list, cutout_size=args.size)
    return 0


def _cutouts(args):
    from radiogen.lotss.cutouts import cut_mosaic

    cut_mosaic(args.mosaic, args.sources, args.out, mosaic_id=args.mosaic_id, size=args.size,
               block_rows=args.block_rows, beam_arcsec=args.beam_arcsec, frequency_hz=args.frequency_hz)
    return 0


def _aggregate(args):
    from radiogen.lotss.cutouts import aggregate_shards

    aggregate_shards(args.shards, args.out, sources_path=args.sources)
    return 0


def _plot(args):
    from radiogen.lotss.cutout_plots import plot_cutout_examples

    plot_cutout_examples(args.cutouts, args.out, per_row=args.per_row, seed=args.seed)
    return 0


def _download(args):
    from radiogen.download import download_file

    download_file(args.url, args.out, size=args.size, sha256=args.sha256, md5=args.md5,
                  timeout_s=args.timeout_s, retries=args.retries, hint=args.hint)
    return 0


def _register_published(topics) -> None:
    p = topics.add_parser(
        "lotss", "published",
        help="the authors' published LOFAR_Dataset.h5 as a radiogen training set (lotss.source: published)",
    )
    p.add_argument("--dataset", required=True, help="LOFAR_Dataset.h5 (radiogen model fetch lofar-diffusion-lotss)")
    p.add_argument("--output", required=True, help="training-set HDF5 to write")
    p.add_argument("--seed", type=int, required=True, help="global seed (train/validation split)")
    p.add_argument("--validation-fraction", type=float,
                   default=config_default("lotss.preprocess.validation_fraction"),
                   help="share of validation images (default: lotss.preprocess.validation_fraction)")
    p.set_defaults(func=_published)


def _published(args) -> int:
    import json

    from radiogen.lotss.published import convert_published_dataset

    print(json.dumps(convert_published_dataset(args.dataset, args.output, seed=args.seed,
                                               validation_fraction=args.validation_fraction)))
    return 0
