"""``radiogen imageset from-fits``: FITS cutouts of any survey as an image set."""

from __future__ import annotations

import argparse

from radiogen.cli.options import positive_float


def _label_map(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        token, sep, name = item.partition("=")
        if not sep or not token or not name:
            raise argparse.ArgumentTypeError(f"--label-map: expected TOKEN=CLASS, got {item!r}")
        pairs[token] = name
    return pairs


def cmd_from_fits(args: argparse.Namespace) -> int:
    from radiogen.fits_images import image_set_from_fits

    image_set_from_fits(
        args.inputs, args.output, dataset=args.dataset, size=args.size,
        pixel_scale_arcsec=args.pixel_scale, beam_arcsec=args.beam_arcsec,
        target_beam_arcsec=args.target_beam_arcsec, unit=args.unit,
        frequency_hz=args.frequency_hz, label_pattern=args.label_pattern,
        label_map=_label_map(args.label_map), class_names=args.class_names,
        skip_unlabelled=args.skip_unlabelled, on_blank=args.on_blank,
    )
    return 0


def register(topics) -> None:
    from radiogen.fits_images import BLANK_POLICIES, IMAGESET_DEFAULTS as D, SCALINGS

    sub = topics.topic("imageset")
    p = sub.add_parser("from-fits", help="FITS cutouts (files or folders) -> image-set HDF5")
    p.add_argument("inputs", nargs="+", help="FITS files or folders of *.fits")
    p.add_argument("--output", required=True, help="image-set HDF5 to write")
    p.add_argument("--dataset", required=True, choices=SCALINGS,
                   help="dataset compared with: its scaling and the dataset attribute")
    p.add_argument("--size", type=int, default=D["size"], help="central crop side, px")
    p.add_argument("--pixel-scale", type=positive_float, default=D["pixel_scale_arcsec"],
                   help="resample to this pixel scale after beam matching, anti-aliased when coarsening "
                        "(arcsec/px); default: no resampling")
    p.add_argument("--beam-arcsec", type=positive_float, default=D["beam_arcsec"],
                   help="circular beam FWHM for headers without BMAJ (arcsec)")
    p.add_argument("--target-beam-arcsec", type=positive_float, default=D["target_beam_arcsec"],
                   help="convolve every image to this circular beam FWHM (arcsec); default: no matching")
    p.add_argument("--unit", default=D["unit"],
                   help="pixel unit of headers without BUNIT (Jy/beam, mJy/beam, uJy/beam)")
    p.add_argument("--frequency-hz", type=positive_float, default=D["frequency_hz"],
                   help="frequency for headers without one (Hz)")
    p.add_argument("--label-pattern", default=D["label_pattern"],
                   help="regex with a (?P<label>...) group matched in each file name")
    p.add_argument("--label-map", nargs="*", default=[], metavar="TOKEN=CLASS",
                   help="matched token -> class name, e.g. 1=FRI 2=FRII")
    p.add_argument("--class-names", nargs="+", default=list(D["class_names"]), help="class order of /label")
    p.add_argument("--skip-unlabelled", action="store_true", default=D["skip_unlabelled"],
                   help="leave out files without a class")
    p.add_argument("--on-blank", choices=BLANK_POLICIES, default=D["on_blank"],
                   help="a blank file (all NaN, or NaN in the crop): stop (error) or leave it out with "
                        "a warning (skip)")
    p.set_defaults(func=cmd_from_fits)
