"""Resources of the interferometer's jobs from the observation's size (radiogen.interferometer.costs).

No tools needed: the counts follow from the settings, the costs from the measured per-unit figures.
"""

from __future__ import annotations

import math

import pytest

from radiogen.config import section_defaults
from radiogen.interferometer import costs
from radiogen.interferometer.settings import InterferometerSettings


def _settings(**changes) -> InterferometerSettings:
    return InterferometerSettings.from_mapping({**section_defaults("skymap.interferometer"), **changes})


def test_default_observation_counts_163_million_visibilities():
    """62 stations (1,891 baselines) x 8 h / 8 s (3,600) x 24 channels; the 5 deg field at 1.5 arcsec is 12,000 px."""
    size = costs.observation_size(_settings(channel_blocks=4), size_px=12_000)
    assert (size.stations, size.baselines, size.integrations) == (62, 1891, 3600)
    assert size.visibilities == 1891 * 3600 * 24 == 163_382_400
    assert size.block_visibilities == size.visibilities // 4
    assert size.pixels == 144_000_000


def test_estimates_are_the_measured_per_unit_costs():
    """The block job's wall time: build + predict per block visibilities and pixels, WSClean on its threads."""
    settings = _settings(channel_blocks=4, threads=8)
    size = costs.observation_size(settings, size_px=12_000)
    memory, seconds = costs.job_estimate("block", size, threads=8)
    expected = (0.65e-6 * size.block_visibilities + 0.03e-6 * size.pixels
                + (8.2e-6 * size.block_visibilities + 1.5e-6 * size.pixels) / 8)
    assert seconds == pytest.approx(expected)
    # imaging: 13.3 / 5.4 core-s per million at 2 major cycles, scaled to the assumed 10
    _, image_s = costs.job_estimate("image", size, threads=8)
    assert image_s == pytest.approx((13.3 * 163.3824 + 5.4 * 144) * 5 / 8, rel=1e-6)
    # memory grows with the map: the 12,000^2 model alone is 0.54 GiB as float32
    assert memory > 144e6 * 4 / 2**20
    with pytest.raises(ValueError, match="unknown interferometer step"):
        costs.job_estimate("predict", size, threads=1)


def test_blocks_divide_the_per_block_jobs_but_not_the_joint_ones():
    one, four = (costs.observation_size(_settings(channel_blocks=k), size_px=12_000) for k in (1, 4))
    for step in ("block", "add_noise"):
        time_one, time_four = costs.job_estimate(step, one, threads=2)[1], costs.job_estimate(step, four, threads=2)[1]
        assert time_four < time_one / 2, step
    for step in ("noise", "image"):
        assert costs.job_estimate(step, one, threads=2) == costs.job_estimate(step, four, threads=2), step


def test_settings_are_floors_and_a_large_field_asks_for_hours():
    small = _settings(stations=["CS001HBA0", "CS002HBA0", "RS106HBA"], track_hours=1.0, integration_s=60.0,
                      channels=2)
    for step in costs.STEPS:
        assert costs.job_resources(step, small, size_px=480, floor_mem_mb=1000, floor_runtime_min=10) == (
            costs.JobResources(mem_mb=1000, runtime_min=10)), step
    large = _settings(channel_blocks=4, threads=2)  # about 4 core-hours of imaging: 2 h on 2 threads
    image = costs.job_resources("image", large, size_px=12_000, floor_mem_mb=4000, floor_runtime_min=120)
    memory, seconds = costs.job_estimate("image", costs.observation_size(large, size_px=12_000), threads=2)
    assert image.runtime_min == math.ceil(seconds * costs.MARGIN / 60) > 120
    assert image.mem_mb == math.ceil(memory * costs.MARGIN) > 4000


def test_noise_calibration_refuses_a_blank_unit_noise_image():
    """A unit-noise image without signal (rms 0 or NaN) would put NaN or infinite noise in DATA."""
    from radiogen.errors import InputFileError
    from radiogen.interferometer.settings import InterferometerSettings
    from radiogen.interferometer.thermal_noise import calibrated_noise

    settings = InterferometerSettings.from_mapping(section_defaults("skymap.interferometer"))
    for rms in (0.0, float("nan"), float("inf")):
        with pytest.raises(InputFileError, match="unit-sigma noise has rms"):
            calibrated_noise(target_rms_jy=80e-6, unit_image_rms=rms, settings=settings)
    assert calibrated_noise(target_rms_jy=80e-6, unit_image_rms=2e-3, settings=settings).sigma_jy == pytest.approx(0.04)
