"""Settings of the interferometric observation (config ``skymap.interferometer``).

The defaults live in ``workflow/schemas/skymap-interferometer.schema.yaml`` only;
this class requires every key a job reads and names the first missing, unknown
or invalid one.

Each job reads the keys of its stage only (:data:`STAGE_KEYS`): the measurement
sets, their prediction and noise draws depend on the observation's keys, the
noise calibration also on the image weighting, and CLEAN's keys reach the
imaging alone.  So a changed CLEAN setting reimages the observation without
predicting it again, and a changed weighting recalibrates its noise; keys of
later stages are None in an earlier stage's settings, so no job can read a key
its rule does not pass.  ``threads`` reaches the jobs as ``--threads``, outside
the settings JSON, so another thread count reruns nothing.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, fields
from typing import Mapping

from radiogen.config import block_values
from radiogen.errors import ConfigError

__all__ = ["InterferometerSettings", "settings_json", "STAGE_KEYS", "OBSERVATION_KEYS", "WEIGHTING_KEYS",
           "CLEAN_KEYS"]

#: Keys that decide the visibilities: the measurement sets, their prediction and noise draws.
OBSERVATION_KEYS = ("stations", "date_utc", "track_hours", "integration_s", "frequency_range_mhz", "channels",
                    "channel_blocks", "min_elevation_deg")
#: The image weighting: with the observation it sets the thermal-noise calibration (the image rms).
WEIGHTING_KEYS = ("robust", "taper_arcsec", "uv_min_lambda")
#: Deconvolution and the restoring-beam fit: read by the imaging only.
CLEAN_KEYS = ("auto_mask_sigma", "auto_threshold_sigma", "max_iterations", "major_gain", "beam_fitting_size",
              "multiscale")
#: The keys each stage's jobs read, ``threads`` besides: ``observation`` (build, predict, add noise),
#: ``noise`` (calibrate the noise, or observe in one process) and ``image``.
STAGE_KEYS = {"observation": OBSERVATION_KEYS, "noise": OBSERVATION_KEYS + WEIGHTING_KEYS,
              "image": OBSERVATION_KEYS + WEIGHTING_KEYS + CLEAN_KEYS}

@dataclass(frozen=True)
class InterferometerSettings:
    """One observation and its imaging; see the schema for each key's meaning and units."""

    stations: tuple[str, ...] | None
    date_utc: str
    track_hours: float
    integration_s: float
    frequency_range_mhz: tuple[float, float]
    channels: int
    channel_blocks: int
    min_elevation_deg: float
    threads: int
    # None in the settings of a stage that does not read them (STAGE_KEYS)
    robust: float | None = None
    taper_arcsec: float | None = None
    uv_min_lambda: float | None = None
    auto_mask_sigma: float | None = None
    auto_threshold_sigma: float | None = None
    max_iterations: int | None = None
    major_gain: float | None = None
    beam_fitting_size: float | None = None
    multiscale: bool | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping, *, name: str = "skymap.interferometer",
                     stage: str = "image") -> "InterferometerSettings":
        """Build from a config block, keeping the keys of ``stage`` (:data:`STAGE_KEYS`) and ``threads``.

        Keys of later stages may be given (the whole config block) and are left
        out; unknown keys, missing keys of the stage and invalid values are
        ConfigErrors.
        """
        if stage not in STAGE_KEYS:
            raise ValueError(f"unknown interferometer stage {stage!r}; one of {', '.join(STAGE_KEYS)}")
        kept = STAGE_KEYS[stage] + ("threads",)
        later = tuple(f.name for f in fields(cls) if f.name not in kept)
        # switch and job resources are not the observation's; later stages' keys are optional here
        values = block_values(mapping, cls, name=name, ignored=("enabled", "mem_mb", "runtime_min"),
                              optional=later)
        values = {key: value for key, value in values.items() if key in kept}
        values["frequency_range_mhz"] = tuple(float(v) for v in values["frequency_range_mhz"])
        if values["stations"] is not None:
            values["stations"] = tuple(str(s) for s in values["stations"])
        settings = cls(**values)
        settings.validate(name)
        return settings

    @property
    def stage(self) -> str:
        """The latest stage whose keys these settings hold."""
        if self.auto_mask_sigma is not None:
            return "image"
        return "noise" if self.robust is not None else "observation"

    def validate(self, name: str = "skymap.interferometer") -> None:
        """Raise :class:`ConfigError` naming the first invalid key (of those these settings hold)."""
        for key in ("track_hours", "integration_s", "auto_mask_sigma", "auto_threshold_sigma", "major_gain",
                    "beam_fitting_size"):
            if getattr(self, key) is None:
                continue
            value = float(getattr(self, key))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}.{key} must be a finite number > 0, got {value!r}")
        if self.track_hours > 12:
            raise ConfigError(f"{name}.track_hours must be <= 12 h (an hour-angle track about transit), "
                              f"got {self.track_hours}")
        if self.integration_s > self.track_hours * 3600:
            raise ConfigError(f"{name}.integration_s ({self.integration_s} s) is longer than the track "
                              f"({self.track_hours} h)")
        low, high = self.frequency_range_mhz
        if not 0 < low < high:
            raise ConfigError(f"{name}.frequency_range_mhz needs 0 < low < high MHz, got [{low}, {high}]")
        if int(self.channels) < 1:
            raise ConfigError(f"{name}.channels must be >= 1, got {self.channels}")
        if int(self.channel_blocks) < 1:
            raise ConfigError(f"{name}.channel_blocks must be >= 1, got {self.channel_blocks}")
        if int(self.channels) % int(self.channel_blocks):
            raise ConfigError(f"{name}.channels ({self.channels}) must be a multiple of {name}.channel_blocks "
                              f"({self.channel_blocks}): every block holds the same number of channels")
        if not 0 <= self.min_elevation_deg < 90:
            raise ConfigError(f"{name}.min_elevation_deg must be within [0, 90), got {self.min_elevation_deg}")
        if self.robust is not None:
            if not -2 <= self.robust <= 2:
                raise ConfigError(f"{name}.robust must be within [-2, 2], got {self.robust}")
            if self.taper_arcsec < 0 or self.uv_min_lambda < 0:
                raise ConfigError(f"{name}: taper_arcsec and uv_min_lambda must be >= 0")
        if self.major_gain is not None and self.major_gain > 1:
            raise ConfigError(f"{name}.major_gain must be within (0, 1], got {self.major_gain}")
        if int(self.threads) < 1:
            raise ConfigError(f"{name}.threads must be >= 1, got {self.threads}")
        if self.max_iterations is not None and int(self.max_iterations) < 0:
            raise ConfigError(f"{name}.max_iterations must be >= 0, got {self.max_iterations}")
        try:
            datetime.date.fromisoformat(self.date_utc)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}.date_utc must be a date YYYY-MM-DD, got {self.date_utc!r}") from None
        if self.stations is not None and len(set(self.stations)) < 2:
            raise ConfigError(f"{name}.stations needs at least two different stations, got {list(self.stations)}")

    def channel_frequencies_hz(self) -> tuple[list[float], float]:
        """Centres of the equal channels across the band and their width, Hz."""
        low, high = (f * 1e6 for f in self.frequency_range_mhz)
        width = (high - low) / self.channels
        return [low + (i + 0.5) * width for i in range(self.channels)], width

    def block_channels(self, block: int) -> range:
        """Indices of the band's channels in channel block ``block``: [b c/K, (b+1) c/K)."""
        if not 0 <= int(block) < self.channel_blocks:
            raise ConfigError(f"channel block {block} does not exist: skymap.interferometer.channel_blocks is "
                              f"{self.channel_blocks} (blocks 0 to {self.channel_blocks - 1})")
        per_block = self.channels // self.channel_blocks
        return range(int(block) * per_block, (int(block) + 1) * per_block)

    def block_frequencies_hz(self, block: int) -> tuple[list[float], float]:
        """Centres of the channels of block ``block`` and their width, Hz."""
        frequencies, width = self.channel_frequencies_hz()
        return [frequencies[i] for i in self.block_channels(block)], width


def settings_json(block: Mapping, *, stage: str = "image", threads: bool = False) -> str:
    """JSON of the keys ``stage`` reads (:data:`STAGE_KEYS`) for ``--settings``.

    Only keys that change the stage's outputs go in, so that neither a changed
    ``mem_mb`` or ``threads`` (the rules pass ``--threads`` apart) nor, for the
    measurement sets, a changed CLEAN setting makes Snakemake rerun the stage.
    ``threads`` True adds the block's ``threads`` (for calls without ``--threads``).
    """
    import json

    if stage not in STAGE_KEYS:
        raise ValueError(f"unknown interferometer stage {stage!r}; one of {', '.join(STAGE_KEYS)}")
    keys = STAGE_KEYS[stage] + (("threads",) if threads else ())
    return json.dumps({key: block[key] for key in keys}, sort_keys=True)
