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
        frequency_hz=args.frequency_hz, label_pattern=args.label_pattern,
        label_map=_label_map(args.label_map), class_names=args.class_names,
        skip_unlabelled=args.skip_unlabelled,
    )
    return 0


def register(topics) -> None:
    from radiogen.fits_images import FIRST_CLASSES, SCALINGS

    sub = topics.topic("imageset")
    p = sub.add_parser("from-fits", help="FITS cutouts (files or folders) -> image-set HDF5")
    p.add_argument("inputs", nargs="+", help="FITS files or folders of *.fits")
    p.add_argument("--output", required=True, help="image-set HDF5 to write")
    p.add_argument("--dataset", required=True, choices=SCALINGS,
                   help="dataset compared with: its scaling and the dataset attribute")
    p.add_argument("--size", type=int, default=80, help="central crop side, px")
    p.add_argument("--pixel-scale", type=positive_float, default=None,
                   help="resample to this pixel scale first (arcsec/px); default: no resampling")
    p.add_argument("--beam-arcsec", type=positive_float, default=None,
                   help="beam FWHM for headers without BMAJ (arcsec)")
    p.add_argument("--frequency-hz", type=positive_float, default=None,
                   help="frequency for headers without one (Hz)")
    p.add_argument("--label-pattern", default=None,
                   help="regex with a (?P<label>...) group matched in each file name")
    p.add_argument("--label-map", nargs="*", default=[], metavar="TOKEN=CLASS",
                   help="matched token -> class name, e.g. 1=FRI 2=FRII")
    p.add_argument("--class-names", nargs="+", default=list(FIRST_CLASSES), help="class order of /label")
    p.add_argument("--skip-unlabelled", action="store_true", help="leave out files without a class")
    p.set_defaults(func=cmd_from_fits)
