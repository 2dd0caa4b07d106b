"""Training throughput and peak memory of the EDM U-Net (prints a table).

Each case (network config x precision x memory format) runs in a fresh
subprocess so that its peak resident memory (CPU, ru_maxrss) or peak CUDA
allocation is its own.  One case = ``--warmup`` untimed steps, then
``--steps`` timed optimiser steps (forward, EDM loss, backward, Adam, EMA)
on random 80x80 images with a 1-float context.

    python benchmarks/bench_train.py                      # CPU: paper (batch 8) + demo
    python benchmarks/bench_train.py --device cuda --batch 256 --steps 20

Reference (issue 4): the authors' implementation trains the paper config at
~0.4-0.6 images/s on this 2-core CPU (batch 8-32, fp32); on a GPU the target
is >= 1500 images/s per H100 at batch 256.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo_network() -> dict:
    """config.yaml's model section, so the demo case is the network the demo trains."""
    import yaml

    with open(os.path.join(REPO, "config.yaml")) as handle:
        return yaml.safe_load(handle)["model"]


CONFIGS = {
    "paper": {"base_channels": 128, "norm_groups": 32},  # schema defaults: 31.1 M parameters
    "demo": _demo_network(),
}


def run_case(args) -> dict:
    import torch

    from radiogen.model import build_network, model_config_from
    from radiogen.model.ema import EMA
    from radiogen.model.loss import EDMLoss

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = model_config_from(CONFIGS[args.config], image_channels=1, image_size=[args.size, args.size], context_dim=1)
    torch.manual_seed(0)
    net = build_network(cfg).to(device)
    cl = args.channels_last == "on"
    if cl:
        net.to(memory_format=torch.channels_last)
    ema = EMA(net, decay=0.9999)
    opt = torch.optim.Adam(net.parameters(), lr=2e-5)
    loss_fn = EDMLoss()
    x = torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    c = torch.randn(args.batch, 1, device=device)
    amp = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if args.precision == "bf16"
        else torch.autocast(device_type=device.type, enabled=False)
    )

    def step():
        with amp:
            loss = loss_fn(net, x, c)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(net)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": args.config,
        "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "batch": args.batch,
        "images_per_s": args.batch * args.steps / dt,
        "s_per_step": dt / args.steps,
        "peak_mb": peak_mb,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="paper,demo")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--channels-last", default="off,on")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--steps", type=int, default=2, help="timed steps per case")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", default="demo", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_case(args)))
        return
    header = f"{'config':6} {'params':>7} {'prec':5} {'NHWC':4} {'batch':>5} {'images/s':>9} {'s/step':>8} {'peak MB':>8}"
    print(f"device {args.device}, {args.size}x{args.size}x1 images, {args.threads} threads, "
          f"{args.warmup} warm-up + {args.steps} timed steps per case")
    print(header)
    for config, prec, cl in itertools.product(
        args.configs.split(","), args.precisions.split(","), args.channels_last.split(",")
    ):
        cmd = [sys.executable, __file__, "--one", "--config", config, "--precision", prec,
               "--channels-last", cl, "--device", args.device, "--batch", str(args.batch),
               "--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]
        # As `radiogen train run` does: passive OpenMP waiting (see radiogen/cli/train.py).
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            print(f"{config:6} {prec:5} {cl:4} FAILED: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['config']:6} {r['params_M']:6.2f}M {r['precision']:5} {r['channels_last']:4} {r['batch']:5d} "
              f"{r['images_per_s']:9.2f} {r['s_per_step']:8.2f} {r['peak_mb']:8.0f}", flush=True)


if __name__ == "__main__":
    main()
