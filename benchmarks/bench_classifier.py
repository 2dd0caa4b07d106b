"""Throughput of the morphology classifier: training steps and `classify` on 80x80 images.

Prints images per second for a training step (forward, backward, Adam, with
augmentations) and for inference, plus the peak resident memory.  Usage:

    python benchmarks/bench_classifier.py [--threads 2] [--batch 32] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from radiogen.classifier import classify
from radiogen.classifier.augment import AugmentSettings, augment_batch
from radiogen.classifier.network import MorphologyClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MorphologyClassifier().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 80, 80) * 2 - 1
    y = torch.randint(0, 4, (args.batch,))

    def step() -> None:
        xb = augment_batch(x, settings=AugmentSettings(), generator=generator).to(device)
        loss = F.cross_entropy(model(xb), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_rate = args.steps * args.batch / (time.perf_counter() - started)

    images = np.random.default_rng(0).random((4 * args.batch, 80, 80), dtype=np.float32)
    model.eval()
    classify(images[: args.batch], model=model, batch_size=args.batch, device=device)
    started = time.perf_counter()
    classify(images, model=model, batch_size=args.batch, device=device)
    infer_rate = len(images) / (time.perf_counter() - started)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"device {device}, threads {args.threads}, batch {args.batch}")
    print(f"training (augment + forward + backward + Adam): {train_rate:8.1f} images/s")
    print(f"classify (inference, probabilities + embeddings): {infer_rate:8.1f} images/s")
    print(f"peak resident memory: {peak_mib:.0f} MiB")
    print(f"paper epoch (1758 images) would take ~{1758 / train_rate:.0f} s of training at this rate")


if __name__ == "__main__":
    main()
