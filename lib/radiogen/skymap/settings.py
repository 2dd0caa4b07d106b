"""Settings of a simulated map (config ``skymap``), read once into a typed object.

The defaults live in ``workflow/schemas/skymap.schema.yaml`` only; the workflow
fills them in, so this class requires every key and names the first missing or
unknown one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping

from radiogen.config import block_values
from radiogen.errors import ConfigError

__all__ = ["MapSettings", "settings_json", "CATALOGUE_COLUMN_KEYS"]

#: Keys of ``skymap.catalogue_columns`` (population catalogue -> its column names).
CATALOGUE_COLUMN_KEYS = ("ra", "dec", "total_flux", "major", "minor", "pa", "name")


@dataclass(frozen=True)
class MapSettings:
    """One simulated map; see the schema for each key's meaning and units."""

    size_deg: float
    centre_ra_deg: float
    centre_dec_deg: float
    header_template: str | None
    tile_px: int
    sources: str
    flux_range_mjy: tuple[float, float]
    catalogue: str | None
    catalogue_columns: dict
    catalogue_flux_unit: str
    catalogue_size_unit: str
    catalogue_sizes: str
    source_density_deg2: float
    peak_flux: str
    peak_flux_range_mjy: tuple[float, float]
    power_law_slope: float
    out_of_range: str
    outside: str
    island_threshold_sigma: float
    peak_threshold_sigma: float
    island_radius_px: float
    observation: str
    noise_rms_ujy: float
    rms_map: str | None
    match_radius_arcsec: float
    pybdsf_thresh_isl: float
    pybdsf_thresh_pix: float

    @classmethod
    def from_mapping(cls, mapping: Mapping, *, name: str = "skymap") -> "MapSettings":
        """Build from a config block; unknown, missing or invalid keys are ConfigErrors."""
        # switch, job resources and the interferometer's own section (radiogen.interferometer)
        values = block_values(mapping, cls, name=name,
                              ignored=("enabled", "mem_mb", "runtime_min", "interferometer"))
        values["peak_flux_range_mjy"] = tuple(float(v) for v in values["peak_flux_range_mjy"])
        values["flux_range_mjy"] = tuple(float(v) for v in values["flux_range_mjy"])
        values["catalogue_columns"] = dict(values["catalogue_columns"] or {})
        settings = cls(**values)
        settings.validate(name)
        return settings

    def validate(self, name: str = "skymap") -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        for key in ("size_deg", "source_density_deg2", "noise_rms_ujy", "match_radius_arcsec",
                    "island_threshold_sigma", "peak_threshold_sigma", "island_radius_px"):
            value = float(getattr(self, key))
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}.{key} must be a finite number > 0, got {value!r}")
        if not -90.0 <= self.centre_dec_deg <= 90.0:
            raise ConfigError(f"{name}.centre_dec_deg must be within [-90, 90], got {self.centre_dec_deg}")
        if self.tile_px < 16:
            raise ConfigError(f"{name}.tile_px must be >= 16, got {self.tile_px}")
        low, high = self.peak_flux_range_mjy
        if not 0 < low < high:
            raise ConfigError(f"{name}.peak_flux_range_mjy needs 0 < low < high mJy/beam, got [{low}, {high}]")
        low, high = self.flux_range_mjy
        if not 0 < low < high:
            raise ConfigError(f"{name}.flux_range_mjy needs 0 < low < high mJy, got [{low}, {high}]")
        choices = {"peak_flux": ("training", "power_law"), "out_of_range": ("clip", "error"),
                   "outside": ("drop", "error"), "observation": ("image_plane",),
                   "sources": ("counts", "catalogue", "model"), "catalogue_flux_unit": ("Jy", "mJy", "uJy"),
                   "catalogue_size_unit": ("arcsec", "arcmin", "deg"), "catalogue_sizes": ("intrinsic", "convolved")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{name}.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.peak_threshold_sigma < self.island_threshold_sigma:
            raise ConfigError(f"{name}: peak_threshold_sigma must be >= island_threshold_sigma")
        if self.sources == "catalogue" and not self.catalogue:
            raise ConfigError(f"{name}.sources is catalogue, but {name}.catalogue names no file")
        if self.sources == "counts" and self.catalogue:
            raise ConfigError(f"{name}.sources is counts (drawn from the source counts), but {name}.catalogue "
                              f"names {self.catalogue!r}: set {name}.sources: catalogue to use it")
        unknown = sorted(set(self.catalogue_columns) - set(CATALOGUE_COLUMN_KEYS))
        if unknown:
            raise ConfigError(f"{name}.catalogue_columns: unknown key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(CATALOGUE_COLUMN_KEYS)})")
        for key in ("ra", "dec", "total_flux", "major"):
            if not self.catalogue_columns.get(key):
                raise ConfigError(f"{name}.catalogue_columns.{key} must name a column")


def settings_json(block: Mapping) -> str:
    """JSON of the map's settings for ``radiogen skymap --settings`` (no job resources).

    Only keys that change the map go in, so a changed ``mem_mb`` does not make
    Snakemake rerun the map.
    """
    import json

    return json.dumps({f.name: block[f.name] for f in fields(MapSettings)}, sort_keys=True)
