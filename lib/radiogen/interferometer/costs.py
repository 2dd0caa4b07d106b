"""Memory and wall time of the interferometer's jobs, from the observation's size.

The workflow (``interferometer_resources`` in ``workflow/rules/common.smk``) asks
SLURM for what :func:`job_resources` returns, so that a 5 x 5 deg field gets
the hours and memory it needs and the smoke run's minutes stay minutes.  The
sizes are counted from the settings alone (the jobs' measurement sets have
exactly these rows and channels): visibilities = baselines x integrations x
channels (per channel block for the per-block jobs), pixels = the map's side
squared.

Per-unit costs are those measured by ``benchmarks/bench_interferometer.py``
(README, "Planning a 5 x 5 deg field"; 2-core AMD EPYC, WSClean 3.1, one thread,
core-seconds): per million visibilities 0.65 (build), 8.2 (predict + noise, which
includes the unit-noise imaging run), 13.3 (imaging with CLEAN, 2 major cycles),
plus per million pixels 0.03, 1.5, 5.4.  Peak memory was measured with
``/usr/bin/time`` on WSClean 3.1 (:data:`MEMORY`;
``benchmarks/bench_interferometer_memory.py``).  A job's estimate is these
figures times :data:`MARGIN`; the settings ``mem_mb`` and ``runtime_min`` are
floors (a job asks for the larger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from radiogen.interferometer.measurement_set import ROWS_PER_CHUNK, integration_count
from radiogen.interferometer.settings import InterferometerSettings
from radiogen.interferometer.stations import load_stations

__all__ = ["ObservationSize", "JobResources", "observation_size", "job_resources", "STEPS", "CORE_SECONDS",
           "MEMORY", "MARGIN", "ASSUMED_MAJOR_CYCLES"]

#: Core-seconds per visibility and per image pixel of each measured step (benchmarks/bench_interferometer.py).
CORE_SECONDS = {
    "build": (0.65e-6, 0.03e-6),
    "predict_noise": (8.2e-6, 1.5e-6),
    "image": (13.3e-6, 5.4e-6),  # at the benchmark's 2 major cycles
}
#: Major cycles of the benchmark's imaging, and those assumed for a real sky (each predicts and grids again).
MEASURED_MAJOR_CYCLES = 2
ASSUMED_MAJOR_CYCLES = 10
#: Peak memory of WSClean's runs, MB: (base, bytes per pixel), fitted to /usr/bin/time's peak at 1024^2 and
#: 2048^2 px (24 stations, 1 h x 60 s, 4 channels; predict 81 / 199 MB, dirty 96 / 263 MB, CLEAN 111 / 311 MB).
#: Per visibility WSClean 3.1 buffers bounded chunks (not measured; the margin covers it).
MEMORY = {
    "predict": (40.0, 40.0),
    "dirty": (40.0, 55.0),
    "clean": (40.0, 65.0),
}
#: The python side (casacore, numpy, astropy): MB at start, bytes per row held at once by the build (UVW,
#: TIME, ANTENNA1/2, WEIGHT, SIGMA: ~80), and arrays of ROWS_PER_CHUNK rows x channels x 4 complex64 at once.
PYTHON_BASE_MB = 100.0
PYTHON_BYTES_PER_ROW = 100.0
PYTHON_CHUNK_ARRAYS = 5
#: Factor on every estimate (timing noise of shared nodes, I/O, the linear fits' error).
MARGIN = 3.0
#: The jobs (rules skymap_interferometer_<step>).
STEPS = ("block", "noise", "add_noise", "image")


@dataclass(frozen=True)
class ObservationSize:
    """Counts of one observation: visibilities of the whole band and of one channel block, image pixels."""

    stations: int
    baselines: int
    integrations: int
    channels: int
    channel_blocks: int
    pixels: int

    @property
    def visibilities(self) -> int:
        return self.baselines * self.integrations * self.channels

    @property
    def block_visibilities(self) -> int:
        return self.visibilities // self.channel_blocks


@dataclass(frozen=True)
class JobResources:
    """What one job asks for: memory, MB, and wall time, minutes (each at least its floor)."""

    mem_mb: int
    runtime_min: int


def observation_size(settings: InterferometerSettings, *, size_px: int) -> ObservationSize:
    """The counts of the observation in ``settings`` imaged on a ``size_px`` square grid."""
    stations = len(load_stations(settings.stations).names)
    return ObservationSize(stations=stations, baselines=stations * (stations - 1) // 2,
                           integrations=integration_count(settings), channels=settings.channels,
                           channel_blocks=settings.channel_blocks, pixels=int(size_px) ** 2)


def _seconds(step: str, visibilities: float, pixels: float) -> float:
    per_visibility, per_pixel = CORE_SECONDS[step]
    return per_visibility * visibilities + per_pixel * pixels


def _wsclean_megabytes(run: str, pixels: float) -> float:
    base, per_pixel = MEMORY[run]
    return base + per_pixel * pixels / 1e6


def _python_megabytes(*, rows: float, channels: int) -> float:
    chunk = min(rows, ROWS_PER_CHUNK) * channels * 4 * 8  # bytes of one complex64 array of a chunk
    return PYTHON_BASE_MB + (PYTHON_BYTES_PER_ROW * rows + PYTHON_CHUNK_ARRAYS * chunk) / 1e6


def job_estimate(step: str, size: ObservationSize, *, threads: int) -> tuple[float, float]:
    """Unpadded (memory MB, wall seconds) of one job of ``step`` (see :data:`STEPS`)."""
    block, total, pixels = size.block_visibilities, size.visibilities, size.pixels
    rows, block_channels = size.baselines * size.integrations, size.channels // size.channel_blocks
    if step == "block":  # python build, then WSClean's prediction (its per-unit cost bounds predict alone)
        seconds = _seconds("build", block, pixels) + _seconds("predict_noise", block, pixels) / threads
        memory = _python_megabytes(rows=rows, channels=block_channels) + _wsclean_megabytes("predict", pixels)
    elif step == "noise":  # a dirty image of every block's unit noise (bounded by the predict + noise cost)
        seconds = _seconds("predict_noise", total, pixels) / threads
        memory = PYTHON_BASE_MB + _wsclean_megabytes("dirty", pixels)
    elif step == "add_noise":  # read and write the data columns of one block (bounded as the noise step)
        seconds = _seconds("predict_noise", block, 0)
        memory = _python_megabytes(rows=0, channels=0) + PYTHON_CHUNK_ARRAYS * ROWS_PER_CHUNK * block_channels * 32e-6
    elif step == "image":
        seconds = _seconds("image", total, pixels) * ASSUMED_MAJOR_CYCLES / MEASURED_MAJOR_CYCLES / threads
        memory = PYTHON_BASE_MB + _wsclean_megabytes("clean", pixels)
    else:
        raise ValueError(f"unknown interferometer step {step!r}; one of {', '.join(STEPS)}")
    return memory, seconds


def job_resources(step: str, settings: InterferometerSettings, *, size_px: int, floor_mem_mb: int,
                  floor_runtime_min: int) -> JobResources:
    """Memory (MB) and wall time (min) to ask for one job of ``step``: the estimate x MARGIN, at least the floors.

    Parameters
    ----------
    step : str
        ``block``, ``noise``, ``add_noise`` or ``image`` (rule ``skymap_interferometer_<step>``).
    settings : InterferometerSettings
        The observation (stations, track, channels, channel blocks) and WSClean's threads.
    size_px : int
        Side of the map, pixels (the model and the images).
    floor_mem_mb, floor_runtime_min : int
        ``skymap.interferometer.mem_mb`` and ``runtime_min``.
    """
    memory, seconds = job_estimate(step, observation_size(settings, size_px=size_px), threads=settings.threads)
    return JobResources(mem_mb=max(int(floor_mem_mb), math.ceil(memory * MARGIN)),
                        runtime_min=max(int(floor_runtime_min), math.ceil(seconds * MARGIN / 60.0)))
