"""``radiogen generate``: images from a trained model (:mod:`radiogen.sampler.request`)."""

from __future__ import annotations

import argparse

from radiogen.cli.options import config_default, finite_float, nonnegative_float, positive_float
from radiogen.config import load_schema, schema_dir
from radiogen.errors import ConfigError

EXAMPLES = """examples:
  radiogen generate --model first.pt --class FRII -n 100 --out frii.fits
  radiogen generate --model lotss.pt --peak-flux-range 0.002 0.05 -n 1000 --out set.h5 --seed 7
  radiogen generate --model first.pt -n 400 --out set.h5 --solver unipc --steps 12 --rho 10
  radiogen generate --model first.pt -n 400 --out set.h5 --guide snapshots/model-step600.pt --guidance 3
  radiogen generate --model lotss.pt -n 100000 --out big/ --executor slurm --slurm-gpus 1
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def solver_choices() -> list[str]:
    """``sample.sampler.solver``'s choices, read from its schema (importing the solvers would import torch)."""
    sampler = load_schema(schema_dir() / "sample.schema.yaml")["properties"]["sampler"]
    return list(sampler["properties"]["solver"]["enum"])


def _slurm_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm-option {pair!r}: expected KEY=VALUE (an sbatch option without --)")
        options[key.strip()] = value
    return options


def _generate(args: argparse.Namespace) -> int:
    from radiogen.sampler.request import generate_to

    slurm = None
    if args.executor == "slurm":
        slurm = {"cpus": args.slurm_cpus, "mem_mb": args.slurm_mem_mb, "time_min": args.slurm_time_min,
                 "gpus": args.slurm_gpus, "partition": args.slurm_partition, "max_parallel": args.slurm_max_parallel,
                 "options": _slurm_options(args.slurm_option)}
    generate_to(
        args.out, args.model, n=args.n, classes=args.classes, peak_flux=args.peak_flux,
        peak_flux_range=args.peak_flux_range, range_space=args.range_space, size=args.size,
        size_range=args.size_range, seed=args.seed, guidance=args.guidance, steps=args.steps, solver=args.solver,
        rho=args.rho, guide=args.guide, schedule=args.schedule, device=args.device, precision=args.precision,
        batch_size=args.batch_size, executor=args.executor,
        images_per_shard=args.images_per_shard, overwrite=args.overwrite, ra_deg=args.ra, dec_deg=args.dec,
        freq_stokes_axes=args.freq_stokes_axes, slurm=slurm,
    )
    return 0


def register(topics) -> None:
    p = topics.command("generate", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="trained model file (model.pt)")
    p.add_argument("-n", type=_positive_int, required=True, help="number of images")
    p.add_argument("--out", required=True,
                   help="set.fits (one multi-extension FITS file), set.h5 (samples HDF5) or dir/ (one FITS per image)")
    what = p.add_argument_group("what the images show (checked against the model before any work)")
    what.add_argument("--class", dest="classes", nargs="+", metavar="CLASS",
                      help="FIRST model: class names taken in turn (default: all its classes in turn)")
    flux = what.add_mutually_exclusive_group()
    flux.add_argument("--peak-flux", nargs="+", type=positive_float, metavar="JY",
                      help="LoTSS model: peak fluxes in Jy/beam taken in turn (default: the training distribution)")
    flux.add_argument("--peak-flux-range", nargs=2, type=positive_float, metavar=("LOW", "HIGH"),
                      help="LoTSS model: peak fluxes drawn flat between LOW and HIGH Jy/beam (see --range-space)")
    what.add_argument("--range-space", choices=("boxcox", "log", "linear"),
                      default=config_default("sample.lotss.range_space"),
                      help="variable the range draws are flat in (default: sample.lotss.range_space)")
    size = what.add_mutually_exclusive_group()
    size.add_argument("--size", nargs="+", type=positive_float, metavar="ARCSEC",
                      help="size-conditioned LoTSS model: sizes in arcsec taken in turn "
                           "(default: drawn with the flux from the training distribution)")
    size.add_argument("--size-range", nargs=2, type=positive_float, metavar=("LOW", "HIGH"),
                      help="size-conditioned LoTSS model: sizes flat in log size between LOW and HIGH arcsec")
    how = p.add_argument_group("sampling")
    how.add_argument("--seed", type=int, default=config_default("seed"),
                     help="global seed: the same seed gives the same images (default: config seed)")
    how.add_argument("--guidance", type=nonnegative_float, default=None,
                     help="guidance strength w, classifier-free or with --guide (default: sample.lotss.guidance "
                          "or sample.first.guidance)")
    how.add_argument("--steps", type=_positive_int, default=None,
                     help="sampler steps (default: sample.sampler.num_steps)")
    how.add_argument("--solver", choices=solver_choices(), default=config_default("sample.sampler.solver"),
                     help="ODE solver (default: sample.sampler.solver); unipc with --steps 12 --rho 10 is the "
                          "measured <= 12-evaluation choice (benchmarks/RESULTS.md)")
    how.add_argument("--rho", type=positive_float, default=config_default("sample.sampler.rho"),
                     help="noise-schedule exponent (default: sample.sampler.rho)")
    how.add_argument("--schedule", default=config_default("sample.sampler.schedule"), metavar="karras|FILE.json",
                     help="noise levels: the rho schedule, or a GITS file of 'radiogen sample schedule' for this "
                          "model (default: sample.sampler.schedule)")
    how.add_argument("--guide", default="unconditional", metavar="unconditional|MODEL.pt",
                     help="what the guidance extrapolates away from: the model's own unconditional pass "
                          "(classifier-free, default) or a weaker model file of the same kind, e.g. an early "
                          "EMA snapshot of its training run (autoguidance)")
    how.add_argument("--device", default=config_default("sample.device"),
                     help="auto (the GPU when one is visible), cpu, cuda, cuda:1 ... (default: sample.device)")
    how.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=config_default("sample.precision"),
                     help="network precision (default: sample.precision)")
    how.add_argument("--batch-size", type=_positive_int, default=config_default("sample.batch_size"),
                     help="images per network batch (default: sample.batch_size)")
    out = p.add_argument_group("output")
    out.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    out.add_argument("--ra", type=finite_float, default=config_default("sample.fits.ra_deg"),
                     help="FITS: RA of the image centres [deg] (default: sample.fits.ra_deg)")
    out.add_argument("--dec", type=finite_float, default=config_default("sample.fits.dec_deg"),
                     help="FITS: Dec of the image centres [deg] (default: sample.fits.dec_deg)")
    out.add_argument("--freq-stokes-axes", action=argparse.BooleanOptionalAction,
                     default=config_default("sample.fits.freq_stokes_axes"),
                     help="FITS: add FREQ and STOKES axes of length 1 (default: sample.fits.freq_stokes_axes)")
    run = p.add_argument_group("where it runs")
    run.add_argument("--executor", choices=("local", "slurm"), default="local",
                     help="here, or shards as a SLURM job array (submitit); rerun to resume either")
    run.add_argument("--images-per-shard", type=_positive_int, default=None,
                     help="images per shard (default: all locally; sample.<dataset>.images_per_shard on SLURM)")
    run.add_argument("--slurm-cpus", type=_positive_int, default=config_default("sample.threads"),
                     help="CPUs per array task (default: sample.threads)")
    run.add_argument("--slurm-mem-mb", type=_positive_int, default=config_default("sample.mem_mb"),
                     help="memory per array task, MB (default: sample.mem_mb)")
    run.add_argument("--slurm-time-min", type=_positive_int, default=config_default("sample.runtime_min"),
                     help="wall time per array task, minutes (default: sample.runtime_min)")
    run.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per array task (default: 0)")
    run.add_argument("--slurm-partition", default=None, help="SLURM partition (default: the cluster's)")
    run.add_argument("--slurm-max-parallel", type=_positive_int, default=None,
                     help="array tasks running at once (default: all)")
    run.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                     help="further sbatch option, e.g. account=myproj (repeatable)")
    p.set_defaults(func=_generate)
