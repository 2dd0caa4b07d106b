"""``radiogen sample-*``: sharded sampling, aggregation, FITS export and figures."""

from __future__ import annotations

import argparse
import logging

from radiogen.cli.generate import solver_choices
from radiogen.cli.options import config_default, finite_float, json_object, nonnegative_float

log = logging.getLogger("radiogen.sample")


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def _shard(args: argparse.Namespace) -> int:
    from radiogen.sampler.shards import write_shard

    _threads(args.threads)
    settings = json_object(args.settings)
    write_shard(
        args.model,
        args.output,
        shard=args.shard,
        seed=args.seed,
        guidance=args.guidance,
        settings=settings.get("dataset", {}),
        sampler=settings.get("sampler"),
        images_per_shard=settings.get("images_per_shard"),
        batch_size=int(settings.get("batch_size", config_default("sample.batch_size"))),
        cuda_batch_size=settings.get("cuda_batch_size", config_default("sample.cuda_batch_size")),
        device=settings.get("device", config_default("sample.device")),
        precision=settings.get("precision", config_default("sample.precision")),
        expect_dataset=args.dataset,
        expect_image_size=args.image_size,
        expect_context=args.context,
        guide_path=args.guide,
    )
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    from radiogen.sampler.shards import aggregate_shards

    aggregate_shards(args.shards, args.output)
    return 0


def _export(args: argparse.Namespace) -> int:
    from radiogen.sampler.fits_export import export_fits

    export_fits(args.samples, args.output_dir, ra_deg=args.ra, dec_deg=args.dec, max_images=args.max_images,
                layout=args.layout, images_per_file=args.images_per_file,
                freq_stokes_axes=args.freq_stokes_axes)
    return 0


def _figure(args: argparse.Namespace) -> int:
    from radiogen.sampler.plots import plot_samples_vs_training

    plot_samples_vs_training(args.samples, args.training, args.output, n_per_panel=args.n,
                             seed=args.seed)
    return 0


def _trajectory(args: argparse.Namespace) -> int:
    from radiogen.sampler import generate
    from radiogen.sampler.plots import plot_trajectory, record_trajectory

    _threads(args.threads)
    settings = json_object(args.settings)
    device = generate.resolve_device(settings.get("device", "auto"))
    net, meta = generate.load_sampling_model(args.model, device=device)
    generate.check_model_kind(meta, args.model, dataset=args.dataset, image_size=args.image_size,
                              context=args.context)
    steps = record_trajectory(
        net, meta, seed=args.seed, guidance=args.guidance, sampler=settings.get("sampler"),
        settings=settings.get("dataset", {}), index=args.index, device=device,
        model_digest=generate.model_id(args.model),
    )
    plot_trajectory(steps, args.output)
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from radiogen.errors import ConfigError
    from radiogen.sampler.schedules import gits_schedule, write_schedule

    _threads(args.threads)
    if len(args.evaluations) > 1 and "{evaluations}" not in args.out:
        raise ConfigError(f"--out {args.out}: several --evaluations need '{{evaluations}}' in the file name")
    record = gits_schedule(
        args.model, solver=args.solver,
        evaluations=args.evaluations[0] if len(args.evaluations) == 1 else args.evaluations,
        guidance=args.guidance, seed=args.seed,
        n_images=args.images, grid_points=args.grid_points, grid_rho=args.grid_rho, substeps=args.teacher_substeps,
        sigma_min=args.sigma_min, sigma_max=args.sigma_max, settings=json_object(args.dataset_settings),
        guide_path=args.guide, device=args.device,
    )
    records = record if isinstance(record, list) else [record]
    for one in records:
        out = args.out.replace("{evaluations}", str(one["evaluations"]))
        write_schedule(out, one)
        log.info("wrote %s: %s %d evaluations, sigmas %s", out, args.solver, one["evaluations"],
                 ", ".join(f"{s:.4g}" for s in one["sigmas"]))
    return 0


def _model_checks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=("lotss", "first"), default=None,
                   help="refuse a model of the other dataset (checked before any work)")
    p.add_argument("--image-size", type=int, default=None,
                   help="refuse a model whose images are not this many px on a side")
    p.add_argument("--context", choices=("peak_flux", "peak_flux+size"), default=None,
                   help="refuse a LoTSS model conditioned on anything else (lotss.preprocess.context)")


def register(topics) -> None:
    settings_help = (
        'JSON: {"sampler": {num_steps, sigma_min, sigma_max, rho, S_churn, S_min, S_max, S_noise}, '
        '"dataset": <sample.lotss or sample.first block>, "images_per_shard", "batch_size", "cuda_batch_size", '
        '"device", "precision"}'
    )
    p = topics.add_parser("sample", "shard", help="generate one shard of a sample set (HDF5)")
    p.add_argument("--model", required=True, help="trained model.pt")
    p.add_argument("--shard", required=True, type=int, help="shard index (0-based)")
    p.add_argument("--seed", required=True, type=int, help="global seed (config seed)")
    p.add_argument("--guidance", required=True, type=nonnegative_float, help="guidance strength w")
    p.add_argument("--guide", default=None,
                   help="a weaker model.pt of the same kind to guide with (autoguidance; default: the "
                        "model's own unconditional pass, classifier-free guidance)")
    p.add_argument("--settings", default="{}", help=settings_help)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--output", required=True, help="shard HDF5 to write")
    _model_checks(p)
    p.set_defaults(func=_shard)

    p = topics.add_parser("sample", "aggregate", help="merge sample shards into samples.h5")
    p.add_argument("--output", required=True, help="samples.h5 to write")
    p.add_argument("shards", nargs="+", help="shard HDF5 files (all shards of one set)")
    p.set_defaults(func=_aggregate)

    p = topics.add_parser("sample", "export-fits", help="write generated images as FITS files")
    p.add_argument("--samples", required=True, help="samples.h5")
    p.add_argument("--output-dir", required=True, help="directory of the FITS files")
    p.add_argument("--ra", type=finite_float, default=config_default("sample.fits.ra_deg"),
                   help="reference RA [deg] (SIN projection; default: sample.fits.ra_deg)")
    p.add_argument("--dec", type=finite_float, default=config_default("sample.fits.dec_deg"),
                   help="reference Dec [deg] (default: sample.fits.dec_deg)")
    p.add_argument("--max-images", type=int, default=None, help="export at most this many (default: all)")
    p.add_argument("--layout", choices=("images", "multi_extension"), default=config_default("sample.fits.layout"),
                   help="one file per image, or multi-extension files (default: sample.fits.layout)")
    p.add_argument("--images-per-file", type=int, default=config_default("sample.fits.images_per_file"),
                   help="images per multi-extension file (default: sample.fits.images_per_file)")
    p.add_argument("--freq-stokes-axes", action=argparse.BooleanOptionalAction,
                   default=config_default("sample.fits.freq_stokes_axes"),
                   help="add FREQ and STOKES axes of length 1 (default: sample.fits.freq_stokes_axes)")
    p.set_defaults(func=_export)

    p = topics.add_parser("sample", "figure", help="random generated vs training images")
    p.add_argument("--samples", required=True)
    p.add_argument("--training", required=True, help="training_set.h5 of the same dataset")
    p.add_argument("--n", type=int, default=16, help="images per panel")
    p.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    p.add_argument("--output", required=True, help="figure (png/pdf/svg)")
    p.set_defaults(func=_figure)

    p = topics.add_parser("sample", "trajectory", help="figure of one sampling trajectory")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--guidance", type=nonnegative_float, default=0.0, help="classifier-free guidance w")
    p.add_argument("--index", type=int, default=0, help="global image index to follow")
    p.add_argument("--settings", default="{}", help=settings_help)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", required=True)
    _model_checks(p)
    p.set_defaults(func=_trajectory)

    p = topics.add_parser("sample", "schedule",
                          help="GITS noise schedule for one model and solver (JSON for sample.sampler.schedule)")
    p.add_argument("--model", required=True, help="trained model.pt")
    p.add_argument("--solver", required=True, choices=solver_choices(), help="the solver the schedule is for")
    p.add_argument("--evaluations", required=True, type=int, nargs="+",
                   help="network evaluations per image (Heun: 2N - 1, odd; the multistep solvers: N); several "
                        "share one teacher")
    p.add_argument("--guidance", required=True, type=nonnegative_float, help="guidance strength w to sample with")
    p.add_argument("--seed", required=True, type=int, help="global seed (teacher latents: stream sample.schedule)")
    p.add_argument("--guide", default=None, help="weaker model.pt for autoguidance, as for sample shard")
    p.add_argument("--images", type=int, default=config_default("sample.gits.n_images"),
                   help="teacher latents (default: sample.gits.n_images)")
    p.add_argument("--grid-points", type=int, default=config_default("sample.gits.grid_points"),
                   help="fine-grid points, sigma = 0 included (default: sample.gits.grid_points)")
    p.add_argument("--grid-rho", type=finite_float, default=config_default("sample.gits.grid_rho"),
                   help="rho of the fine grid (default: sample.gits.grid_rho)")
    p.add_argument("--teacher-substeps", type=int, default=config_default("sample.gits.teacher_substeps"),
                   help="teacher Heun steps per grid interval (default: sample.gits.teacher_substeps)")
    p.add_argument("--sigma-min", type=finite_float, default=config_default("sample.sampler.sigma_min"),
                   help="smallest nonzero grid level (default: sample.sampler.sigma_min)")
    p.add_argument("--sigma-max", type=finite_float, default=config_default("sample.sampler.sigma_max"),
                   help="largest grid level (default: sample.sampler.sigma_max)")
    p.add_argument("--dataset-settings", default="{}",
                   help="JSON: the sample.lotss or sample.first block, for the teacher's conditioning")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True,
                   help="schedule JSON to write; '{evaluations}' in the name is replaced by the budget")
    p.set_defaults(func=_schedule)
