"""Benchmark: PyBDSF seconds per 80x80 image and shard throughput.

Compares, on real images (FIRST crops from ../shared/data/first_fits, clipped
below 3x rms and min-max scaled like the FIRST dataset; or LoTSS DR1 cutouts
with negatives clipped, like the LoTSS training set):

1. one process per image (``python -c 'import bdsf; bdsf.process_image(...)'``);
2. in-process without ``gc.freeze()``;
3. in-process with ``gc.freeze()`` (what ``radiogen pybdsf shard`` does);
4. a whole image set split in two shards run as two parallel
   ``radiogen pybdsf shard`` processes (2 cores), in images/s and per core.

Usage: ``python benchmarks/bench_pybdsf.py [--dataset first|lotss] [--n 40]``.
Prints figures only; the target is >= 8 images/s per core (50,000 images in
under 15 minutes on one 64-core node).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "tests"))

from radiogen.evaluation import pybdsf as P  # noqa: E402
from radiogen.evaluation import pybdsf_runtime as RT  # noqa: E402

TARGET_PER_CORE = 8.0


def load_images(dataset: str, n: int, shared: Path) -> tuple[np.ndarray, dict]:
    from test_pybdsf import first_crops, lotss_cutouts

    if dataset == "first":
        crops, _ = first_crops(shared / "first_fits", n=32)
        meta = {"dataset": "first", "pixel_scale_arcsec": 1.8, "beam_arcsec": 5.4,
                "frequency_hz": 1.4e9, "projection": "TAN"}
        images = crops
        peaks = None
    else:
        from radiogen.lotss.preprocess import scale_images

        table = lotss_cutouts(shared / "lotss_dr1")
        images, peaks = scale_images(np.stack(table["image"].to_list()))
        meta = {"dataset": "lotss", "pixel_scale_arcsec": 1.5, "beam_arcsec": 6.0,
                "frequency_hz": 144e6, "projection": "SIN"}
    reps = int(np.ceil(n / len(images)))
    images = np.concatenate([images] * reps)[:n]
    meta["peaks"] = None if peaks is None else np.concatenate([peaks] * reps)[:n]
    return images, meta


def in_process(images, meta, *, freeze: bool) -> float:
    kwargs = {k: meta[k] for k in ("pixel_scale_arcsec", "beam_arcsec", "frequency_hz",
                                   "projection")}
    RT.import_bdsf()
    with tempfile.TemporaryDirectory() as tmp, RT.gc_frozen(freeze):
        start, cpu = time.perf_counter(), time.process_time()
        for i, image in enumerate(images):
            P.measure_image(image, index=i, seed=1, workdir=tmp, **kwargs)
        return ((time.perf_counter() - start) / len(images),
                (time.process_time() - cpu) / len(images))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_per_image(images, meta) -> tuple[float, float]:
    code = (
        "import sys, bdsf; bdsf.process_image(sys.argv[1], quiet=True, thresh='hard', "
        "thresh_isl=5.0, thresh_pix=0.5, mean_map='const', rms_map=True, "
        f"beam=({meta['beam_arcsec']}/3600, {meta['beam_arcsec']}/3600, 0.0), "
        f"frequency={meta['frequency_hz']})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, image in enumerate(images):
            noisy = image + np.random.default_rng(i).normal(0, 0.01 * min(image.max(), 1),
                                                          image.shape)
            path = Path(tmp) / f"im{i}.fits"
            P.write_fits_image(path, noisy, pixel_scale_arcsec=meta["pixel_scale_arcsec"],
                               beam_arcsec=meta["beam_arcsec"],
                               frequency_hz=meta["frequency_hz"], projection=meta["projection"])
            paths.append(path)
        start, cpu = time.perf_counter(), _children_cpu()
        for path in paths:
            subprocess.run([sys.executable, "-c", code, str(path)], check=False,
                           capture_output=True)
        return ((time.perf_counter() - start) / len(paths),
                (_children_cpu() - cpu) / len(paths))


def shard_throughput(images, meta, *, cores: int = 2) -> tuple[float, float, int]:
    from test_pybdsf import write_image_set

    with tempfile.TemporaryDirectory() as tmp:
        path = write_image_set(Path(tmp) / "set.h5", images, dataset=meta["dataset"],
                               peak_flux=meta["peaks"])
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": f"{REPO / 'lib'}:{os.environ.get('PYTHONPATH', '')}"}
        start, cpu = time.perf_counter(), _children_cpu()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "radiogen.cli", "--log-level", "WARNING",
                 "pybdsf", "shard", "--image-set", str(path), "--shard", str(k),
                 "--n-shards", str(cores), "--output", f"{tmp}/{k}.csv",
                 "--models", f"{tmp}/{k}.h5", "--seed", "1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for k in range(cores)
        ]
        codes = [p.wait() for p in procs]
        elapsed = time.perf_counter() - start
        cpu = _children_cpu() - cpu
        if any(codes):
            raise SystemExit(f"shard processes failed with exit codes {codes}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return len(images) / elapsed, len(images) / cpu, peak_kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["first", "lotss"], default="first")
    parser.add_argument("--n", type=int, default=40, help="images for the in-process runs")
    parser.add_argument("--n-subprocess", type=int, default=5)
    parser.add_argument("--n-shard", type=int, default=80, help="images of the 2-core shard run")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    if not args.shared.exists():
        raise SystemExit(f"real data missing: {args.shared}")
    images, meta = load_images(args.dataset, max(args.n, args.n_shard), args.shared)
    print(f"dataset {args.dataset}: {images.shape[1]}x{images.shape[2]} images, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    # a long-lived process holds many objects (pandas, astropy, matplotlib): import
    # what the evaluation jobs import so the gc cost is realistic
    import astropy.table  # noqa: F401
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401

    print(f"tracked objects in this process: {len(gc.get_objects())}")
    print("(wall = elapsed time; CPU = this work's own CPU seconds, which a loaded machine "
          "inflates far less)")
    wall, cpu = process_per_image(images[: args.n_subprocess], meta)
    print(f"one process per image        : {wall:7.3f} s/image wall, {cpu:7.3f} s/image CPU "
          f"({args.n_subprocess} images)")
    n_slow = min(args.n, 10)
    wall, cpu = in_process(images[:n_slow], meta, freeze=False)
    print(f"in-process, no gc.freeze     : {wall:7.3f} s/image wall, {cpu:7.3f} s/image CPU "
          f"({n_slow} images)")
    wall, cpu = in_process(images[: args.n], meta, freeze=True)
    print(f"in-process, gc.freeze        : {wall:7.3f} s/image wall, {cpu:7.3f} s/image CPU "
          f"({args.n} images) = {1 / cpu:.1f} images per CPU-second")
    rate, cpu_rate, peak_kb = shard_throughput(images[: args.n_shard], meta, cores=2)
    print(f"2 shards on 2 cores          : {rate:7.2f} images/s wall = {rate / 2:.2f} images/s "
          f"per core; {cpu_rate:.2f} images per CPU-second incl. start-up ({args.n_shard} "
          f"images, peak RSS per shard {peak_kb / 1024:.0f} MiB)")
    for label, per_core in (("wall", rate / 2), ("CPU", cpu_rate)):
        verdict = "meets" if per_core >= TARGET_PER_CORE else "misses"
        print(f"target >= {TARGET_PER_CORE:.0f} images/s per core ({label}): {verdict} "
              f"(50,000 images on 64 cores: {50000 / (per_core * 64) / 60:.1f} min)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
