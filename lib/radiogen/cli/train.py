"""``radiogen train`` and ``radiogen train plot``: EDM training and its loss curves."""

from __future__ import annotations

import argparse
import logging
import os

from radiogen.cli.options import json_object

log = logging.getLogger("radiogen.train")

#: Exit status of a run stopped by SIGURG/SIGUSR1/SIGTERM or --stop-after after checkpointing.
EXIT_INTERRUPTED = 3




def _train(args: argparse.Namespace) -> int:
    # Before torch loads OpenMP: spinning OpenMP threads make training 3-4x
    # slower on shared or oversubscribed nodes (measured on the 2-core CI box);
    # set OMP_WAIT_POLICY=ACTIVE to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from radiogen.model.train import launch

    if args.threads:
        torch.set_num_threads(int(args.threads))
    result = launch(
        nproc=args.nproc,
        data_path=args.data,
        out_path=args.out,
        train_settings=json_object(args.settings, option="--settings"),
        model_settings=json_object(args.model_settings, option="--model-settings"),
        seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        device=args.device,
        stop_after=args.stop_after,
        compile_cache_dir=args.compile_cache,
    )
    if result["status"] != "done":
        log.warning("training interrupted at step %s; checkpoint kept, rerun to resume", result["step"])
        return EXIT_INTERRUPTED
    return 0


def _plot(args: argparse.Namespace) -> int:
    from radiogen.model import load_model
    from radiogen.model.loss_curves import plot_loss_curves

    _net, meta = load_model(args.model, device="cpu")
    cfg = meta["model_config"]
    title = (
        f"{meta['dataset']} model: base {cfg['base_channels']} ch, mults {cfg['channel_mults']}, "
        f"batch {meta['train_config'].get('batch_size')}, {meta['step']} steps"
    )
    plot_loss_curves(meta.get("history") or {}, args.out, title=title)
    return 0


def register(topics) -> None:
    p = topics.add_parser(
        "train", "run",
        help="train the EDM diffusion model on a training-set HDF5 (resumable)",
        description=(
            "Train the EDM denoiser; resumes from the newest checkpoint, checkpoints every "
            "train.checkpoint_every steps and on SIGURG/SIGUSR1/SIGTERM (exit status 3), and writes "
            "the model file (EMA weights + normalisation) after the last step."
        ),
    )
    p.add_argument("--data", required=True, help="training-set HDF5 (/images, /split, /context)")
    p.add_argument("--out", required=True, help="model file to write (model.pt)")
    p.add_argument("--settings", default="{}", help="JSON of the config's train section")
    p.add_argument("--model-settings", default="{}", help="JSON of the config's model section")
    p.add_argument("--seed", type=int, default=0, help="global seed (config seed)")
    p.add_argument("--checkpoint-dir", default=None, help="default: <folder of --out>/checkpoints")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument(
        "--nproc", default="auto",
        help="processes on this node (auto: one per GPU, else 1); ignored under torchrun/SLURM tasks",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    p.add_argument("--compile-cache", default=None,
                   help="torch.compile cache folder (default: $TORCHINDUCTOR_CACHE_DIR, else <folder of --out>/"
                        "compile-cache), kept across retried jobs")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop with a checkpoint after this many steps of this run")
    p.set_defaults(func=_train)

    q = topics.add_parser("train", "plot", help="loss curves of a trained model file")
    q.add_argument("--model", required=True, help="model.pt written by radiogen train run")
    q.add_argument("--out", required=True, help="figure (png/pdf)")
    q.set_defaults(func=_plot)
