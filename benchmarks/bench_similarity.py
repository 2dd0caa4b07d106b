"""Throughput of the Appendix-A similarity search on real FIRST crops.

Prints images/s of the principal-axis alignment, SSIM pairs/s of the global
(paper) and windowed SSIM, and the peak resident memory, so the cost of a
full run (n_generated x training images) can be estimated:

    python benchmarks/bench_similarity.py [--zip ../shared/data/first/galaxy_data.zip]
        [--training 2000] [--generated 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import resource
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from radiogen.evaluation import similarity as sim


def load_first(zip_path: Path, n: int) -> np.ndarray:
    from PIL import Image

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(".png"))
        out = []
        for name in names[:n]:
            image = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L"), dtype=np.float32)
            c = (image.shape[0] - 80) // 2
            out.append(image[c : c + 80, c : c + 80] / 255.0)
    images = np.stack(out)
    reps = -(-n // len(images))
    # Beyond the 2158 real images, reuse them mirrored so that sizes scale.
    return np.concatenate([images if r % 2 == 0 else images[:, ::-1] for r in range(reps)])[:n]


def main() -> None:
    default_zip = Path(__file__).resolve().parents[2] / "shared" / "data" / "first" / "galaxy_data.zip"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=default_zip)
    parser.add_argument("--training", type=int, default=2000)
    parser.add_argument("--generated", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = load_first(args.zip, args.training + args.generated)
    training, generated = images[: args.training], images[args.training :]
    print(f"FIRST crops: {len(training)} training, {len(generated)} generated, 80x80, {args.threads} thread(s)")

    t0 = time.perf_counter()
    train_aligned, _ = sim.align_images(training)
    gen_aligned, _ = sim.align_images(generated)
    dt = time.perf_counter() - t0
    print(f"alignment: {len(images) / dt:,.0f} images/s")

    for flips in (False, True):
        t0 = time.perf_counter()
        sim.nearest_training(gen_aligned, train_aligned, k=5, flips=flips)
        dt = time.perf_counter() - t0
        pairs = len(gen_aligned) * len(train_aligned)
        print(f"global SSIM, flips={flips}: {pairs / dt:,.0f} pairs/s ({dt:.2f} s for {pairs:,} pairs)")

    small_g, small_t = gen_aligned[:10], train_aligned[:200]
    t0 = time.perf_counter()
    sim.nearest_training(small_g, small_t, k=5, window="gaussian", flips=False)
    dt = time.perf_counter() - t0
    print(f"gaussian-window SSIM: {len(small_g) * len(small_t) / dt:,.0f} pairs/s")

    t0 = time.perf_counter()
    sim.reference_nearest(train_aligned, n_reference=200, seed=0)
    dt = time.perf_counter() - t0
    print(f"reference (200 x {len(train_aligned)}): {dt:.2f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
