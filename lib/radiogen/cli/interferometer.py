"""``radiogen interferometer STEP``: the map's field observed by LOFAR HBA and imaged by WSClean.

Steps as the workflow runs them (``workflow/rules/interferometer.smk``), per
channel block of ``skymap.interferometer.channel_blocks``: ``block`` (the
block's measurement set, the sky model predicted into MODEL_DATA, unit noise in
DATA), ``calibrate-noise`` (all blocks' unit noise imaged together: the noise
sigma, as JSON), ``add-noise`` (the block's observed copy), ``image`` (all
blocks together: restored, residual, model, PSF and dirty FITS), ``figure``
(restored map, residual map and PSF with the restoring beam).  ``ms`` and
``observe`` do the first three on the whole band in one process.
``--settings`` is the config's ``skymap.interferometer`` block as JSON; a step
reads only its stage's keys (``radiogen.interferometer.settings.STAGE_KEYS``:
observation for ``ms``, ``block``, ``add-noise``; with the image weighting for
``observe`` and ``calibrate-noise``; all for ``image``), so the others may be left out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radiogen.cli.options import json_object


def _settings(args: argparse.Namespace, stage: str):
    """The ``--settings`` keys that ``stage`` reads (radiogen.interferometer.settings.STAGE_KEYS), with
    ``--threads`` for ``threads`` when given (the workflow passes the job's threads so, and keeps them out of
    the settings: another thread count reruns nothing)."""
    from radiogen.interferometer.settings import InterferometerSettings

    mapping = json_object(args.settings)
    if args.threads is not None:
        mapping["threads"] = args.threads
    return InterferometerSettings.from_mapping(mapping, stage=stage)


def _wsclean_log(args: argparse.Namespace) -> Path | None:
    """The WSClean log of this step, emptied first (WSClean's runs append to it)."""
    if not args.wsclean_log:
        return None
    path = Path(args.wsclean_log)
    path.write_text("")
    return path


def cmd_ms(args: argparse.Namespace) -> int:
    from radiogen.interferometer.map_steps import write_measurement_set

    write_measurement_set(args.header, _settings(args, "observation"), args.output)
    return 0


def cmd_observe(args: argparse.Namespace) -> int:
    from radiogen.interferometer.map_steps import observe_sky_model

    observe_sky_model(args.ms, args.sky_model, _settings(args, "noise"), target_rms_jy=args.noise_rms_ujy * 1e-6,
                      seed=args.seed, output=args.output, workdir=args.workdir,
                      log_path=_wsclean_log(args))
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    from radiogen.interferometer.map_steps import predict_block

    predict_block(args.header, args.sky_model, _settings(args, "observation"), block=args.block, seed=args.seed,
                  output=args.output, log_path=_wsclean_log(args))
    return 0


def cmd_calibrate_noise(args: argparse.Namespace) -> int:
    from radiogen.interferometer.map_steps import calibrate_noise

    calibrate_noise(args.ms, _settings(args, "noise"), header_path=args.header,
                    target_rms_jy=args.noise_rms_ujy * 1e-6,
                    seed=args.seed, output=args.output, log_path=_wsclean_log(args))
    return 0


def cmd_add_noise(args: argparse.Namespace) -> int:
    from radiogen.interferometer.map_steps import add_block_noise

    add_block_noise(args.ms, args.calibration, _settings(args, "observation"), block=args.block, seed=args.seed,
                    output=args.output)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from radiogen.interferometer.map_steps import image_observation

    image_observation(args.ms, _settings(args, "image"), header_path=args.header, prefix=args.prefix,
                      log_path=_wsclean_log(args))
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from radiogen.interferometer.figures import plot_imaging_products

    plot_imaging_products(args.restored, args.residual, args.psf, args.output, title=args.title)
    return 0


def register(topics) -> None:
    sub = topics.topic("interferometer")

    p = sub.add_parser("ms", help="measurement set of the map's field (python-casacore)")
    p.add_argument("--header", required=True, help="map header (FITS header text)")
    p.add_argument("--settings", required=True, help="skymap.interferometer block as JSON (keys of stage observation read)")
    p.add_argument("--threads", type=int, help="threads (default: the JSON's threads)")
    p.add_argument("--output", required=True, help="measurement set directory to write")
    p.set_defaults(func=cmd_ms)

    p = sub.add_parser("observe", help="predict the sky model into a copy of the set and add thermal noise")
    p.add_argument("--ms", required=True, help="measurement set from `ms`")
    p.add_argument("--sky-model", required=True,
                   help="noise-free sky FITS on the map grid: Jy/pixel (intrinsic) or Jy/beam (already convolved)")
    p.add_argument("--settings", required=True, help="skymap.interferometer block as JSON (keys of stage noise read)")
    p.add_argument("--threads", type=int, help="threads (default: the JSON's threads)")
    p.add_argument("--noise-rms-ujy", type=float, required=True, help="restored map's target rms, uJy/beam")
    p.add_argument("--seed", type=int, required=True, help="global seed (noise stream)")
    p.add_argument("--workdir", required=True, help="folder for the model and unit-noise images")
    p.add_argument("--wsclean-log", help="file to append WSClean's output to")
    p.add_argument("--output", required=True, help="observed measurement set directory to write")
    p.set_defaults(func=cmd_observe)

    p = sub.add_parser("block", help="one channel block: measurement set, predicted sky, unit noise")
    p.add_argument("--header", required=True, help="map header (FITS header text): phase centre and grid")
    p.add_argument("--sky-model", required=True,
                   help="noise-free sky FITS on the map grid: Jy/pixel (intrinsic) or Jy/beam (already convolved)")
    p.add_argument("--settings", required=True, help="skymap.interferometer block as JSON (keys of stage observation read)")
    p.add_argument("--threads", type=int, help="threads (default: the JSON's threads)")
    p.add_argument("--block", type=int, required=True, help="channel block, 0 to channel_blocks - 1")
    p.add_argument("--seed", type=int, required=True, help="global seed (noise stream)")
    p.add_argument("--wsclean-log", help="file to append WSClean's output to")
    p.add_argument("--output", required=True, help="block's measurement set directory to write")
    p.set_defaults(func=cmd_block)

    p = sub.add_parser("calibrate-noise", help="noise sigma from all blocks' unit noise imaged together (JSON)")
    p.add_argument("--ms", required=True, nargs="+", help="every block's measurement set from `block`")
    p.add_argument("--header", required=True, help="map header (FITS header text): the imaging grid")
    p.add_argument("--settings", required=True, help="skymap.interferometer block as JSON (keys of stage noise read)")
    p.add_argument("--threads", type=int, help="threads (default: the JSON's threads)")
    p.add_argument("--noise-rms-ujy", type=float, required=True, help="restored map's target rms, uJy/beam")
    p.add_argument("--seed", type=int, required=True, help="global seed the blocks' noise was drawn with")
    p.add_argument("--wsclean-log", help="file to append WSClean's output to")
    p.add_argument("--output", required=True, help="calibration JSON to write")
    p.set_defaults(func=cmd_calibrate_noise)

    p = sub.add_parser("add-noise", help="a block's observed copy: DATA = MODEL_DATA + sigma x unit noise")
    p.add_argument("--ms", required=True, help="the block's measurement set from `block`")
    p.add_argument("--calibration", required=True, help="JSON from `calibrate-noise`")
    p.add_argument("--settings", required=True, help="skymap.interferometer block as JSON (keys of stage observation read)")
    p.add_argument("--threads", type=int, help="threads (default: the JSON's threads)")
    p.add_argument("--block", type=int, required=True, help="channel block, 0 to channel_blocks - 1")
    p.add_argument("--seed", type=int, required=True, help="global seed the blocks' noise was drawn with")
    p.add_argument("--output", required=True, help="observed measurement set directory to write")
    p.set_defaults(func=cmd_add_noise)

    p = sub.add_parser("image", help="WSClean imaging: restored, residual, model, PSF and dirty FITS")
    p.add_argument("--ms", required=True, nargs="+",
                   help="observed measurement set, or every channel block's, imaged together")
    p.add_argument("--header", required=True, help="map header (FITS header text): the imaging grid")
    p.add_argument("--settings", required=True, help="skymap.interferometer block as JSON (keys of stage image read)")
    p.add_argument("--threads", type=int, help="threads (default: the JSON's threads)")
    p.add_argument("--prefix", required=True, help="output prefix: <prefix>-image.fits etc.")
    p.add_argument("--wsclean-log", help="file to append WSClean's output to")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("figure", help="restored map, residual map and PSF with the restoring beam (PNG)")
    p.add_argument("--restored", required=True, help="restored image FITS (<prefix>-image.fits)")
    p.add_argument("--residual", required=True, help="residual image FITS")
    p.add_argument("--psf", required=True, help="PSF image FITS")
    p.add_argument("--title", default="interferometric map", help="figure title")
    p.add_argument("--output", required=True, help="figure to write")
    p.set_defaults(func=cmd_figure)
