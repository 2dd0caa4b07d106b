"""Dutch LOFAR HBA station positions, read from the table shipped in ``data/``.

The table's header comment names its source (the station calibration tables
LOFAR distributes in the ``lofarantpos`` package); nothing here invents a position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiogen.errors import ConfigError

__all__ = ["STATION_TABLE", "Stations", "load_stations", "station_diameter_m"]

#: The table of HBA field phase centres (ETRS89 X, Y, Z in metres).
STATION_TABLE = Path(__file__).with_name("data") / "lofar_hba_stations.csv"


@dataclass(frozen=True)
class Stations:
    """Names and geocentric positions (metres, shape (n, 3)) of the observing stations."""

    names: tuple[str, ...]
    xyz_m: np.ndarray


def station_diameter_m(name: str) -> float:
    """Diameter of an HBA field, metres: a core half-station 30.8, a remote station 41.1.

    Values of van Haarlem et al. 2013 (A&A 556, A2); written in the
    ANTENNA table's DISH_DIAMETER, which the imaging here does not use.
    """
    return 41.1 if name.startswith("RS") else 30.8


def load_stations(names: list[str] | tuple[str, ...] | None = None, *, table: Path = STATION_TABLE) -> Stations:
    """The stations ``names`` in the given order (None: every row of the table).

    Raises
    ------
    ConfigError
        A name not in the table (the message lists what is there).
    """
    rows = [line.split(",") for line in table.read_text().splitlines()
            if line and not line.startswith("#")][1:]
    positions = {row[0]: [float(v) for v in row[1:4]] for row in rows}
    chosen = [row[0] for row in rows] if names is None else list(names)
    unknown = [name for name in chosen if name not in positions]
    if unknown:
        raise ConfigError(f"skymap.interferometer.stations: unknown station(s) {', '.join(unknown)}; "
                          f"{table} has {', '.join(positions)}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"skymap.interferometer.stations: a station is listed twice in {chosen}")
    return Stations(tuple(chosen), np.array([positions[name] for name in chosen], dtype=float))
