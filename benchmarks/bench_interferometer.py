"""Benchmark: per-unit costs of the interferometer chain, and a plan for a 5 x 5 deg field.

Runs radiogen's own steps (``radiogen.interferometer.map_steps``: measurement set
with python-casacore, WSClean ``-predict`` of a Jy/pixel sky model plus
calibrated thermal noise, WSClean imaging with the configured LoTSS-like
settings) on LOFAR HBA observations of a few sizes, one thread each, and
measures per configuration: CPU seconds per step (this process and WSClean), the measurement set's bytes per
visibility, and peak memory of the WSClean runs.  From two image sizes at the
same observation and two observations at the same image size it fits, per step,

    seconds = a * visibilities + b * pixels + c      (one core)

and scales that to a 5 x 5 deg field at 1.5 arcsec/px with the observation of
``skymap.interferometer``'s defaults (62 stations, 8 h, 8 s, 24 channels).
Read the plan as an order of magnitude: it is linear in both terms (WSClean's
FFTs grow as N log N, and CLEAN on a real, dense sky runs many more major
cycles than on the benchmark's sparse sky, each a predict + image of all
visibilities; ``--major-cycles`` scales the imaging row for that).

Usage: ``python benchmarks/bench_interferometer.py [--stations 24] [--quick]``.
Prints figures only.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lib"))

from radiogen.config import section_defaults  # noqa: E402
from radiogen.interferometer import map_steps  # noqa: E402
from radiogen.interferometer.settings import InterferometerSettings  # noqa: E402
from radiogen.interferometer.stations import load_stations  # noqa: E402
from radiogen.skymap.geometry import map_header  # noqa: E402

FIELD_DEG = 5.0
SCALE_ARCSEC = 1.5
BEAM_ARCSEC = 6.0
TARGET_RMS_JY = 83e-6


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children (WSClean), so far.

    CPU time rather than wall time: the figures are core-seconds, whatever else the machine runs.
    """
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _children_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _sky_model(path: Path, header: fits.Header, *, n_sources: int, seed: int) -> None:
    """Point sources of 1-50 mJy convolved with the 6 arcsec beam, in Jy/beam (what the map's rules hand over)."""
    size = int(header["NAXIS1"])
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size), dtype=np.float32)
    sigma_px = BEAM_ARCSEC / SCALE_ARCSEC / (2 * math.sqrt(2 * math.log(2)))
    y, x = np.mgrid[-12:13, -12:13]
    stamp = np.exp(-(x**2 + y**2) / (2 * sigma_px**2)).astype(np.float32)
    for _ in range(n_sources):
        cy, cx = rng.integers(20, size - 20, size=2)
        image[cy - 12: cy + 13, cx - 12: cx + 13] += float(rng.uniform(1e-3, 5e-2)) * stamp
    fits.PrimaryHDU(image, header).writeto(path, overwrite=True)


def _directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_case(workdir: Path, settings: InterferometerSettings, *, size_px: int, seed: int) -> dict:
    """Time the three steps on one observation and one map size."""
    workdir.mkdir(parents=True)
    header = map_header(size_px=size_px, name="bench", centre_ra_deg=180.0, centre_dec_deg=50.0,
                        pixel_scale_arcsec=SCALE_ARCSEC, beam_arcsec=BEAM_ARCSEC)
    header["BUNIT"] = "JY/BEAM"
    header_path = workdir / "map_header.txt"
    header.totextfile(str(header_path))
    sky = workdir / "sky_model.fits"
    _sky_model(sky, header, n_sources=max(4, size_px // 64), seed=seed)

    t0 = _cpu_s()
    summary = map_steps.write_measurement_set(header_path, settings, workdir / "empty.ms")
    t_ms = _cpu_s() - t0
    visibilities = summary.n_rows * summary.n_channels

    t0 = _cpu_s()
    map_steps.observe_sky_model(workdir / "empty.ms", sky, settings, target_rms_jy=TARGET_RMS_JY, seed=seed,
                                output=workdir / "observed.ms", workdir=workdir / "predict",
                                log_path=workdir / "predict.log")
    t_observe = _cpu_s() - t0

    (workdir / "image").mkdir()
    t0 = _cpu_s()
    map_steps.image_observation(workdir / "observed.ms", settings, header_path=header_path,
                                prefix=workdir / "image" / "field", log_path=workdir / "image.log")
    t_image = _cpu_s() - t0
    log_text = (workdir / "image.log").read_text(errors="replace")
    major_cycles = log_text.count("Major iteration") or log_text.count("major iteration")
    return {
        "stations": summary.n_stations, "hours": settings.track_hours, "integration_s": settings.integration_s,
        "channels": summary.n_channels, "rows": summary.n_rows, "visibilities": visibilities,
        "size_px": size_px, "pixels": size_px * size_px,
        "ms_s": t_ms, "observe_s": t_observe, "image_s": t_image, "major_cycles": major_cycles,
        "ms_bytes_per_visibility": _directory_bytes(workdir / "observed.ms") / visibilities,
        "children_peak_mb": _children_peak_mb(),
    }


def _fit(cases: list[dict], key: str) -> tuple[float, float, float]:
    """Least squares seconds = a * visibilities + b * pixels + c over the cases (a, b >= 0)."""
    design = np.array([[c["visibilities"], c["pixels"], 1.0] for c in cases], dtype=float)
    target = np.array([c[key] for c in cases], dtype=float)
    best = None
    for keep in ([0, 1, 2], [0, 2], [1, 2]):  # a term below the timing noise comes out negative: drop it
        coef, *_ = np.linalg.lstsq(design[:, keep], target, rcond=None)
        if (coef[:-1] >= 0).all():
            full = np.zeros(3)
            full[keep] = coef
            best = full
            break
    if best is None:
        best = np.array([0.0, 0.0, float(target.mean())])
    return float(best[0]), float(best[1]), float(best[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", choices=("smoke", "all"), default="smoke",
                        help="the smoke configuration's 24 stations (10 core, 14 remote; default) or all 62")
    parser.add_argument("--quick", action="store_true", help="smaller cases (a smoke run of the benchmark)")
    parser.add_argument("--major-cycles", type=int, default=10,
                        help="major cycles assumed for the planned field's imaging (default 10)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    defaults = section_defaults("skymap.interferometer")
    all_names = list(load_stations(None).names)
    if args.stations == "smoke":
        smoke = yaml.safe_load((REPO / "workflow" / "config" / "smoke.yaml").read_text())
        names = smoke["skymap"]["interferometer"]["stations"]
    else:
        names = all_names
    base = InterferometerSettings.from_mapping({**defaults, "threads": 1, "stations": names})
    hours, integration_s, channels = ((0.25, 0.5), 60.0, 4) if args.quick else ((1.0, 4.0), 30.0, 16)
    sizes = (256, 512) if args.quick else (1024, 2048)
    plan = [(h, size) for h in hours for size in sizes]
    cases = []
    with tempfile.TemporaryDirectory(prefix="bench_interferometer_") as tmp:
        for i, (h, size) in enumerate(plan):
            settings = replace(base, track_hours=h, integration_s=integration_s, channels=channels)
            case = run_case(Path(tmp) / f"case{i}", settings, size_px=size, seed=args.seed + i)
            cases.append(case)
            print(f"{case['stations']} stations, {h:g} h x {integration_s:g} s, {channels} channels: {case['visibilities']:,} visibilities; "
                  f"{size} px: measurement set {case['ms_s']:.1f} s, predict + noise {case['observe_s']:.1f} s, "
                  f"imaging {case['image_s']:.1f} s ({case['major_cycles']} major cycles); "
                  f"{case['ms_bytes_per_visibility']:.1f} bytes/visibility on disk; "
                  f"peak WSClean memory so far {case['children_peak_mb']:.0f} MB", flush=True)

    fits_by_step = {key: _fit(cases, key) for key in ("ms_s", "observe_s", "image_s")}
    for key, (a, b, c) in fits_by_step.items():
        print(f"fit {key}: {a * 1e6:.3g} s per million visibilities + {b * 1e6:.3g} s per million pixels "
              f"+ {c:.2g} s")

    # The planned field: 5 x 5 deg at 1.5 arcsec/px, the schema's default observation
    n_px = math.ceil(FIELD_DEG * 3600 / SCALE_ARCSEC)
    pixels = n_px * n_px
    n_stations = len(all_names) if defaults["stations"] is None else len(defaults["stations"])
    baselines = n_stations * (n_stations - 1) // 2
    times = round(defaults["track_hours"] * 3600 / defaults["integration_s"])
    visibilities = baselines * times * defaults["channels"]
    bytes_per_vis = float(np.median([c["ms_bytes_per_visibility"] for c in cases]))
    a_ms, b_ms, _ = fits_by_step["ms_s"]
    a_obs, b_obs, _ = fits_by_step["observe_s"]
    a_img, b_img, _ = fits_by_step["image_s"]
    per_cycle = a_img * visibilities + b_img * pixels
    measured_cycles = max(1, int(np.median([c["major_cycles"] for c in cases])))
    rows = [
        ("sky-model pixels", f"{n_px:,}^2 = {pixels / 1e6:.0f} M ({pixels * 4 / 2**30:.2f} GiB as float32)"),
        ("observation", f"{n_stations} stations ({baselines:,} baselines), {defaults['track_hours']:g} h x "
                        f"{defaults['integration_s']:g} s, {defaults['channels']} channels"),
        ("visibilities", f"{visibilities / 1e6:,.0f} M ({baselines * times / 1e6:.1f} M rows)"),
        ("measurement set on disk", f"{visibilities * bytes_per_vis / 2**30:,.0f} GiB (x2: empty + observed copy)"),
        ("build the measurement set", f"{(a_ms * visibilities + b_ms * pixels) / 3600:.2f} core-hours"),
        ("predict + noise", f"{(a_obs * visibilities + b_obs * pixels) / 3600:.2f} core-hours"),
        ("imaging", f"{per_cycle / measured_cycles * args.major_cycles / 3600:.1f} core-hours at "
                    f"{args.major_cycles} major cycles (benchmark: {measured_cycles})"),
    ]
    print(f"\nPlan for a {FIELD_DEG:g} x {FIELD_DEG:g} deg field at {SCALE_ARCSEC:g} arcsec/px (linear in "
          "visibilities and pixels, one core):")
    print("| quantity | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
