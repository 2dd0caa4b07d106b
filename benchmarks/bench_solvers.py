"""Heun vs the multistep solvers (DPM-Solver++(2M)/(3M), iPNDM, UniPC): error against a 200-step Heun reference per network evaluation.

For one trained model and the same initial noise, every solver setting samples
the same images; the table gives, per setting, the network evaluations per
image, the RMS pixel difference (images in [0, 1]) to a 200-step Heun solution,
the Wasserstein-1 distance of the per-image mean and std to the reference set,
and images/s on this machine.

    python benchmarks/bench_solvers.py results/models/first/model.pt --images 8 --guidance 0.75
    python benchmarks/bench_solvers.py results/models/lotss/model.pt --evaluations 5 10 25
    python benchmarks/bench_solvers.py ckpt.pt --solvers ipndm dpmpp_3m --evaluations 8 10 12 --rho 5 7 9
    python benchmarks/bench_solvers.py model.pt --solvers ipndm unipc --evaluations 12 --schedules gits-12.json

A training checkpoint works as well as a model file (FIRST: one-hot class
context); ``--rho`` repeats every solver setting at other schedule exponents
(the reference keeps rho = 7); ``--schedules`` adds rows with the noise levels of
schedule files (``radiogen sample schedule``, GITS) for every solver given (a model
file only: the file's model digest is checked).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from radiogen.sampler.generate import conditioning, image_noise, image_shape, load_sampling_model
from radiogen.sampler.solvers import SOLVERS, network_evaluations, solve


def _steps_for(solver: str, evaluations: int) -> int:
    """Steps whose evaluation count is closest to ``evaluations`` (Heun: 2N - 1)."""
    return max(1, round((evaluations + 1) / 2)) if solver == "heun" else evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model.pt")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=0.75)
    parser.add_argument("--evaluations", type=int, nargs="*", default=[5, 10, 15, 25, 49])
    parser.add_argument("--reference-steps", type=int, default=200, help="Heun steps of the reference")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    parser.add_argument("--rho", type=float, nargs="+", default=[7.0], help="schedule exponents to try")
    parser.add_argument("--cache", help="reference .npy: read if it exists, else written")
    parser.add_argument("--schedules", nargs="*", default=[], help="schedule JSON files (GITS) to add rows for")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    index = np.arange(args.images)
    if args.model.rsplit("/", 1)[-1].startswith("ckpt-"):  # a training checkpoint: FIRST, EMA weights
        from bench_class_usage import load_network  # this folder's script

        net = load_network(args.model).eval()
        n_classes = int(getattr(net, "context_dim", 0))
        labels = index % max(1, n_classes)
        context = torch.nn.functional.one_hot(torch.from_numpy(labels), n_classes).float() if n_classes else None
        config = torch.load(args.model, map_location="cpu", weights_only=False)["model_config"]
        noise, _ = image_noise(args.seed, index, (config["image_channels"], *config["image_size"]))
    else:
        net, meta = load_sampling_model(args.model)
        settings = {"n_per_class": max(1, -(-args.images // max(1, len(meta.get("class_names") or [1]))))}
        arrays = conditioning(meta, settings, index, seed=args.seed)
        context = None if getattr(net, "context_dim", 0) == 0 else torch.from_numpy(arrays["context"])
        noise, _ = image_noise(args.seed, index, image_shape(meta))

    def run(solver: str, steps: int, rho: float = 7.0, sigmas=None) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        with torch.no_grad():
            x = solve(net, noise, solver=solver, context=context, guidance=args.guidance, num_steps=steps,
                      rho=rho, sigmas=sigmas)
        seconds = time.perf_counter() - start
        return ((x.clamp(-1, 1) + 1) / 2).numpy()[:, 0], seconds

    print(f"{args.model}: {args.images} images, w = {args.guidance}, reference Heun {args.reference_steps} steps",
          flush=True)
    if args.cache and Path(args.cache).exists():
        reference = np.load(args.cache)
        print(f"reference: {args.cache}", flush=True)
    else:
        reference, ref_seconds = run("heun", args.reference_steps)
        print(f"reference: {ref_seconds:.0f} s ({args.images / ref_seconds:.3f} images/s)", flush=True)
        if args.cache:
            np.save(args.cache, reference)
    ref_mean, ref_std = reference.mean(axis=(1, 2)), reference.std(axis=(1, 2))
    header = f"{'solver':>9} {'rho':>4} {'steps':>5} {'evals':>5} {'RMS vs ref':>10} {'W1 mean':>9} {'W1 std':>9} {'images/s':>9}"
    print(header)
    rows = [(rho, solver, _steps_for(solver, evaluations), None, f"{rho:g}")
            for rho in args.rho for solver in args.solvers for evaluations in args.evaluations]
    if args.schedules:
        from radiogen.sampler.generate import model_id
        from radiogen.sampler.schedules import read_schedule

        digest = model_id(args.model)
        for path in args.schedules:
            sigmas = read_schedule(path, model_digest=digest)
            rows += [(7.0, solver, len(sigmas) - 1, sigmas, "file") for solver in args.solvers]
    for rho, solver, steps, sigmas, label in rows:
        if sigmas is not None:
            print(f"# schedule: {[round(s, 4) for s in sigmas]}", flush=True)
        images, seconds = run(solver, steps, rho, sigmas)
        rms = float(np.sqrt(np.mean((images - reference) ** 2)))
        w1_mean = wasserstein_distance(images.mean(axis=(1, 2)), ref_mean)
        w1_std = wasserstein_distance(images.std(axis=(1, 2)), ref_std)
        print(f"{solver:>9} {label:>4} {steps:5d} {network_evaluations(solver, steps):5d} {rms:10.5f} "
              f"{w1_mean:9.5f} {w1_std:9.5f} {args.images / seconds:9.3f}", flush=True)

if __name__ == "__main__":
    main()
