"""Benchmark: cutouts/s and peak memory of one cutout job on a DR2-sized mosaic.

Writes a synthetic 10k x 10k px float64 mosaic (800 MB, DR2 grid and header,
NaN-blanked corners) and a 1,000-source catalogue to a temporary directory,
then runs ``radiogen lotss assign`` and ``radiogen lotss cutouts`` in fresh
interpreters -- exactly what the workflow's jobs run -- and prints wall time,
cutouts/s, mosaic read rate and each job's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` inside the job).

    python benchmarks/bench_cutouts.py [--size 10000] [--sources 1000] [--dtype float64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from radiogen.simulate import dr2_header


def write_mosaic(path: Path, *, size: int, dtype: str, seed: int) -> WCS:
    """Stream a noise mosaic to disk in row bands (never the whole array in memory)."""
    header = dr2_header(mosaic_id="BENCH", size=size, ra_deg=180.0, dec_deg=55.0)
    header["BITPIX"] = -64 if dtype == "float64" else -32
    header.tofile(path, overwrite=True)
    rng = np.random.default_rng(seed)
    centre, radius = (size - 1) / 2.0, 0.49 * size
    with open(path, "ab") as fh:
        for first in range(0, size, 500):
            rows = min(500, size - first)
            band = rng.normal(0.0, 80e-6, size=(rows, size))
            yy, xx = np.ogrid[first:first + rows, :size]
            band[(xx - centre) ** 2 + (yy - centre) ** 2 > radius**2] = np.nan
            fh.write(band.astype(">f8" if dtype == "float64" else ">f4").tobytes())
        pad = (-fh.tell()) % 2880
        fh.write(b"\0" * pad)
    return WCS(header)


_CHILD = (
    "import resource, sys\n"
    "from radiogen.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Run a radiogen subcommand in a fresh interpreter: (wall s, its peak RSS MB, its log)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{args[0]} failed:\n{proc.stderr}")
    rss_kb = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("MAXRSS_KB")]
    return wall, rss_kb[-1] / 1024.0, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="mosaic side, px")
    parser.add_argument("--sources", type=int, default=1_000)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--block-rows", type=int, default=256)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_cutouts_"))
    try:
        mosaic = tmp / "BENCH.fits"
        t0 = time.perf_counter()
        wcs = write_mosaic(mosaic, size=args.size, dtype=args.dtype, seed=1)
        print(f"wrote {mosaic.stat().st_size / 1e6:.0f} MB mosaic ({args.size}x{args.size} {args.dtype}) "
              f"in {time.perf_counter() - t0:.1f} s")
        rng = np.random.default_rng(2)
        xy = rng.uniform(0, args.size - 1, size=(2, args.sources))
        ra, dec = wcs.pixel_to_world_values(xy[0], xy[1])
        pd.DataFrame({"Source_Name": [f"BENCH{i:06d}" for i in range(args.sources)], "RA": ra,
                      "DEC": dec, "Peak_flux": 1.0, "Total_flux": 1.0}).to_csv(tmp / "cat.csv", index=False)
        # Drop the freshly written file from the page cache where allowed, so the
        # job reads from disk as it would on a cluster.
        if hasattr(os, "posix_fadvise"):
            with open(mosaic, "rb") as fh:
                os.fsync(fh.fileno())
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

        wall_a, rss_a, _ = run_child(["lotss", "assign", "--catalogue", str(tmp / "cat.csv"),
                                      "--mosaic", "BENCH", str(mosaic), "--out", str(tmp / "sources.h5")])
        wall_c, rss_c, log = run_child(["lotss", "cutouts", "--mosaic", str(mosaic), "--mosaic-id", "BENCH",
                                        "--sources", str(tmp / "sources.h5"), "--out", str(tmp / "BENCH.h5"),
                                        "--block-rows", str(args.block_rows)])
        mb = mosaic.stat().st_size / 1e6
        inner = [line.split(": ", 1)[1] for line in log.splitlines() if "cutouts/s" in line]
        print(f"assign job:  {wall_a:6.1f} s wall, peak RSS {rss_a:6.0f} MB")
        print(f"cutout job:  {wall_c:6.1f} s wall incl. start-up and HDF5 write: "
              f"{args.sources / wall_c:.1f} cutouts/s, {mb / wall_c:.0f} MB/s of mosaic")
        if inner:
            print(f"  cutting alone: {inner[-1]}")
        print(f"  peak RSS {rss_c:.0f} MB (mosaic on disk {mb:.0f} MB; job budget 2000 MB)")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
