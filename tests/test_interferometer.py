"""The interferometric observation with the real tools: python-casacore, casacore measures, WSClean.

A 24-station (10 core half-stations, 14 remote), 1 h, 60 s, 2-channel LOFAR HBA
observation (16,560 rows) of a point source, observed and imaged once per module
(~5 s).  Skips when WSClean or python-casacore is missing, unless
RADIOGEN_REQUIRE_INTERFEROMETER=1 (CI, .ci/run) makes that a failure.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.interferometer.settings import InterferometerSettings
from radiogen.interferometer.stations import STATION_TABLE, load_stations
from radiogen.noise import beam_covariance_px


def _unavailable(reason: str):
    """Skip with the reason; a failure when the environment promises the tools."""
    if os.environ.get("RADIOGEN_REQUIRE_INTERFEROMETER") == "1":
        pytest.fail(f"RADIOGEN_REQUIRE_INTERFEROMETER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def _tools():
    if shutil.which("wsclean") is None:
        _unavailable("wsclean is not installed (Debian package wsclean; scripts/setup installs it as root)")
    try:
        import casacore.tables  # noqa: F401
    except ImportError:
        _unavailable("python-casacore is not installed (pip install -r requirements-lock.txt)")


RA_DEG, DEC_DEG = 180.0, 55.0
SIZE_PX, SCALE_ARCSEC = 512, 1.5
TARGET_RMS_JY = 1e-3
POINT_FLUX_JY = 0.2
#: Latitude of CS001 (geodetic, deg), for the elevation at transit.
LOFAR_CORE_LATITUDE_DEG = 52.911


def _station_names() -> list[str]:
    names = [line.split(",")[0] for line in STATION_TABLE.read_text().splitlines() if line[:2] in ("CS", "RS")]
    return [n for n in names if n.endswith("HBA0")][:10] + [n for n in names if n.startswith("RS")]


def _settings(**changes) -> InterferometerSettings:
    block = section_defaults("skymap.interferometer")
    # A 6 arcsec taper: the PSF's main lobe then covers > 20 pixels of 1.5 arcsec, enough to compare its
    # shape with the fitted beam (untapered, this sparse array's main lobe has 9 pixels above half power).
    block.update(stations=_station_names(), track_hours=1.0, integration_s=60.0, channels=2, taper_arcsec=6.0)
    block.update(changes)
    return InterferometerSettings.from_mapping(block)


def _model(prefix: Path, settings: InterferometerSettings, pixels: dict[tuple[int, int], float]) -> Path:
    from radiogen.interferometer.model_image import model_header, write_model_image

    frequencies, width = settings.channel_frequencies_hz()
    header = model_header(size_px=SIZE_PX, scale_arcsec=SCALE_ARCSEC, ra_deg=RA_DEG, dec_deg=DEC_DEG,
                          frequency_hz=float(np.mean(frequencies)), bandwidth_hz=width * len(frequencies))
    image = np.zeros((SIZE_PX, SIZE_PX))
    for (y, x), flux in pixels.items():
        image[y, x] = flux
    return write_model_image(prefix, image, header, ra_deg=RA_DEG, dec_deg=DEC_DEG, scale_arcsec=SCALE_ARCSEC)


@pytest.fixture(scope="module")
def empty_ms(tmp_path_factory):
    """The measurement set with zero data, and its build summary."""
    from radiogen.interferometer.measurement_set import build_measurement_set

    settings = _settings()
    path = tmp_path_factory.mktemp("ms") / "empty.ms"
    summary = build_measurement_set(path, stations=load_stations(settings.stations), settings=settings,
                                    ra_deg=RA_DEG, dec_deg=DEC_DEG)
    return path, summary


@pytest.fixture(scope="module")
def observed(empty_ms, tmp_path_factory):
    """A point source at the phase centre: predicted, noise added, imaged."""
    from radiogen.interferometer import thermal_noise, wsclean

    settings = _settings()
    work = tmp_path_factory.mktemp("point")
    ms = work / "point.ms"
    shutil.copytree(empty_ms[0], ms)
    model = _model(work / "sky", settings, {(SIZE_PX // 2, SIZE_PX // 2): POINT_FLUX_JY})
    wsclean.predict(ms, model_prefix=str(model)[: -len("-model.fits")], size_px=SIZE_PX,
                    scale_arcsec=SCALE_ARCSEC, threads=settings.threads, log=work / "wsclean.log")
    noise = thermal_noise.add_thermal_noise(ms, target_rms_jy=TARGET_RMS_JY, settings=settings, size_px=SIZE_PX,
                                            scale_arcsec=SCALE_ARCSEC, seed=1, workdir=work,
                                            log=work / "wsclean.log")
    products = wsclean.image(ms, prefix=work / "point", settings=settings, size_px=SIZE_PX,
                             scale_arcsec=SCALE_ARCSEC, log=work / "wsclean.log")
    return ms, noise, products


def _plane(path: Path) -> np.ndarray:
    return fits.getdata(path)[0, 0].astype(float)


def _outside(radius_px: float) -> np.ndarray:
    y, x = np.mgrid[:SIZE_PX, :SIZE_PX] - SIZE_PX // 2
    return np.hypot(x, y) > radius_px


def test_bad_settings_and_stations_are_named():
    with pytest.raises(ConfigError, match="unknown station.*CS999HBA0"):
        load_stations(["CS001HBA0", "CS999HBA0"])
    with pytest.raises(ConfigError, match="frequency_range_mhz"):
        _settings(frequency_range_mhz=[168.0, 120.0])
    with pytest.raises(ConfigError, match="unknown key.*chanels"):
        InterferometerSettings.from_mapping({**section_defaults("skymap.interferometer"), "chanels": 3})


def test_each_stage_reads_only_its_keys():
    """The block and add-noise jobs get the observation's keys, the noise calibration also the weighting, the
    imaging all: a changed CLEAN setting changes only the imaging's settings (Snakemake reruns the imaging
    alone), a changed weighting also the calibration's; keys of later stages are None in earlier stages."""
    import json

    from radiogen.interferometer.settings import CLEAN_KEYS, STAGE_KEYS, WEIGHTING_KEYS, settings_json

    block = section_defaults("skymap.interferometer")
    assert set(STAGE_KEYS["image"]) | {"threads"} == {f.name for f in dataclasses.fields(InterferometerSettings)}
    stages = ("observation", "noise", "image")
    base = {stage: settings_json(block, stage=stage) for stage in stages}
    assert all("threads" not in json.loads(base[stage]) for stage in stages)  # the rules pass --threads
    cleaned = {stage: settings_json({**block, "auto_threshold_sigma": 2.0, "multiscale": True}, stage=stage)
               for stage in stages}
    weighted = {stage: settings_json({**block, "robust": 0.5}, stage=stage) for stage in stages}
    assert [cleaned[s] == base[s] for s in stages] == [True, True, False]
    assert [weighted[s] == base[s] for s in stages] == [True, False, False]
    observation = InterferometerSettings.from_mapping({**json.loads(base["observation"]), "threads": 2},
                                                      stage="observation")
    assert observation.stage == "observation"
    assert all(getattr(observation, key) is None for key in WEIGHTING_KEYS + CLEAN_KEYS)
    noise = InterferometerSettings.from_mapping(block, stage="noise")  # the whole block: later keys left out
    assert noise.stage == "noise" and noise.robust == -0.5 and noise.auto_mask_sigma is None
    with pytest.raises(ConfigError, match=r"missing key\(s\) robust"):
        InterferometerSettings.from_mapping({**json.loads(base["observation"]), "threads": 2}, stage="noise")
    with pytest.raises(ConfigError, match="max_iterations must be >= 0"):
        InterferometerSettings.from_mapping({**block, "max_iterations": -1})


def test_phase_centres_compare_across_ra_zero_and_within_rounding():
    from radiogen.interferometer.blocks import same_phase_centre

    assert same_phase_centre([359.9999999999999, 55.0], [0.0, 55.0])
    assert same_phase_centre([180.0 + 1e-13, 55.0], [180.0, 55.0 - 1e-13])
    assert not same_phase_centre([180.0, 55.0], [180.0 + 1e-6, 55.0])
    assert not same_phase_centre([180.0, 55.0], [180.0, 55.0 + 1e-6])


def test_all_dutch_hba_fields_are_real_positions():
    stations = load_stations()
    assert len(stations.names) == 62  # 24 core stations as two halves + 14 remote
    radius = np.linalg.norm(stations.xyz_m, axis=1)
    assert np.all(np.abs(radius - 6.3647e6) < 2e3)  # on the geoid's radius at 53 deg N (WGS84: 6364.7 km)
    baselines = np.linalg.norm(stations.xyz_m[:, None] - stations.xyz_m[None], axis=-1)
    # Fields do not overlap (a core half-station is 30.8 m across); the Dutch array spans ~120 km.
    assert 30.8 < baselines[baselines > 0].min() and 100e3 < baselines.max() < 200e3


def test_measurement_set_rows_track_and_uvw(empty_ms):
    from casacore import tables

    path, summary = empty_ms
    assert (summary.n_stations, summary.n_baselines, summary.n_times, summary.n_rows) == (24, 276, 60, 16560)
    # The track is centred on transit: the highest elevation is 90 deg - |dec - latitude|, reached mid-track.
    assert summary.max_elevation_deg == pytest.approx(90.0 - abs(DEC_DEG - LOFAR_CORE_LATITUDE_DEG), abs=0.1)
    # UVW from the measures agrees with casacore's own derivation from ANTENNA and FIELD (TaQL derivedmscal;
    # the two differ by Earth-orientation data only, < 1e-6 of the baseline length).
    table = tables.taql(f"select UVW, mscal.uvwj2000() as DERIVED from '{path}'")
    uvw, derived = table.getcol("UVW"), table.getcol("DERIVED")
    length = np.linalg.norm(uvw, axis=1)
    assert np.max(np.linalg.norm(uvw - derived, axis=1) / length) < 2e-6
    assert length.max() > 50e3
    with tables.table(f"{path}/SPECTRAL_WINDOW", ack=False) as window:
        assert np.allclose(window.getcell("CHAN_FREQ", 0), [132e6, 156e6])


def test_prediction_matches_a_direct_fourier_sum_off_centre(empty_ms, tmp_path):
    """WSClean's w-gridder prediction of an off-centre point source equals the measurement equation."""
    from casacore import tables

    from radiogen.interferometer import wsclean

    settings = _settings()
    ms = tmp_path / "offset.ms"
    shutil.copytree(empty_ms[0], ms)
    dx, dy, flux = 150, -90, 1.0  # pixels east-west (x, RA decreasing) and north (y): 3.75' and 2.25'
    model = _model(tmp_path / "sky", settings, {(SIZE_PX // 2 + dy, SIZE_PX // 2 + dx): flux})
    wsclean.predict(ms, model_prefix=str(model)[: -len("-model.fits")], size_px=SIZE_PX,
                    scale_arcsec=SCALE_ARCSEC, threads=1)
    with tables.table(str(ms), ack=False) as table:
        uvw, model_data = table.getcol("UVW"), table.getcol("MODEL_DATA")
    with tables.table(f"{ms}/SPECTRAL_WINDOW", ack=False) as window:
        wavelengths = 299792458.0 / window.getcell("CHAN_FREQ", 0)
    scale = math.radians(SCALE_ARCSEC / 3600.0)
    l, m = -dx * scale, dy * scale  # SIN projection: direction cosines are CDELT times pixel offsets
    n = math.sqrt(1.0 - l * l - m * m)
    # UVW = ANTENNA2 - ANTENNA1 (casacore), so the phase is +2 pi (u l + v m + w (n - 1)) / lambda.
    phase = 2.0 * np.pi * (uvw[:, 0, None] * l + uvw[:, 1, None] * m + uvw[:, 2, None] * (n - 1.0)) / wavelengths
    expected = flux * np.exp(1j * phase)
    assert np.max(np.abs(model_data[..., 0] - expected)) < 1e-4 * flux
    assert np.max(np.abs(model_data[..., 3] - expected)) < 1e-4 * flux
    assert np.max(np.abs(model_data[..., 1:3])) == 0.0  # unpolarised: no cross-hand signal
    # The w-term is part of it: without it the sum is worse by more than the tolerance.
    assert np.max(np.abs(model_data[..., 0] - expected * np.exp(
        -2j * np.pi * uvw[:, 2, None] * (n - 1.0) / wavelengths))) > 1e-3 * flux


def test_point_source_restored_peak_and_beam(observed):
    _, _, products = observed
    restored = _plane(products.restored)
    header = fits.getheader(products.restored)
    assert header["BUNIT"].upper() == "JY/BEAM"
    assert np.unravel_index(np.argmax(restored), restored.shape) == (SIZE_PX // 2, SIZE_PX // 2)
    assert restored.max() == pytest.approx(POINT_FLUX_JY, rel=0.05)
    # The PSF's main lobe is the fitted restoring beam (BMAJ, BMIN, BPA of the header): the same half-power
    # area (the beam solid angle that turns Jy/beam into Jy) and the same shape over the main lobe.
    psf = _plane(products.psf)
    bmaj_px, bmin_px = header["BMAJ"] * 3600 / SCALE_ARCSEC, header["BMIN"] * 3600 / SCALE_ARCSEC
    inverse = np.linalg.inv(beam_covariance_px(bmaj_px, bmin_px, header["BPA"]))
    offsets = np.stack(np.mgrid[:SIZE_PX, :SIZE_PX] - SIZE_PX // 2, axis=-1).astype(float)
    gaussian = np.exp(-0.5 * np.einsum("...i,ij,...j->...", offsets, inverse, offsets))
    islands, _ = ndimage.label(psf > 0.5)
    main_lobe = islands == islands[SIZE_PX // 2, SIZE_PX // 2]
    assert psf[SIZE_PX // 2, SIZE_PX // 2] == pytest.approx(1.0, abs=1e-3)
    assert main_lobe.sum() > 20
    assert main_lobe.sum() == pytest.approx(np.sum(gaussian > 0.5), rel=0.10)
    assert np.max(np.abs(psf - gaussian)[main_lobe | (gaussian > 0.5)]) < 0.1


def test_dirty_image_shows_the_psf_sidelobes_and_clean_removes_them(observed):
    _, _, products = observed
    header = fits.getheader(products.restored)
    far = _outside(3 * header["BMAJ"] * 3600 / SCALE_ARCSEC)
    dirty, restored = _plane(products.dirty), _plane(products.restored)
    sidelobe = np.max(np.abs(dirty[far])) / POINT_FLUX_JY
    assert sidelobe > 0.05  # a sparse 24-station, 1 h array: sidelobes of several per cent
    assert np.max(np.abs(restored[far])) / POINT_FLUX_JY < sidelobe / 5  # deconvolved down to the noise
    psf_sidelobe = np.max(np.abs(_plane(products.psf)[far]))
    assert sidelobe == pytest.approx(psf_sidelobe, rel=0.2)  # the dirty image is the flux times the PSF


def test_restored_noise_matches_the_target(observed):
    _, noise, products = observed
    restored = _plane(products.restored)
    rms = np.std(restored[_outside(50)])
    assert rms == pytest.approx(TARGET_RMS_JY, rel=0.10)
    assert noise.sigma_jy > 0 and noise.sefd_jy == pytest.approx(
        noise.sigma_jy * math.sqrt(2 * 24e6 * 60.0))


def test_imaging_uses_the_named_column_when_corrected_data_exists(observed, tmp_path):
    """WSClean would image CORRECTED_DATA by default; radiogen names DATA."""
    from casacore import tables

    from radiogen.interferometer import wsclean

    ms = tmp_path / "corrected.ms"
    shutil.copytree(observed[0], ms)
    with tables.table(str(ms), readonly=False, ack=False) as table:
        description = table.getcoldesc("DATA")
        description["comment"] = "zeros: must not be imaged"
        table.addcols(tables.maketabdesc(tables.makecoldesc("CORRECTED_DATA", description)))
        table.putcol("CORRECTED_DATA", np.zeros_like(table.getcol("DATA")))
    products = wsclean.image(ms, prefix=tmp_path / "img", settings=_settings(), size_px=SIZE_PX,
                             scale_arcsec=SCALE_ARCSEC, clean=False)
    assert _plane(products.dirty).max() == pytest.approx(POINT_FLUX_JY, rel=0.05)


def test_pointing_below_the_horizon_is_refused(tmp_path):
    from radiogen.interferometer.measurement_set import build_measurement_set

    settings = _settings()
    with pytest.raises(ConfigError, match="elevation .* below min_elevation_deg"):
        build_measurement_set(tmp_path / "south.ms", stations=load_stations(settings.stations),
                              settings=settings, ra_deg=RA_DEG, dec_deg=-60.0)
    assert not (tmp_path / "south.ms").exists()


def test_model_off_the_phase_centre_grid_is_refused(tmp_path):
    from radiogen.interferometer.model_image import model_header, write_model_image

    header = model_header(size_px=SIZE_PX, scale_arcsec=SCALE_ARCSEC, ra_deg=RA_DEG + 0.01, dec_deg=DEC_DEG,
                          frequency_hz=144e6, bandwidth_hz=48e6)
    with pytest.raises(InputFileError, match="CRVAL.*not the phase centre"):
        write_model_image(tmp_path / "sky", np.zeros((SIZE_PX, SIZE_PX)), header, ra_deg=RA_DEG,
                          dec_deg=DEC_DEG, scale_arcsec=SCALE_ARCSEC)
    assert not (tmp_path / "sky-model.fits").exists()


def test_missing_wsclean_is_a_clear_error(monkeypatch, tmp_path):
    from radiogen.interferometer import wsclean

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputFileError, match="wsclean is not installed.*Debian package wsclean"):
        wsclean.wsclean_executable()


def test_map_steps_through_the_cli_keep_the_map_grid(tmp_path):
    """`radiogen interferometer ms|observe|image` on a map header and a Jy/beam sky model, as the rules run."""
    from astropy.wcs import WCS

    from radiogen.cli import main
    from radiogen.interferometer.settings import settings_json
    from radiogen.skymap.geometry import map_header

    size, flux, rms_ujy = 240, 0.05, 100.0
    header = map_header(size_px=size, name="test", centre_ra_deg=RA_DEG, centre_dec_deg=DEC_DEG)
    header_path = tmp_path / "map_header.txt"
    header.totextfile(str(header_path))
    # A point source (a 6 arcsec beam of peak `flux` Jy/beam) off centre: 30 px west, 20 px north.
    y, x = np.mgrid[:size, :size]
    source_yx = (size // 2 + 20, size // 2 - 30)
    sigma_px = 6.0 / SCALE_ARCSEC / (2 * math.sqrt(2 * math.log(2)))
    sky = flux * np.exp(-((y - source_yx[0]) ** 2 + (x - source_yx[1]) ** 2) / (2 * sigma_px**2))
    sky_header = header.copy()
    sky_header["BUNIT"] = "JY/BEAM"
    fits.PrimaryHDU(sky.astype(np.float32), header=sky_header).writeto(tmp_path / "sky_model.fits")
    block = {**section_defaults("skymap.interferometer"), **dataclasses.asdict(_settings())}
    settings = settings_json(block, threads=True)
    assert main(["interferometer", "ms", "--header", str(header_path), "--settings", settings,
                 "--output", str(tmp_path / "observation.ms")]) == 0
    assert main(["interferometer", "observe", "--ms", str(tmp_path / "observation.ms"), "--sky-model",
                 str(tmp_path / "sky_model.fits"), "--settings", settings, "--noise-rms-ujy", str(rms_ujy),
                 "--seed", "3", "--workdir", str(tmp_path / "work"), "--wsclean-log", str(tmp_path / "ws.log"),
                 "--output", str(tmp_path / "observed.ms")]) == 0
    assert main(["interferometer", "image", "--ms", str(tmp_path / "observed.ms"), "--header", str(header_path),
                 "--settings", settings, "--prefix", str(tmp_path / "map"),
                 "--wsclean-log", str(tmp_path / "ws.log")]) == 0
    # The model WSClean predicted holds the sky model's flux: sum of Jy/beam over the beam area in pixels.
    model = fits.getdata(tmp_path / "work" / "sky-model.fits")[0, 0]
    beam_area_px = 2 * math.pi * sigma_px**2
    assert model.sum() == pytest.approx(sky.sum() / beam_area_px, rel=1e-4)
    assert sky.sum() / beam_area_px == pytest.approx(flux, rel=1e-3)
    # The restored image is on the map's pixel grid, and the source is where the map has it.
    restored_header = fits.getheader(tmp_path / "map-image.fits")
    restored = fits.getdata(tmp_path / "map-image.fits")[0, 0]
    assert restored.shape == (size, size)
    assert abs(restored_header["CDELT1"]) == pytest.approx(abs(header["CDELT1"]))
    peak = np.unravel_index(np.argmax(restored), restored.shape)
    assert peak == source_yx
    truth_world = WCS(header).celestial.pixel_to_world(source_yx[1], source_yx[0])
    image_world = WCS(restored_header).celestial.pixel_to_world(source_yx[1], source_yx[0])
    assert truth_world.separation(image_world).arcsec < 0.01 * SCALE_ARCSEC
    residual = fits.getdata(tmp_path / "map-residual.fits")[0, 0]
    assert np.std(residual) == pytest.approx(rms_ujy * 1e-6, rel=0.10)
    assert "wsclean" in (tmp_path / "ws.log").read_text().lower()


def _known_sky(tmp_path: Path, *, size: int, rms_ujy: float):
    """Three 6-arcsec sources on a map grid: map header, sky model (with FOOTPRINT), truth, sources, a map."""
    import pandas as pd
    from astropy.wcs import WCS

    from radiogen.skymap.geometry import map_header

    header = map_header(size_px=size, name="test", centre_ra_deg=RA_DEG, centre_dec_deg=DEC_DEG)
    header.totextfile(str(tmp_path / "map_header.txt"))
    sigma_px = 6.0 / SCALE_ARCSEC / (2 * math.sqrt(2 * math.log(2)))
    beam_area_px = 2 * math.pi * sigma_px**2
    y, x = np.mgrid[:size, :size]
    sources = [(size // 2 + 25, size // 2 - 40, 40e-3), (size // 2 - 35, size // 2 + 30, 12e-3),
               (size // 2 + 45, size // 2 + 45, 4e-3)]  # (y, x, peak Jy/beam)
    sky = np.zeros((size, size))
    footprint = np.zeros((size, size), dtype=np.int32)
    wcs = WCS(header).celestial
    rows = []
    for k, (sy, sx, peak) in enumerate(sources):
        stamp = peak * np.exp(-((y - sy) ** 2 + (x - sx) ** 2) / (2 * sigma_px**2))
        sky += stamp
        footprint[stamp > 1e-3 * peak] = k + 1
        ra, dec = wcs.pixel_to_world_values(sx, sy)
        rows.append({"Source_Name": f"S{k}", "RA": float(ra), "DEC": float(dec), "Peak_flux": peak * 1e3,
                     "Total_flux": stamp.sum() / beam_area_px * 1e3, "LAS": 6.0})
    sky_header = header.copy()
    sky_header["BUNIT"] = "JY/BEAM"
    fits.HDUList([fits.PrimaryHDU(sky.astype(np.float32), header=sky_header),
                  fits.ImageHDU(footprint, header=header, name="FOOTPRINT")]).writeto(tmp_path / "sky_model.fits")
    noise = np.random.default_rng(5).normal(0.0, rms_ujy * 1e-6, sky.shape)
    fits.PrimaryHDU((sky + ndimage.gaussian_filter(noise, sigma_px) * math.sqrt(4 * math.pi) * sigma_px
                     ).astype(np.float32), header=sky_header).writeto(tmp_path / "map.fits")
    truth = pd.DataFrame(rows)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    truth[["Source_Name", "RA", "DEC", "Peak_flux"]].to_csv(tmp_path / "sources.csv", index=False)
    return truth


def test_interferometric_map_is_searched_and_validated_like_the_image_plane_map(tmp_path, saved_figures):
    """The rules' chain: observe and image a known sky, PyBDSF on the restored map, truth matching,
    the image-plane map side by side, and the restored / residual / PSF figure."""
    import pandas as pd

    from figures import panels, shown_arrays
    from radiogen.cli import main
    from radiogen.config import fill_defaults
    from radiogen.interferometer.settings import settings_json
    from radiogen.skymap.settings import settings_json as map_settings_json

    size, rms_ujy = 240, 100.0
    truth = _known_sky(tmp_path, size=size, rms_ujy=rms_ujy)
    block = {**section_defaults("skymap.interferometer"), **dataclasses.asdict(_settings())}
    settings = settings_json(block, threads=True)
    map_settings = map_settings_json(fill_defaults({"noise_rms_ujy": rms_ujy},
                                                   Path(__file__).resolve().parents[1] / "workflow" / "schemas"
                                                   / "skymap.schema.yaml"))
    common = ["--settings", settings]
    assert main(["interferometer", "ms", "--header", str(tmp_path / "map_header.txt"), *common,
                 "--output", str(tmp_path / "observation.ms")]) == 0
    assert main(["interferometer", "observe", "--ms", str(tmp_path / "observation.ms"), "--sky-model",
                 str(tmp_path / "sky_model.fits"), *common, "--noise-rms-ujy", str(rms_ujy), "--seed", "4",
                 "--workdir", str(tmp_path / "work"), "--output", str(tmp_path / "observed.ms")]) == 0
    assert main(["interferometer", "image", "--ms", str(tmp_path / "observed.ms"), "--header",
                 str(tmp_path / "map_header.txt"), *common, "--prefix", str(tmp_path / "map")]) == 0
    restored = tmp_path / "map-image.fits"
    validation = {}
    for label, image in (("image-plane", tmp_path / "map.fits"), ("interferometric", restored)):
        out = tmp_path / label
        out.mkdir()
        assert main(["skymap", "find", "--map", str(image), "--settings", map_settings,
                     "--output", str(out / "recovered.csv")]) == 0
        assert main(["skymap", "validate", "--map", str(image), "--sky-model", str(tmp_path / "sky_model.fits"),
                     "--truth", str(tmp_path / "truth.csv"), "--recovered", str(out / "recovered.csv"),
                     "--sources", str(tmp_path / "sources.csv"), "--settings", map_settings, "--name", label,
                     "--table", str(out / "validation.tsv"), "--figure", str(out / "validation.png"),
                     "--map-figure", str(out / "map.png")]) == 0
        validation[label] = pd.read_csv(out / "validation.tsv", sep="\t", index_col="measure")["value"]
        recovered = pd.read_csv(out / "recovered.csv")
        table = validation[label]
        assert int(table["placed_sources"]) == len(truth) == 3, label
        assert int(table["recovered_sources"]) == len(recovered), label
        # Three sources at S/N 40-400 in an empty field: all found, nothing else, fluxes kept.
        assert float(table["completeness"]) == 1.0 and float(table["reliability"]) == 1.0, (label, recovered)
        assert float(table["flux_ratio_median"]) == pytest.approx(1.0, abs=0.1), label
        assert float(table["offset_median_arcsec"]) < 1.5, label
    restored_header = fits.getheader(restored)
    # The restored map's beam is the 6" sky convolved again (WSClean's fitted beam): PyBDSF's sizes are larger.
    interferometric = pd.read_csv(tmp_path / "interferometric" / "recovered.csv")
    assert (interferometric["Maj"] > 6.5).all() and restored_header["BMAJ"] * 3600 > 6.0
    # The map figure of the 4-D restored image shows its sky plane.
    map_axes = panels(saved_figures["map.png"])
    np.testing.assert_allclose(shown_arrays(map_axes[0])[0], fits.getdata(restored)[0, 0], rtol=1e-6)

    assert main(["skymap", "compare", "--validation", f"image-plane={tmp_path / 'image-plane' / 'validation.tsv'}",
                 "--validation", f"interferometric={tmp_path / 'interferometric' / 'validation.tsv'}",
                 "--table", str(tmp_path / "comparison.tsv"), "--figure", str(tmp_path / "comparison.png")]) == 0
    comparison = pd.read_csv(tmp_path / "comparison.tsv", sep="\t", index_col="measure")
    for label in validation:
        for measure in ("completeness", "reliability", "flux_ratio_median"):
            assert comparison.loc[measure, label] == pytest.approx(float(validation[label][measure]), rel=1e-3)
    bars = [ax for ax in panels(saved_figures["comparison.png"])]
    assert [ax.get_title() for ax in bars] == ["completeness", "reliability", "flux_ratio_median"]
    for ax, measure in zip(bars, ("completeness", "reliability", "flux_ratio_median")):
        heights = [patch.get_height() for patch in ax.patches]
        assert heights == pytest.approx([comparison.loc[measure, label] for label in validation], rel=1e-3)

    assert main(["interferometer", "figure", "--restored", str(restored), "--residual",
                 str(tmp_path / "map-residual.fits"), "--psf", str(tmp_path / "map-psf.fits"),
                 "--output", str(tmp_path / "imaging.png")]) == 0
    fig = saved_figures["imaging.png"]
    images = [ax for ax in panels(fig) if ax.get_images()]
    assert [ax.get_title().split(" ")[0] for ax in images] == ["restored", "residual", "PSF,"]
    restored_shown, residual_shown, psf_shown = (shown_arrays(ax)[0] for ax in images)
    np.testing.assert_allclose(restored_shown, fits.getdata(restored)[0, 0] * 1e3, rtol=1e-6)
    np.testing.assert_allclose(residual_shown, fits.getdata(tmp_path / "map-residual.fits")[0, 0] * 1e3, rtol=1e-6)
    assert np.std(residual_shown) == pytest.approx(rms_ujy * 1e-3, rel=0.15)  # mJy/beam
    assert psf_shown.max() == pytest.approx(1.0, abs=1e-3) and psf_shown.min() < 0  # sidelobes
    assert psf_shown[psf_shown.shape[0] // 2, psf_shown.shape[1] // 2] == psf_shown.max()
    colour_bars = [ax.get_ylabel() for ax in panels(fig) if not ax.get_images()]
    assert colour_bars == ["mJy/beam", "mJy/beam", "PSF response (peak 1)"]
    bmaj, bmin, bpa = (restored_header["BMAJ"] * 3600, restored_header["BMIN"] * 3600, restored_header["BPA"])
    for ax in images:
        (ellipse,) = [p for p in ax.patches]
        assert (ellipse.height * 60, ellipse.width * 60, ellipse.angle) == pytest.approx((bmaj, bmin, -bpa))
        assert ax.get_xlabel() == "ΔRA cos δ [arcmin]"


def test_planning_benchmark_runs_and_scales_to_the_default_observation():
    """benchmarks/bench_interferometer.py --quick: four measured cases, per-unit fits, and the 5 x 5 deg plan.

    The plan's counts follow from the schema's default observation alone (62 stations: 1,891
    baselines; 8 h / 8 s = 3,600 times; 24 channels) and the field (5 deg / 1.5 arcsec = 12,000 px).
    """
    import re
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(repo / "benchmarks" / "bench_interferometer.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=repo)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    cases = [line for line in out.splitlines() if line.startswith("24 stations")]
    assert len(cases) == 4, out
    for line in cases:
        image_s = float(re.search(r"imaging ([0-9.]+) s", line).group(1))
        assert image_s > 0, line
    assert "| sky-model pixels | 12,000^2 = 144 M" in out
    visibilities = 1891 * 3600 * 24
    assert f"| visibilities | {visibilities / 1e6:,.0f} M ({1891 * 3600 / 1e6:.1f} M rows) |" in out
    hours = [float(x) for x in re.findall(r"\| (?:build the measurement set|predict \+ noise|imaging) \| ([0-9.]+)",
                                          out)]
    # the measurement set's build is within the timing noise of the quick cases; the WSClean steps are not
    assert len(hours) == 3 and hours[0] >= 0 and hours[1] > 0 and hours[2] > 0, out


def _half_power_fwhm_px(image: np.ndarray, centre_yx: tuple[int, int], radius: int = 25) -> float:
    """Geometric-mean FWHM (px) of the source at ``centre_yx``: its half-power area is pi/4 FWHM_maj FWHM_min."""
    from scipy import ndimage

    cut = image[centre_yx[0] - radius:centre_yx[0] + radius + 1, centre_yx[1] - radius:centre_yx[1] + radius + 1]
    labels, _ = ndimage.label(cut >= cut.max() / 2)
    area = float((labels == labels[radius, radius]).sum())
    return math.sqrt(4.0 * area / math.pi)


def test_intrinsic_sky_is_imaged_at_the_restoring_beam_and_a_jy_per_beam_sky_broader(tmp_path):
    """A point source in the intrinsic sky (Jy/pixel, as the workflow predicts from) comes out of the chain
    with the restoring beam's width; the same source given at the survey's 6" beam (Jy/beam) is broader."""
    from radiogen.cli import main
    from radiogen.interferometer.settings import settings_json
    from radiogen.skymap.geometry import map_header

    size, flux, rms_ujy = 240, 0.05, 100.0
    header = map_header(size_px=size, name="test", centre_ra_deg=RA_DEG, centre_dec_deg=DEC_DEG)
    header.totextfile(str(tmp_path / "map_header.txt"))
    source_yx = (size // 2 + 20, size // 2 - 30)
    intrinsic = np.zeros((size, size), dtype=np.float32)
    intrinsic[source_yx] = flux  # Jy in one pixel: a point
    y, x = np.mgrid[:size, :size]
    sigma_px = 6.0 / SCALE_ARCSEC / (2 * math.sqrt(2 * math.log(2)))
    convolved = flux * np.exp(-((y - source_yx[0]) ** 2 + (x - source_yx[1]) ** 2) / (2 * sigma_px**2))
    block = {**section_defaults("skymap.interferometer"), **dataclasses.asdict(_settings())}
    settings = settings_json(block, threads=True)
    assert main(["interferometer", "ms", "--header", str(tmp_path / "map_header.txt"), "--settings", settings,
                 "--output", str(tmp_path / "observation.ms")]) == 0
    widths = {}
    for unit, data in (("JY/PIXEL", intrinsic), ("JY/BEAM", convolved)):
        run = tmp_path / unit.replace("/", "_")
        run.mkdir()
        sky_header = header.copy()
        sky_header["BUNIT"] = unit
        fits.PrimaryHDU(data.astype(np.float32), header=sky_header).writeto(run / "sky.fits")
        assert main(["interferometer", "observe", "--ms", str(tmp_path / "observation.ms"), "--sky-model",
                     str(run / "sky.fits"), "--settings", settings, "--noise-rms-ujy", str(rms_ujy), "--seed", "3",
                     "--workdir", str(run / "work"), "--wsclean-log", str(run / "ws.log"),
                     "--output", str(run / "observed.ms")]) == 0
        assert main(["interferometer", "image", "--ms", str(run / "observed.ms"), "--header",
                     str(tmp_path / "map_header.txt"), "--settings", settings, "--prefix", str(run / "map"),
                     "--wsclean-log", str(run / "ws.log")]) == 0
        restored_header = fits.getheader(run / "map-image.fits")
        restored = fits.getdata(run / "map-image.fits")[0, 0].astype(np.float64)
        widths[unit] = _half_power_fwhm_px(restored, source_yx)
        beam_px = math.sqrt(restored_header["BMAJ"] * restored_header["BMIN"]) * 3600.0 / SCALE_ARCSEC
    # measured: the point within a few per cent of the beam, the 6" source wider by the 6" in quadrature
    assert widths["JY/PIXEL"] == pytest.approx(beam_px, rel=0.15), (widths, beam_px)
    assert widths["JY/BEAM"] > 1.1 * widths["JY/PIXEL"], widths


@pytest.fixture(scope="module")
def channel_blocks(tmp_path_factory):
    """A 4-channel observation as one block and as two (the workflow's per-block steps), with its sky."""
    from radiogen.interferometer.map_steps import predict_block
    from radiogen.skymap.geometry import map_header

    work = tmp_path_factory.mktemp("blocks")
    size = 240
    header = map_header(size_px=size, name="test", centre_ra_deg=RA_DEG, centre_dec_deg=DEC_DEG)
    header.totextfile(str(work / "map_header.txt"))
    sky = np.zeros((size, size), dtype=np.float32)
    sky[size // 2, size // 2], sky[size // 2 + 40, size // 2 - 70] = 0.05, 0.02  # Jy in one pixel each
    sky_header = header.copy()
    sky_header["BUNIT"] = "JY/PIXEL"
    fits.PrimaryHDU(sky, header=sky_header).writeto(work / "intrinsic_sky.fits")
    sets = {}
    for n_blocks in (1, 2):
        settings = _settings(channels=4, channel_blocks=n_blocks)
        sets[n_blocks] = [work / f"of{n_blocks}" / f"{b}" / "predicted.ms" for b in range(n_blocks)]
        for block, path in enumerate(sets[n_blocks]):
            predict_block(work / "map_header.txt", work / "intrinsic_sky.fits", settings, block=block, seed=7,
                          output=path, log_path=None)
    return work, sets


def test_channel_blocks_predict_the_channels_of_the_whole_band(channel_blocks):
    """Each block's MODEL_DATA is its channels of the one-block prediction; same rows, UVW and unit noise
    of its own (seeded per block)."""
    from casacore import tables

    from radiogen.interferometer.blocks import read_tag

    _, sets = channel_blocks
    with tables.table(str(sets[1][0]), ack=False) as whole:
        model, uvw, noise = whole.getcol("MODEL_DATA"), whole.getcol("UVW"), whole.getcol("DATA")
    with tables.table(f"{sets[1][0]}/SPECTRAL_WINDOW", ack=False) as window:
        frequencies = window.getcell("CHAN_FREQ", 0)
    assert model.shape[1] == 4 and np.abs(model).max() > 0.01
    block_noise = []
    for block, path in enumerate(sets[2]):
        with tables.table(str(path), ack=False) as part:
            part_model = part.getcol("MODEL_DATA")
            np.testing.assert_array_equal(part.getcol("UVW"), uvw)
            block_noise.append(part.getcol("DATA"))
        channels = slice(2 * block, 2 * block + 2)
        assert np.max(np.abs(part_model - model[:, channels])) <= 1e-5 * np.max(np.abs(model[:, channels]))
        with tables.table(f"{path}/SPECTRAL_WINDOW", ack=False) as window:
            np.testing.assert_allclose(window.getcell("CHAN_FREQ", 0), frequencies[channels])
        tag = read_tag(path)
        assert (tag["block"], tag["channel_blocks"], tag["channels"]) == (block, 2, [2 * block, 2 * block + 2])
        assert tag["noise_sigma_jy"] is None and not path.with_name(path.name + ".tmp").exists()
    # unit noise: standard normal parts, different in each block
    assert np.std(block_noise[0].real) == pytest.approx(1.0, rel=0.02)
    assert not np.allclose(block_noise[0], block_noise[1])
    assert not np.allclose(block_noise[0], noise[:, :2])


def test_jointly_calibrated_blocks_image_at_the_target_rms(channel_blocks):
    """The noise calibrated on the two blocks imaged together gives the target rms in their joint image;
    the steps refuse sets that do not belong together."""
    import json

    from radiogen.interferometer.map_steps import add_block_noise, calibrate_noise, image_observation

    work, sets = channel_blocks
    settings = _settings(channels=4, channel_blocks=2)
    target = 200e-6
    calibration = work / "noise_calibration.json"
    with pytest.raises(InputFileError, match=r"channel blocks \[0\], expected each of 0 to 1"):
        calibrate_noise(sets[2][:1], settings, header_path=work / "map_header.txt", target_rms_jy=target, seed=7,
                        output=calibration)
    with pytest.raises(InputFileError, match="other skymap.interferometer settings"):
        calibrate_noise(sets[2], _settings(channels=4, channel_blocks=2, track_hours=0.5),
                        header_path=work / "map_header.txt", target_rms_jy=target, seed=7, output=calibration)
    # a block predicted from another sky model (its record says so) does not join the others
    from radiogen.interferometer.blocks import read_tag, write_tag

    other_sky = work / "other_sky" / "1.ms"
    shutil.copytree(sets[2][1], other_sky)
    write_tag(other_sky, {**read_tag(other_sky), "sky_model_sha256": "0" * 64})
    with pytest.raises(InputFileError, match="another sky model or phase centre"):
        calibrate_noise([sets[2][0], other_sky], settings, header_path=work / "map_header.txt",
                        target_rms_jy=target, seed=7, output=calibration)
    noise = calibrate_noise(sets[2], settings, header_path=work / "map_header.txt", target_rms_jy=target, seed=7,
                            output=calibration, log_path=work / "ws.log")
    record = json.loads(calibration.read_text())
    assert record["sigma_jy"] == pytest.approx(noise.sigma_jy) and record["target_rms_ujy"] == pytest.approx(200.0)
    assert [(b["block"], b["channels"]) for b in record["blocks"]] == [(0, [0, 2]), (1, [2, 4])]
    with pytest.raises(InputFileError, match="not block 0"):
        add_block_noise(sets[2][1], calibration, settings, block=0, seed=7, output=work / "wrong.ms")
    with pytest.raises(InputFileError, match="seed 7, not 8"):
        add_block_noise(sets[2][0], calibration, settings, block=0, seed=8, output=work / "wrong.ms")
    observed = [path.with_name("observed.ms") for path in sets[2]]
    for block, (predicted, path) in enumerate(zip(sets[2], observed)):
        assert add_block_noise(predicted, calibration, settings, block=block, seed=7, output=path) == noise.sigma_jy
    with pytest.raises(InputFileError, match="holds unit noise only"):
        image_observation([observed[0], sets[2][1]], settings, header_path=work / "map_header.txt",
                          prefix=work / "wrong")
    # blocks of another field, noise calibrated for another weighting: refused before WSClean runs
    from radiogen.skymap.geometry import map_header

    map_header(size_px=240, name="other", centre_ra_deg=RA_DEG + 1.0, centre_dec_deg=DEC_DEG).totextfile(
        str(work / "other_header.txt"))
    with pytest.raises(InputFileError, match="is not the map's centre"):
        image_observation(observed, settings, header_path=work / "other_header.txt", prefix=work / "wrong")
    with pytest.raises(InputFileError, match="calibrated for the weighting"):
        image_observation(observed, _settings(channels=4, channel_blocks=2, robust=0.5),
                          header_path=work / "map_header.txt", prefix=work / "wrong")
    # the same field on another grid: other uv cells, other Briggs weights
    map_header(size_px=256, name="bigger", centre_ra_deg=RA_DEG, centre_dec_deg=DEC_DEG).totextfile(
        str(work / "bigger_header.txt"))
    with pytest.raises(InputFileError, match="on a 240 px grid of 1.5 arcsec, not .* on 256 px"):
        image_observation(observed, settings, header_path=work / "bigger_header.txt", prefix=work / "wrong")
    products = image_observation(observed, settings, header_path=work / "map_header.txt", prefix=work / "map",
                                 log_path=work / "ws.log")
    residual = fits.getdata(products.residual)[0, 0]
    assert np.std(residual) == pytest.approx(target, rel=0.10)
    restored = fits.getdata(products.restored)[0, 0]
    assert restored[120, 120] == pytest.approx(0.05, rel=0.05)  # the 50 mJy point at the phase centre
    # the joint image holds the whole band: its frequency is the band's centre
    assert fits.getheader(products.restored)["CRVAL3"] == pytest.approx(144e6, rel=1e-3)
    # the two blocks together are the whole band: its own calibration gives the same sigma (other noise draws)
    whole = calibrate_noise(sets[1], _settings(channels=4), header_path=work / "map_header.txt",
                            target_rms_jy=target, seed=7, output=work / "whole.json")
    assert whole.sigma_jy == pytest.approx(noise.sigma_jy, rel=0.05)
