"""Benchmark: peak memory of WSClean's prediction, dirty imaging and CLEAN against the image size.

Builds a 24-station (the smoke configuration's stations) LOFAR HBA measurement set
with radiogen's own builder, then runs ``wsclean -predict`` and the imaging
arguments of :mod:`radiogen.interferometer.wsclean` (with and without CLEAN) under
``/usr/bin/time -v`` at several image sizes, one thread, and prints the peak
resident memory of each run and of the python build.  The per-pixel figures of
:data:`radiogen.interferometer.costs.MEMORY` come from it (1 h x 60 s, 4
channels, 1024^2 and 2048^2 px).

Usage: ``python benchmarks/bench_interferometer_memory.py [--sizes 1024 2048]``.
Prints figures only.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lib"))

from radiogen.config import section_defaults  # noqa: E402
from radiogen.interferometer import wsclean  # noqa: E402
from radiogen.interferometer.measurement_set import build_measurement_set  # noqa: E402
from radiogen.interferometer.model_image import model_header, write_model_image  # noqa: E402
from radiogen.interferometer.settings import InterferometerSettings  # noqa: E402
from radiogen.interferometer.stations import load_stations  # noqa: E402

SCALE_ARCSEC = 1.5
RA_DEG, DEC_DEG = 180.0, 55.0


def peak_mb(command: list[str]) -> float:
    """Peak resident memory (MB) of ``command``, from GNU time."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="image sides, px")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--integration-s", type=float, default=60.0)
    parser.add_argument("--channels", type=int, default=4)
    args = parser.parse_args()

    smoke = yaml.safe_load((REPO / "workflow" / "config" / "smoke.yaml").read_text())
    names = smoke["skymap"]["interferometer"]["stations"]
    settings = replace(InterferometerSettings.from_mapping(
        {**section_defaults("skymap.interferometer"), "threads": 1, "stations": names}),
        track_hours=args.hours, integration_s=args.integration_s, channels=args.channels)
    with tempfile.TemporaryDirectory(prefix="bench_interferometer_memory_") as tmp:
        work = Path(tmp)
        ms = work / "observation.ms"
        summary = build_measurement_set(ms, stations=load_stations(settings.stations), settings=settings,
                                        ra_deg=RA_DEG, dec_deg=DEC_DEG)
        visibilities = summary.n_rows * summary.n_channels
        print(f"{visibilities:,} visibilities ({summary.n_rows:,} rows): python build peak "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)
        frequencies, width = settings.channel_frequencies_hz()
        for size in args.sizes:
            header = model_header(size_px=size, scale_arcsec=SCALE_ARCSEC, ra_deg=RA_DEG, dec_deg=DEC_DEG,
                                  frequency_hz=float(np.mean(frequencies)), bandwidth_hz=width * len(frequencies))
            image = np.zeros((size, size))
            image[size // 2, size // 2], image[size // 3, size // 2 + 50] = 0.1, 0.05
            write_model_image(work / "sky", image, header, ra_deg=RA_DEG, dec_deg=DEC_DEG, scale_arcsec=SCALE_ARCSEC)
            predict = peak_mb(["wsclean", "-predict", "-use-wgridder", "-no-small-inversion", "-j", "1", "-size",
                               str(size), str(size), "-scale", f"{SCALE_ARCSEC}asec", "-name", str(work / "sky"),
                               str(ms)])
            runs = {}
            for label, clean in (("dirty", False), ("clean", True)):
                arguments = wsclean.imaging_arguments(settings, size_px=size, scale_arcsec=SCALE_ARCSEC,
                                                      data_column="MODEL_DATA", clean=clean)
                runs[label] = peak_mb(["wsclean", *arguments, "-make-psf", "-name", str(work / label), str(ms)])
            print(f"{size}^2 px: predict {predict:.0f} MB, dirty image {runs['dirty']:.0f} MB, "
                  f"CLEAN {runs['clean']:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
