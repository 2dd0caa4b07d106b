"""``radiogen model fetch`` / ``import``: the seed paper's published networks as radiogen model files."""

from __future__ import annotations

import json
from pathlib import Path


def register(topics) -> None:
    """Add the ``model`` subcommands."""
    imp = topics.add_parser(
        "model", "import",
        help="write a radiogen model file from the authors' published parameters_<name>.pt + config_<name>.json",
    )
    imp.add_argument("--from", dest="source", required=True, choices=["lofar-diffusion"],
                     help="format of the published model (lofar-diffusion: tmartinezML/LOFAR-Diffusion)")
    imp.add_argument("--parameters", type=Path, required=True, help="parameters_<name>.pt")
    imp.add_argument("--config", type=Path, required=True, help="config_<name>.json")
    imp.add_argument("--out", type=Path, required=True, help="radiogen model file to write (model.pt)")
    imp.add_argument("--weights", choices=["ema", "raw"], default="ema",
                     help="EMA weights (what the authors sample with; default) or the raw training weights")
    context = imp.add_mutually_exclusive_group()
    context.add_argument("--dataset", type=Path, default=None,
                         help="LoTSS: LOFAR_Dataset.h5; the peak-flux transform is fitted on its image maxima")
    context.add_argument("--boxcox", type=float, nargs=3, metavar=("LAMBDA", "MEAN", "STD"), default=None,
                         help="LoTSS: the fitted Box-Cox lambda and the mean/std of the transformed maxima")
    imp.set_defaults(func=_import)

    fetch = topics.add_parser(
        "model", "fetch",
        help="download a published model's files (share links of the authors' repository), resumable",
    )
    fetch.add_argument("name", choices=["lofar-diffusion-lotss", "lofar-diffusion-first"],
                       help="which published model (lotss also fetches LOFAR_Dataset.h5 for its peak-flux transform)")
    fetch.add_argument("--out-dir", type=Path, required=True,
                       help="download folder; size and SHA-256 are recorded there after the first download")
    fetch.add_argument("--local-dir", type=Path, default=None,
                       help="folder with copies already at hand: a file found there is used instead")
    fetch.set_defaults(func=_fetch)


def _import(args) -> int:
    from radiogen.model.lofar_import import import_lofar_diffusion

    result = import_lofar_diffusion(parameters=args.parameters, config=args.config, out=args.out,
                                    weights=args.weights, dataset=args.dataset, boxcox=args.boxcox)
    print(json.dumps(result))
    return 0


def _fetch(args) -> int:
    from radiogen.model.lofar_fetch import fetch_published

    files = fetch_published(args.name, args.out_dir, local_dir=args.local_dir)
    print(json.dumps(files, indent=2))
    return 0
