"""Benchmark: throughput of the LoTSS selection (S/N_sigma and all cuts).

Prints images/s for the vectorised S/N_sigma on 1 and 2 worker processes over
``--n`` cutouts (default 100,000), the projected time for the paper's 314,942
cutouts on 2 cores (target: < 2 minutes), the speed-up over calling astropy's
``sigma_clipped_stats`` once per image, the largest difference between the two,
the end-to-end ``run_selection`` rate on an HDF5 file (I/O included), and peak
memory.

Cutouts are 80x80 px windows of the real LoTSS DR1 pixels in ../shared/data
(random positions, flips and transposes, plus NaN blanking on a few percent),
or beam-convolved Gaussian noise with point sources when that is absent.  A pool
of ``--pool`` distinct cutouts is cycled to reach ``--n`` without holding
100,000 images (2.6 GB) in memory.

Usage: python benchmarks/bench_selection.py [--n 100000] [--pool 8192] [--io 20000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lib"))

from radiogen.lotss.selection import SelectionSettings, image_statistics, run_selection  # noqa: E402
from radiogen.lotss.snr import snr_sigma_batch, snr_sigma_reference  # noqa: E402

PAPER_N = 314_942
SIZE = 80
POOL = None  # filled before forking so workers share it copy-on-write


def make_pool(n: int, seed: int) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    shared = Path(os.environ.get("RADIOGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
    fits_path = shared / "lotss_dr1" / "P205+55_400px.fits"
    if fits_path.exists():
        from astropy.io import fits

        mosaic = fits.getdata(fits_path).astype(np.float32)
        origin = f"real LoTSS DR1 pixels ({fits_path.name})"
        ny, nx = mosaic.shape
        ys = rng.integers(0, ny - SIZE, n)
        xs = rng.integers(0, nx - SIZE, n)
        images = np.stack([mosaic[y : y + SIZE, x : x + SIZE] for y, x in zip(ys, xs)])
        flips = rng.integers(0, 8, n)
        for k in range(n):
            im = images[k]
            if flips[k] & 1:
                im = im[::-1]
            if flips[k] & 2:
                im = im[:, ::-1]
            if flips[k] & 4:
                im = im.T
            images[k] = im
    else:
        from scipy.ndimage import gaussian_filter

        origin = "synthetic beam-convolved noise (../shared/data missing)"
        images = gaussian_filter(rng.normal(size=(n, SIZE, SIZE)), sigma=(0, 1.7, 1.7)).astype(np.float32)
        images *= 1e-4 / images.std()
        bright = rng.random(n) < 0.4
        images[bright, SIZE // 2, SIZE // 2] += rng.lognormal(np.log(2e-3), 1.0, bright.sum())
        images = gaussian_filter(images, sigma=(0, 1.0, 1.0)).astype(np.float32)
    blank = rng.random(n) < 0.03
    images[blank, :10, :] = np.nan
    return images, origin


def _snr_task(bounds):
    start, stop = bounds
    idx = np.arange(start, stop) % len(POOL)
    snr_sigma_batch(POOL[idx])
    return stop - start


def _stats_task(bounds):
    start, stop = bounds
    idx = np.arange(start, stop) % len(POOL)
    image_statistics(POOL[idx], settings=SelectionSettings())
    return stop - start


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def throughput(task, n: int, workers: int, chunk: int) -> tuple[float, float]:
    """(wall-clock rate, rate per CPU-second x workers) in images/s.

    The second number is what ``workers`` otherwise idle cores would give; it
    differs from the first when other jobs share the machine.
    """
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    t0 = time.perf_counter()
    if workers == 1:
        c0 = time.process_time()
        done = sum(task(b) for b in bounds)
        cpu = time.process_time() - c0
    else:
        c0 = _children_cpu()
        pool = multiprocessing.get_context("fork").Pool(workers)
        done = sum(pool.imap_unordered(task, bounds))
        pool.close()
        pool.join()
        cpu = _children_cpu() - c0
    wall = time.perf_counter() - t0
    return done / wall, done / max(cpu, 1e-9) * workers


def main(argv=None) -> int:
    global POOL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="cutouts to process")
    parser.add_argument("--pool", type=int, default=8192, help="distinct cutouts cycled")
    parser.add_argument("--chunk", type=int, default=2048, help="cutouts per task")
    parser.add_argument("--reference", type=int, default=300, help="cutouts timed with astropy")
    parser.add_argument("--io", type=int, default=20_000, help="cutouts for the end-to-end HDF5 run (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    POOL, origin = make_pool(args.pool, args.seed)
    print(f"cutouts: {args.n} ({args.pool} distinct, {SIZE}x{SIZE} px) from {origin}")
    print(f"cores available: {os.cpu_count()}")

    load = os.getloadavg()[0]
    print(f"load average before timing: {load:.1f} (wall-clock rates drop when other jobs share the cores)")
    rate1, cpu1 = throughput(_snr_task, args.n, 1, args.chunk)
    rate2, cpu2 = throughput(_snr_task, args.n, 2, args.chunk)
    print(f"S/N_sigma vectorised, 1 process  : {rate1:8.0f} images/s wall, {cpu1:8.0f} images/s per idle core")
    print(f"S/N_sigma vectorised, 2 processes: {rate2:8.0f} images/s wall, {cpu2:8.0f} images/s on 2 idle cores")
    all1, all_cpu = throughput(_stats_task, min(args.n, 4 * args.pool), 1, args.chunk)
    print(f"all cut statistics,   1 process  : {all1:8.0f} images/s wall, {all_cpu:8.0f} images/s per idle core")

    sub = POOL[: args.reference]
    c0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.array([snr_sigma_reference(im)[0] for im in sub])
    ref_rate = len(sub) / (time.process_time() - c0)
    fast = snr_sigma_batch(sub).snr_sigma
    both = np.isfinite(ref) & np.isfinite(fast)
    rel = np.max(np.abs(fast[both] - ref[both]) / np.abs(ref[both])) if both.any() else float("nan")
    print(f"astropy per image,    1 process  : {ref_rate:8.0f} images/s per idle core "
          f"(vectorised is {cpu1 / ref_rate:.1f}x faster; max rel. difference {rel:.1e} "
          f"over {both.sum()} images, NaN pattern identical: {np.array_equal(np.isnan(ref), np.isnan(fast))})")

    projected = PAPER_N / cpu2
    verdict = "meets" if projected < 120 else "MISSES"
    print(f"projected S/N_sigma time for {PAPER_N} cutouts on 2 idle cores: {projected:.1f} s "
          f"({verdict} the 2-minute target); at this run's wall-clock rate: {PAPER_N / rate2:.1f} s")

    if args.io:
        import h5py

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cutouts.h5"
            with h5py.File(path, "w") as h5:
                idx = np.arange(args.io) % len(POOL)
                h5.create_dataset("images", data=POOL[idx], chunks=(256, SIZE, SIZE))
                h5.create_dataset("source_name", data=np.array([f"S{k}" for k in range(args.io)], object),
                                  dtype=h5py.string_dtype("utf-8"))
            t0 = time.perf_counter()
            run_selection(path, table_path=Path(tmp) / "t.csv", per_image_path=Path(tmp) / "p.csv",
                          selected_path=Path(tmp) / "s.h5", threads=2)
            rate_io = args.io / (time.perf_counter() - t0)
        print(f"run_selection end to end (HDF5 in/out, 2 processes, no figures): {rate_io:.0f} images/s; "
              f"projected {PAPER_N / rate_io:.1f} s for {PAPER_N}")

    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory: main process {peak_self:.0f} MiB, largest worker {peak_children:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
