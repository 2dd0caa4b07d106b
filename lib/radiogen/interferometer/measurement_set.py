"""A measurement set of a LOFAR HBA observation, built with python-casacore.

Rows are time-major, one per cross-correlation baseline (no autocorrelations),
with four linear correlations (XX, XY, YX, YY) as LOFAR records them.  UVW are
computed with casacore measures: for each time, the station positions relative
to the first station are turned into (u, v, w) towards the phase centre
(J2000), and a baseline's UVW is that of ANTENNA2 minus that of ANTENNA1, as
casacore derives it (TaQL ``mscal.uvwj2000()`` agrees to < 1e-6 of the baseline).
With it WSClean's prediction of a source at direction cosines (l, m) is
``S exp(+2 pi i (u l + v m + w (n - 1)) / lambda)`` (measured; the same as the
RIME's ``exp(-2 pi i ...)`` with the baseline ANTENNA1 - ANTENNA2).

The measures need casacore's data tables (Debian ``casacore-data``; without
them UVW fails with "frame information missing"); :func:`check_measures_data`
says so before any work.
"""

from __future__ import annotations

import datetime
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiogen.errors import ConfigError, InputFileError
from radiogen.interferometer.settings import InterferometerSettings
from radiogen.interferometer.stations import Stations, station_diameter_m

__all__ = ["ObservationSummary", "build_measurement_set", "check_measures_data", "track_times", "phase_centre",
           "integration_count"]

#: Seconds in a day / seconds in a sidereal day: sidereal time runs this much faster.
SIDEREAL_RATE = 1.002737909350795
#: Rows written at a time (the data columns of a full LoTSS track would not fit in memory at once).
ROWS_PER_CHUNK = 50_000
#: casacore Stokes codes of the linear correlations XX, XY, YX, YY.
LINEAR_CORRELATIONS = [9, 10, 11, 12]


@dataclass(frozen=True)
class ObservationSummary:
    """What was built: counts, times (MJD seconds, UTC) and the elevation range, deg."""

    path: Path
    n_stations: int
    n_baselines: int
    n_times: int
    n_channels: int
    n_rows: int
    start_mjd_s: float
    end_mjd_s: float
    min_elevation_deg: float
    max_elevation_deg: float


def _measures():
    from casacore.measures import measures

    return measures()


def check_measures_data() -> None:
    """Raise :class:`InputFileError` when casacore cannot convert to apparent frames.

    A UVW conversion needs casacore's measures data (IERS tables, observatories);
    without it casacore only reports "frame information missing" deep inside a build.
    """
    from casacore.quanta import quantity

    dm = _measures()
    try:
        position = dm.observatory("LOFAR")
        dm.do_frame(position)
        dm.do_frame(dm.epoch("utc", quantity(5.0e9, "s")))
        dm.measure(dm.direction("J2000", quantity(0.0, "rad"), quantity(1.0, "rad")), "AZEL")
    except RuntimeError as err:
        raise InputFileError(f"casacore measures data missing or unreadable ({err}); install the Debian "
                             "package casacore-data (apt-get install casacore-data), or a python-casacore "
                             "wheel that ships its data") from err


def phase_centre(ra_deg: float, dec_deg: float):
    """The J2000 direction measure of a phase centre given in degrees."""
    from casacore.quanta import quantity

    return _measures().direction("J2000", quantity(ra_deg, "deg"), quantity(dec_deg, "deg"))


def integration_count(settings: InterferometerSettings) -> int:
    """Integrations (times) of the track: track_hours / integration_s, rounded, at least one."""
    return max(1, int(round(settings.track_hours * 3600.0 / settings.integration_s)))


def track_times(settings: InterferometerSettings, *, ra_deg: float, reference_xyz_m) -> np.ndarray:
    """Centres of the integrations (MJD seconds, UTC) of a track centred on transit.

    The transit is the first after 00:00 UTC of ``settings.date_utc`` at the
    reference position (ITRF metres): local apparent sidereal time equals the
    right ascension there.
    """
    from casacore.quanta import quantity

    dm = _measures()
    dm.do_frame(dm.position("itrf", *(quantity(float(c), "m") for c in reference_xyz_m)))
    date = datetime.date.fromisoformat(settings.date_utc)
    midnight_mjd = (date - datetime.date(1858, 11, 17)).days
    epoch = dm.epoch("utc", quantity(midnight_mjd, "d"))
    last_turns = dm.measure(epoch, "LAST")["m0"]["value"] % 1.0  # local sidereal time, days (turns)
    hour_angle_turns = (last_turns - ra_deg / 360.0) % 1.0
    transit_s = midnight_mjd * 86400.0 + ((1.0 - hour_angle_turns) % 1.0) * 86400.0 / SIDEREAL_RATE
    n_times = integration_count(settings)
    offsets = (np.arange(n_times) - (n_times - 1) / 2.0) * settings.integration_s
    return transit_s + offsets


def _station_uvw(stations: Stations, times_mjd_s: np.ndarray, *, ra_deg: float, dec_deg: float):
    """UVW of each station relative to the first (n_times, n_stations, 3) m, and elevations, deg."""
    from casacore.quanta import quantity

    dm = _measures()
    reference = stations.xyz_m[0]
    dm.do_frame(dm.position("itrf", *(quantity(float(c), "m") for c in reference)))
    direction = dm.direction("J2000", quantity(ra_deg, "deg"), quantity(dec_deg, "deg"))
    dm.do_frame(direction)
    relative = stations.xyz_m - reference
    baseline = dm.baseline("itrf", *(quantity(list(relative[:, k]), "m") for k in range(3)))
    uvw = np.empty((len(times_mjd_s), len(stations.names), 3))
    elevation = np.empty(len(times_mjd_s))
    for i, time_s in enumerate(times_mjd_s):
        dm.do_frame(dm.epoch("utc", quantity(float(time_s), "s")))
        try:
            converted = dm.to_uvw(baseline)["xyz"].get_value("m")
        except RuntimeError as err:
            raise InputFileError(f"casacore could not compute UVW ({err}); install casacore-data") from err
        uvw[i] = np.asarray(converted, dtype=float).reshape(-1, 3)
        elevation[i] = math.degrees(dm.measure(direction, "AZEL")["m1"]["value"])
    return uvw, elevation


def _table_description(n_channels: int):
    from casacore import tables

    columns = [tables.makearrcoldesc(name, 0j, shape=[n_channels, 4], valuetype="complex",
                                     comment=comment)
               for name, comment in (("DATA", "observed: model plus thermal noise, Jy"),
                                     ("MODEL_DATA", "predicted from the sky model, Jy"))]
    return tables.maketabdesc(columns)


def build_measurement_set(path: str | Path, *, stations: Stations, settings: InterferometerSettings,
                          ra_deg: float, dec_deg: float, block: int | None = None) -> ObservationSummary:
    """Write the measurement set ``path`` (written beside as ``*.tmp``, then renamed).

    DATA and MODEL_DATA hold zeros, FLAG false, WEIGHT and SIGMA one; UVW and
    TIME are filled.  An existing ``path`` is replaced.  With ``block`` the set
    holds only that channel block's channels
    (:meth:`InterferometerSettings.block_channels`); the rows, stations, times
    and UVW are those of every block.

    Raises
    ------
    ConfigError
        The phase centre is below ``settings.min_elevation_deg`` at some time
        of the track (the message gives the lowest elevation and the track).
    """
    from casacore import tables

    path = Path(path)
    check_measures_data()
    times = track_times(settings, ra_deg=ra_deg, reference_xyz_m=stations.xyz_m[0])
    station_uvw, elevation = _station_uvw(stations, times, ra_deg=ra_deg, dec_deg=dec_deg)
    if elevation.min() < settings.min_elevation_deg:
        raise ConfigError(
            f"skymap.interferometer: the phase centre (RA {ra_deg} deg, Dec {dec_deg} deg) is at elevation "
            f"{elevation.min():.1f} deg during the {settings.track_hours} h track on {settings.date_utc}, below "
            f"min_elevation_deg {settings.min_elevation_deg}; shorten the track or choose another field")
    n_stations = len(stations.names)
    antenna1, antenna2 = np.triu_indices(n_stations, k=1)
    n_baselines, n_times = len(antenna1), len(times)
    frequencies, width = (settings.channel_frequencies_hz() if block is None
                          else settings.block_frequencies_hz(block))
    n_channels = len(frequencies)

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ms = tables.default_ms(str(tmp), _table_description(n_channels))
    try:
        n_rows = n_times * n_baselines
        ms.addrows(n_rows)
        uvw = (station_uvw[:, antenna2, :] - station_uvw[:, antenna1, :]).reshape(n_rows, 3)
        ms.putcol("UVW", uvw)
        ms.putcol("TIME", np.repeat(times, n_baselines))
        ms.putcol("TIME_CENTROID", np.repeat(times, n_baselines))
        for column in ("INTERVAL", "EXPOSURE"):
            ms.putcol(column, np.full(n_rows, settings.integration_s))
        ms.putcol("ANTENNA1", np.tile(antenna1, n_times).astype(np.int32))
        ms.putcol("ANTENNA2", np.tile(antenna2, n_times).astype(np.int32))
        for column in ("DATA_DESC_ID", "FIELD_ID", "SCAN_NUMBER", "ARRAY_ID", "OBSERVATION_ID",
                       "PROCESSOR_ID", "STATE_ID", "FEED1", "FEED2"):
            ms.putcol(column, np.zeros(n_rows, dtype=np.int32))
        for start in range(0, n_rows, ROWS_PER_CHUNK):  # in chunks: bounded memory for any size
            count = min(ROWS_PER_CHUNK, n_rows - start)
            zeros = np.zeros((count, n_channels, 4), dtype=np.complex64)
            ms.putcol("DATA", zeros, startrow=start, nrow=count)
            ms.putcol("MODEL_DATA", zeros, startrow=start, nrow=count)
            ms.putcol("FLAG", np.zeros((count, n_channels, 4), dtype=bool), startrow=start, nrow=count)
        ms.putcol("FLAG_ROW", np.zeros(n_rows, dtype=bool))
        ms.putcol("WEIGHT", np.ones((n_rows, 4), dtype=np.float32))
        ms.putcol("SIGMA", np.ones((n_rows, 4), dtype=np.float32))
        _fill_subtables(ms, tmp, stations=stations, frequencies=frequencies, width=width,
                        ra_deg=ra_deg, dec_deg=dec_deg, times=times, integration_s=settings.integration_s)
    finally:
        ms.close()
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return ObservationSummary(path, n_stations, n_baselines, n_times, n_channels, n_rows,
                              float(times[0] - settings.integration_s / 2),
                              float(times[-1] + settings.integration_s / 2),
                              float(elevation.min()), float(elevation.max()))


def _fill_subtables(ms, path: Path, *, stations: Stations, frequencies, width, ra_deg, dec_deg, times,
                    integration_s) -> None:
    """ANTENNA, FEED, SPECTRAL_WINDOW, POLARIZATION, DATA_DESCRIPTION, FIELD, OBSERVATION."""
    from casacore import tables

    def subtable(name):
        return tables.table(f"{path}/{name}", readonly=False, ack=False)

    n = len(stations.names)
    with subtable("ANTENNA") as antenna:
        antenna.addrows(n)
        antenna.putcol("NAME", list(stations.names))
        antenna.putcol("STATION", list(stations.names))
        antenna.putcol("TYPE", ["GROUND-BASED"] * n)
        antenna.putcol("MOUNT", ["X-Y"] * n)
        antenna.putcol("POSITION", stations.xyz_m)
        antenna.putcol("OFFSET", np.zeros((n, 3)))
        antenna.putcol("DISH_DIAMETER", np.array([station_diameter_m(s) for s in stations.names]))
        antenna.putcol("FLAG_ROW", np.zeros(n, dtype=bool))
    with subtable("FEED") as feed:
        feed.addrows(n)
        feed.putcol("ANTENNA_ID", np.arange(n, dtype=np.int32))
        feed.putcol("FEED_ID", np.zeros(n, dtype=np.int32))
        feed.putcol("SPECTRAL_WINDOW_ID", np.full(n, -1, dtype=np.int32))
        feed.putcol("NUM_RECEPTORS", np.full(n, 2, dtype=np.int32))
        feed.putcol("POLARIZATION_TYPE", np.array([["X", "Y"]] * n))
        feed.putcol("RECEPTOR_ANGLE", np.zeros((n, 2)))
        feed.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=np.complex64), (n, 1, 1)))
        feed.putcol("BEAM_OFFSET", np.zeros((n, 2, 2)))
        feed.putcol("POSITION", np.zeros((n, 3)))
        feed.putcol("TIME", np.full(n, float(times.mean())))
        feed.putcol("INTERVAL", np.full(n, float(times[-1] - times[0] + integration_s)))
    n_channels = len(frequencies)
    with subtable("SPECTRAL_WINDOW") as window:
        window.addrows(1)
        window.putcell("NUM_CHAN", 0, n_channels)
        window.putcell("CHAN_FREQ", 0, np.asarray(frequencies))
        for column in ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
            window.putcell(column, 0, np.full(n_channels, width))
        window.putcell("REF_FREQUENCY", 0, float(np.mean(frequencies)))
        window.putcell("TOTAL_BANDWIDTH", 0, float(width * n_channels))
        window.putcell("MEAS_FREQ_REF", 0, 5)  # TOPO
        window.putcell("NAME", 0, "HBA")
    with subtable("POLARIZATION") as polarization:
        polarization.addrows(1)
        polarization.putcell("NUM_CORR", 0, 4)
        polarization.putcell("CORR_TYPE", 0, np.array(LINEAR_CORRELATIONS, dtype=np.int32))
        polarization.putcell("CORR_PRODUCT", 0, np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.int32))
    with subtable("DATA_DESCRIPTION") as description:
        description.addrows(1)
        description.putcell("SPECTRAL_WINDOW_ID", 0, 0)
        description.putcell("POLARIZATION_ID", 0, 0)
    direction = np.array([[[math.radians(ra_deg), math.radians(dec_deg)]]])
    with subtable("FIELD") as field:
        field.addrows(1)
        for column in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            field.putcell(column, 0, direction[0])
        field.putcell("NAME", 0, "radiogen")
        field.putcell("NUM_POLY", 0, 0)
        field.putcell("TIME", 0, float(times[0]))
    with subtable("OBSERVATION") as observation:
        observation.addrows(1)
        observation.putcell("TELESCOPE_NAME", 0, "LOFAR")
        observation.putcell("OBSERVER", 0, "radiogen")
        observation.putcell("PROJECT", 0, "radiogen simulation")
        observation.putcell("TIME_RANGE", 0, np.array([times[0] - integration_s / 2,
                                                       times[-1] + integration_s / 2]))
