"""FITS cutouts of any survey as an image set, on real FIRST (SkyView) and LoTSS pixels."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
from astropy.io import fits

from radiogen.cli import main as cli_main
from radiogen.errors import ConfigError, InputFileError
from radiogen.evaluation.imagesets import open_image_set
from radiogen.fits_images import image_set_from_fits, read_fits_image

MIRABEST = {"label_pattern": r"^(?P<label>[0-9])", "label_map": {"1": "FRI", "2": "FRII"}}


def test_first_fits_folder_with_config_beam_and_labels(first_fits_dir, tmp_path, caplog):
    out = tmp_path / "mirabest.h5"
    with caplog.at_level(logging.WARNING):
        summary = image_set_from_fits([first_fits_dir], out, dataset="first", beam_arcsec=5.4,
                                      frequency_hz=1.4e9, skip_unlabelled=True, **MIRABEST)
    files = sorted(first_fits_dir.glob("*.fits"))
    hybrids = [f for f in files if f.name.startswith("3")]
    # the headers have no beam keywords: the configured beam is used, and said so
    assert f"{len(files) - len(hybrids)} of {len(files) - len(hybrids)} files have no BMAJ" in caplog.text
    assert summary["beam_source"] == "config" and summary["frequency_source"] == "config"
    assert summary["pixel_scale_arcsec"] == pytest.approx(1.8)
    with h5py.File(out) as h5:
        names = [n.decode() for n in h5["source_name"][()]]
        labels = h5["label"][()]
        assert names == [f.name for f in files if not f.name.startswith("3")]
        assert [int(n[0]) - 1 for n in names] == list(labels)  # MiraBest 1xx -> FRI, 2xx -> FRII
        np.testing.assert_array_equal(h5["context"][()].argmax(1), labels)
        assert h5.attrs["beam_arcsec"] == 5.4 and h5.attrs["dataset"] == "first"
        first_ra = h5["ra"][0]
    with open_image_set(out) as image_set:
        images = image_set.images()
        assert images.shape == (len(names), 80, 80)
        assert images.min() == 0.0 and np.allclose(images.max(axis=(1, 2)), 1.0)
        assert image_set.beam_arcsec == 5.4 and image_set.pixel_scale_arcsec == pytest.approx(1.8)
    # the centre position comes from the WCS (file names carry it: 100_010.451-009.284_...)
    assert first_ra == pytest.approx(float(names[0].split("_")[1][:7]), abs=1e-3)
    # the crop is the central 80 px of the 300 px image, clipped below 3 x rms, min-max scaled
    raw = fits.getdata(files[0]).astype(np.float64)[110:190, 110:190]
    assert np.corrcoef(raw.ravel(), images[0].ravel())[0, 1] > 0.95


def test_first_fits_without_beam_and_no_config_is_an_error(first_fits_dir, tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(InputFileError, match=r"\.fits: header has no BMAJ .*no beam was configured"):
        image_set_from_fits([first_fits_dir], out, dataset="first", frequency_hz=1.4e9)
    assert not out.exists()
    with pytest.raises(InputFileError, match=r"label '3', which maps to none of the classes"):
        image_set_from_fits([first_fits_dir], out, dataset="first", beam_arcsec=5.4,
                            frequency_hz=1.4e9, **MIRABEST)


def test_lotss_piece_keeps_peak_flux_and_header_beam(lotss_dr1_dir, tmp_path):
    src = lotss_dr1_dir / "P218+55_200px.fits"
    out = tmp_path / "lotss.h5"
    summary = image_set_from_fits([src], out, dataset="lotss", size=80)
    assert summary["beam_source"] == "header" and summary["beam_arcsec"] == pytest.approx(6.0)
    assert summary["frequency_hz"] == pytest.approx(144e6, rel=0.05)
    data = read_fits_image(src).data[60:140, 60:140]
    with open_image_set(out) as image_set:
        assert image_set.has_peak_flux
        assert image_set.peak_flux()[0] == pytest.approx(np.nanmax(data))
        physical = image_set.physical_images()[0]
    np.testing.assert_allclose(physical, np.clip(np.nan_to_num(data), 0, None), rtol=1e-5, atol=1e-9)


def test_units_pixel_scales_and_resampling(lotss_dr1_dir, tmp_path):
    src = lotss_dr1_dir / "P218+55_200px.fits"
    with fits.open(src) as hdul:
        data, header = hdul[0].data, hdul[0].header.copy()
    milli = header.copy()
    milli["BUNIT"] = "mJy/beam"
    fits.PrimaryHDU(data * 1e3, header=milli).writeto(tmp_path / "a_mjy.fits")
    coarse = header.copy()
    for key in ("CDELT1", "CDELT2"):
        coarse[key] = header[key] * 2
    fits.PrimaryHDU(data, header=coarse).writeto(tmp_path / "b_coarse.fits")
    # mJy/beam is converted: the peak flux is in Jy/beam as for the original
    one = image_set_from_fits([tmp_path / "a_mjy.fits"], tmp_path / "m.h5", dataset="lotss")
    with open_image_set(tmp_path / "m.h5") as image_set:
        assert image_set.peak_flux()[0] == pytest.approx(np.nanmax(data[60:140, 60:140]), rel=1e-6)
    assert one["n_images"] == 1
    # two pixel scales in one set need resampling
    with pytest.raises(InputFileError, match=r"b_coarse\.fits: pixel scale 3\" differs from a_mjy\.fits's 1\.5\""):
        image_set_from_fits([tmp_path], tmp_path / "x.h5", dataset="lotss")
    summary = image_set_from_fits([tmp_path], tmp_path / "r.h5", dataset="lotss", pixel_scale_arcsec=1.5, size=64)
    assert summary["resampled"] and summary["n_images"] == 2
    # a unit that is not per beam is refused, naming the file
    kelvin = header.copy()
    kelvin["BUNIT"] = "K"
    fits.PrimaryHDU(data, header=kelvin).writeto(tmp_path / "k.fits")
    with pytest.raises(InputFileError, match=r"k\.fits: BUNIT = 'K' is not a surface brightness per beam"):
        read_fits_image(tmp_path / "k.fits")


def test_cli_and_bad_requests(first_fits_dir, tmp_path, caplog):
    out = tmp_path / "cli.h5"
    assert cli_main(["imageset", "from-fits", str(first_fits_dir), "--output", str(out), "--dataset", "first",
                     "--beam-arcsec", "5.4", "--frequency-hz", "1.4e9", "--label-pattern", r"^(?P<label>[0-9])",
                     "--label-map", "1=FRI", "2=FRII", "--skip-unlabelled"]) == 0
    assert out.exists()
    assert cli_main(["imageset", "from-fits", str(tmp_path / "none"), "--output", str(tmp_path / "y.h5"),
                     "--dataset", "first"]) == 1
    assert "none: no such FITS file or folder" in caplog.text
    with pytest.raises(ConfigError, match=r"needs a named group \(\?P<label>"):
        image_set_from_fits([first_fits_dir], tmp_path / "z.h5", dataset="first", beam_arcsec=5.4,
                            frequency_hz=1.4e9, label_pattern="^[0-9]")
    with pytest.raises(InputFileError, match="smaller than the 400 px crop"):
        image_set_from_fits([first_fits_dir], tmp_path / "z.h5", dataset="first", size=400,
                            beam_arcsec=5.4, frequency_hz=1.4e9)


# --- resolution matching, anti-aliasing, units, FIRST-like clipping, blank inputs -------------

def _lotss_header(lotss_dr1_dir):
    """The real header of a LoTSS DR1 piece (200 x 200 px, 1.5"/px, 6" beam, RA---SIN, Jy/beam)."""
    return fits.getheader(lotss_dr1_dir / "P218+55_200px.fits")


def _gaussian(shape, covariance_px, peak):
    """A sampled Gaussian of the given pixel covariance ((x, y) order) and peak, on pixel (ny // 2, nx // 2)."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    offsets = np.stack([x - nx // 2, y - ny // 2])
    inverse = np.linalg.inv(covariance_px)
    quadratic = np.einsum("i...,ij,j...->...", offsets, inverse, offsets)
    return peak * np.exp(-0.5 * quadratic)


def _measured_beam(image, data):
    """Beam fitted by second moments of a noise-free Gaussian image, in sky coordinates."""
    from radiogen.beams import Beam

    ny, nx = data.shape
    y, x = np.mgrid[:ny, :nx]
    weight = np.nan_to_num(data) / np.nansum(data)
    mean = np.array([(weight * x).sum(), (weight * y).sum()])
    dx, dy = x - mean[0], y - mean[1]
    cov_px = np.array([[(weight * dx * dx).sum(), (weight * dx * dy).sum()],
                       [(weight * dx * dy).sum(), (weight * dy * dy).sum()]])
    jacobian = image.pixel_to_sky
    return Beam.from_covariance(jacobian @ cov_px @ jacobian.T)


def _write_point_source(path, header, beam, peak=0.01):
    """A point source as seen through ``beam`` (peak ``peak`` Jy/beam) on the real LoTSS grid."""
    from radiogen.beams import Beam

    header = header.copy()
    header["BMAJ"], header["BMIN"], header["BPA"] = beam.major_arcsec / 3600, beam.minor_arcsec / 3600, beam.pa_deg
    fits.PrimaryHDU(np.zeros((200, 200)), header=header).writeto(path, overwrite=True)
    image = read_fits_image(path)
    assert image.beam.close_to(beam, 1e-9) and image.beam.pa_deg == pytest.approx(beam.pa_deg)
    data = _gaussian((200, 200), image.covariance_in_pixels(beam.covariance()), peak)
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return read_fits_image(path)


@pytest.mark.parametrize("beam", [(6.0, 6.0, 0.0), (8.0, 4.0, 30.0), (9.0, 3.0, 120.0)],
                         ids=["circular", "elliptical_pa30", "elliptical_pa120"])
def test_beam_matching_keeps_flux_and_reaches_the_target(lotss_dr1_dir, tmp_path, beam):
    from radiogen.beams import Beam
    from radiogen.fits_images import match_and_resample

    source_beam = Beam(*beam)
    image = _write_point_source(tmp_path / "point.fits", _lotss_header(lotss_dr1_dir), source_beam, peak=0.01)
    # the input is what it claims: its measured beam is the header's
    measured_in = _measured_beam(image, image.data)
    assert measured_in.major_arcsec == pytest.approx(beam[0], rel=0.01)
    assert measured_in.minor_arcsec == pytest.approx(beam[1], rel=0.01)
    matched = match_and_resample(image, target_beam_arcsec=10.0)
    assert matched.beam == Beam.circular(10.0) or matched.beam.close_to(Beam.circular(10.0), 1e-6)
    pixel_area = image.pixel_scale_arcsec**2
    # a point source of 0.01 Jy: 0.01 Jy/beam peak and 0.01 Jy in total, in the target beam
    total_flux = np.nansum(matched.data) * pixel_area / Beam.circular(10.0).solid_angle_arcsec2()
    assert total_flux == pytest.approx(0.01, rel=0.01)
    assert np.nanmax(matched.data) == pytest.approx(0.01, rel=0.01)
    # the beam measured on the image is the (circular) target, whatever the input's shape and angle
    measured = _measured_beam(image, matched.data)
    assert measured.major_arcsec == pytest.approx(10.0, rel=0.02)
    assert measured.minor_arcsec == pytest.approx(10.0, rel=0.02)


def test_beam_orientation_follows_bpa_east_of_north(lotss_dr1_dir, tmp_path):
    """On a RA---SIN grid (east to the left) a beam at PA 30 deg leans up and to the left."""
    from radiogen.beams import Beam

    image = _write_point_source(tmp_path / "p.fits", _lotss_header(lotss_dr1_dir), Beam(9.0, 3.0, 30.0))
    ny, nx = image.data.shape
    # along the major axis from the centre: 3 px north, 3 tan(30 deg) px east (= to the left)
    cy, cx = ny // 2, nx // 2
    along, across = image.data[cy + 6, cx - round(6 * np.tan(np.radians(30)))], image.data[cy + 6, cx + 3]
    assert along > 5 * across
    assert measured_pa_close(_measured_beam(image, image.data).pa_deg, 30.0)


def measured_pa_close(pa, expected, tol=1.0):
    return abs((pa - expected + 90.0) % 180.0 - 90.0) < tol


def test_equal_beams_are_not_convolved_and_wider_beams_are_refused(lotss_dr1_dir, tmp_path):
    from radiogen.beams import Beam
    from radiogen.fits_images import match_and_resample

    image = read_fits_image(lotss_dr1_dir / "P218+55_200px.fits")  # 6" circular
    same = match_and_resample(image, target_beam_arcsec=6.0)
    np.testing.assert_array_equal(same.data, image.data)
    with pytest.raises(InputFileError, match=r"P218\+55_200px\.fits: its beam \(6\" circular, from the header\) "
                                             r"is wider than the target beam \(5\.4\" circular\)"):
        match_and_resample(image, target_beam_arcsec=5.4)
    # an elliptical beam wider than the target along its major axis only is refused too
    elongated = _write_point_source(tmp_path / "e.fits", _lotss_header(lotss_dr1_dir), Beam(8.0, 4.0, 45.0))
    with pytest.raises(InputFileError, match=r"e\.fits: its beam \(8\" x 4\" at PA 45 deg, from the header\)"):
        match_and_resample(elongated, target_beam_arcsec=7.0)
    # the set refuses such a file before writing anything, naming both beams
    with pytest.raises(InputFileError, match=r"6\" circular.*5\.4\" circular"):
        image_set_from_fits([lotss_dr1_dir / "P218+55_200px.fits"], tmp_path / "x.h5", dataset="lotss",
                            target_beam_arcsec=5.4)
    assert not (tmp_path / "x.h5").exists()


def test_real_lotss_piece_matched_to_a_wider_beam(lotss_dr1_dir, tmp_path):
    """The real LoTSS piece at 6" matched to 12": beam-area rescaling, recorded beam, smoother noise."""
    from radiogen.fits_images import match_and_resample

    src = lotss_dr1_dir / "P218+55_200px.fits"
    summary = image_set_from_fits([src], tmp_path / "m.h5", dataset="lotss", target_beam_arcsec=12.0)
    assert summary["beam_arcsec"] == pytest.approx(12.0) and summary["beam_source"] == "target"
    image = read_fits_image(src)
    matched = match_and_resample(image, target_beam_arcsec=12.0)
    # Jy/pixel is conserved where the image is complete (interior): sum x Omega_in / Omega_out
    inner = (slice(40, 160), slice(40, 160))
    ratio = np.nansum(matched.data[inner]) / np.nansum(image.data[inner]) * (6.0 / 12.0) ** 2
    assert ratio == pytest.approx(1.0, abs=0.05)
    # pixels within reach of the image edge after smoothing are blank, not zero-padded
    assert np.isnan(matched.data[0, 0]) and np.isfinite(matched.data[inner]).all()
    with open_image_set(tmp_path / "m.h5") as image_set:
        assert image_set.beam_arcsec == pytest.approx(12.0)
        assert image_set.peak_flux()[0] == pytest.approx(np.nanmax(matched.data[60:140, 60:140]))


def test_downsampling_is_anti_aliased(lotss_dr1_dir, tmp_path):
    """White noise and a fine pattern resampled to 3x coarser pixels do not alias to low frequencies."""
    from radiogen.fits_images import match_and_resample, resample

    header = _lotss_header(lotss_dr1_dir)
    for key in ("CDELT1", "CDELT2"):
        header[key] = np.sign(header[key]) / 3600.0  # 1"/px
    header["BMAJ"] = header["BMIN"] = 0.5 / 3600.0  # narrower than a pixel: the noise is white
    rng = np.random.default_rng(20261203)
    noise = rng.standard_normal((200, 200))
    fits.PrimaryHDU(noise, header=header).writeto(tmp_path / "noise.fits")
    y, x = np.mgrid[:200, :200]
    pattern = np.cos(2 * np.pi * 0.4 * x)  # 0.4 cycles/px: beyond the Nyquist limit of 3" pixels
    fits.PrimaryHDU(pattern, header=header).writeto(tmp_path / "pattern.fits")

    coarse_noise = match_and_resample(read_fits_image(tmp_path / "noise.fits"), pixel_scale_arcsec=3.0)
    aliased_noise = resample(noise, (3.0, 3.0))  # the same resampling without the low-pass
    inner = np.s_[5:-5, 5:-5]
    # unit-sum Gaussian of sigma s (input px) keeps 1 / (4 pi s^2) of white-noise variance;
    # Jy/beam is then multiplied by the beam-area ratio (0.5" -> the smoothed beam)
    sigma_px = 3.0 * np.sqrt(6.0) / np.pi
    area_ratio = (sigma_px**2 + (0.5 / 2.3548) ** 2) / (0.5 / 2.3548) ** 2
    expected = area_ratio**2 / (4.0 * np.pi * sigma_px**2)
    assert np.nanvar(coarse_noise.data[inner]) == pytest.approx(expected, rel=0.15)
    assert np.var(aliased_noise[inner]) > 0.5  # without the low-pass all of it folds onto the coarse grid

    def high_frequency_share(image):
        power = np.abs(np.fft.fft2(image - image.mean())) ** 2
        k = np.maximum(*np.meshgrid(np.abs(np.fft.fftfreq(image.shape[0])),
                                    np.abs(np.fft.fftfreq(image.shape[1])), indexing="ij"))
        return power[k > 0.4].sum() / power.sum()

    assert high_frequency_share(coarse_noise.data[inner]) < 0.03  # Gaussian tail + window leakage: 0.015
    assert high_frequency_share(aliased_noise[inner]) > 0.25
    # the 0.4 cycles/px pattern would appear at 0.2 cycles per output pixel at full amplitude
    coarse_pattern = match_and_resample(read_fits_image(tmp_path / "pattern.fits"), pixel_scale_arcsec=3.0)
    assert np.nanmax(np.abs(coarse_pattern.data[inner])) < 1e-3
    assert np.max(np.abs(resample(pattern, (3.0, 3.0))[inner])) > 0.5
    # the beam recorded is the smoothed one; a target beam too fine for the grid is refused
    assert coarse_noise.beam.major_arcsec == pytest.approx(sigma_px * 2.3548, rel=0.01)
    with pytest.raises(ConfigError, match=r"target beam 4\" is narrower than 5\.51\" \(FWHM of 1\.84 pixels of 3\"\): "
                                         r"noise\.fits would alias"):
        match_and_resample(read_fits_image(tmp_path / "noise.fits"), pixel_scale_arcsec=3.0, target_beam_arcsec=4.0)


def test_matched_and_downsampled_point_source_has_the_target_beam(lotss_dr1_dir, tmp_path):
    """Matching first, then resampling 1.5" -> 2.5" pixels: the target beam (well sampled) is kept."""
    from radiogen.beams import Beam
    from radiogen.fits_images import FitsImage, match_and_resample

    image = _write_point_source(tmp_path / "p.fits", _lotss_header(lotss_dr1_dir), Beam(7.0, 5.0, 60.0))
    matched = match_and_resample(image, target_beam_arcsec=10.0, pixel_scale_arcsec=2.5)
    assert matched.data.shape == (120, 120) and matched.pixel_scale_arcsec == 2.5
    grid = FitsImage(image.path, matched.data, image.pixel_to_sky * 2.5 / 1.5, None, None, image.centre)
    measured = _measured_beam(grid, matched.data)
    assert measured.major_arcsec == pytest.approx(10.0, rel=0.03)
    assert measured.minor_arcsec == pytest.approx(10.0, rel=0.03)
    assert np.nanmax(matched.data) == pytest.approx(0.01, rel=0.02)


def test_missing_bunit_needs_a_configured_unit(lotss_dr1_dir, tmp_path):
    with fits.open(lotss_dr1_dir / "P218+55_200px.fits") as hdul:
        data, header = hdul[0].data, hdul[0].header.copy()
    del header["BUNIT"]
    fits.PrimaryHDU(data * 1e3, header=header).writeto(tmp_path / "nounit.fits")
    with pytest.raises(InputFileError, match=r"nounit\.fits: header has no BUNIT.*imagesets\.<name>\.unit"):
        image_set_from_fits([tmp_path / "nounit.fits"], tmp_path / "x.h5", dataset="lotss")
    assert not (tmp_path / "x.h5").exists()
    summary = image_set_from_fits([tmp_path / "nounit.fits"], tmp_path / "u.h5", dataset="lotss", unit="mJy/beam")
    assert summary["unit_source"] == "config"
    with open_image_set(tmp_path / "u.h5") as image_set:
        assert image_set.peak_flux()[0] == pytest.approx(np.nanmax(data[60:140, 60:140]), rel=1e-6)
    with pytest.raises(InputFileError, match=r"nounit\.fits: BUNIT = 'K' is not a surface brightness per beam"):
        read_fits_image(tmp_path / "nounit.fits", unit="K")
    with pytest.raises(ConfigError, match=r"imagesets unit: configured unit: BUNIT = 'K' is not a surface"):
        image_set_from_fits([tmp_path / "nounit.fits"], tmp_path / "k.h5", dataset="lotss", unit="K")


def test_first_clipping_uses_the_whole_cutout(first_fits_dir, tmp_path):
    """Real FIRST cutout: clip at median + 3 sigma of all 300 x 300 px, as the FIRST dataset was made."""
    from astropy.stats import sigma_clipped_stats

    src = first_fits_dir / "100_166.345+030.162_0.0717_0137.10.fits"
    image_set_from_fits([src], tmp_path / "f.h5", dataset="first", beam_arcsec=5.4, frequency_hz=1.4e9)
    raw = fits.getdata(src).astype(np.float64)
    _, median, sigma = sigma_clipped_stats(raw, sigma=3.0, maxiters=5)
    whole_level = median + 3 * sigma
    crop = raw[110:190, 110:190]
    _, crop_median, crop_sigma = sigma_clipped_stats(crop, sigma=3.0, maxiters=5)
    crop_level = crop_median + 3 * crop_sigma
    assert crop_level > 1.2 * whole_level  # the source inflates the crop's statistics (this cutout: +34%)
    with h5py.File(tmp_path / "f.h5") as h5:
        image = h5["images"][0]
        assert h5["clip_level"][0] == pytest.approx(whole_level, rel=1e-6)
    expected = (np.clip(crop, whole_level, None) - whole_level) / (crop.max() - whole_level)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    from_crop = (np.clip(crop, crop_level, None) - crop_level) / (crop.max() - crop_level)
    assert np.abs(image - from_crop).max() > 0.01
    assert (image > 0).sum() > (from_crop > 0).sum()  # faint emission the crop statistics would have cut


def test_blank_inputs_are_refused_or_left_out_by_name(first_fits_dir, tmp_path, caplog):
    import shutil

    files = sorted(first_fits_dir.glob("1*.fits"))[:3]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    with fits.open(files[0]) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data.astype(np.float32)
    header.remove("COMMENT", remove_all=True)  # SkyView's have tabs, which astropy will not write
    fits.PrimaryHDU(np.full_like(data, np.nan), header=header).writeto(tmp_path / "100_blank.fits")
    holed = data.copy()
    holed[140:160, 140:160] = np.nan  # a hole in the crop: incomplete coverage
    fits.PrimaryHDU(holed, header=header).writeto(tmp_path / "100_holed.fits")
    options = dict(dataset="first", beam_arcsec=5.4, frequency_hz=1.4e9)
    with pytest.raises(InputFileError, match=r"100_blank\.fits: all 90000 pixels are blank \(NaN\); set on_blank: skip"):
        image_set_from_fits([tmp_path], tmp_path / "x.h5", **options)
    assert not (tmp_path / "x.h5").exists()
    assert cli_main(["imageset", "from-fits", str(tmp_path), "--output", str(tmp_path / "y.h5"), "--dataset", "first",
                     "--beam-arcsec", "5.4", "--frequency-hz", "1.4e9"]) == 1
    assert not (tmp_path / "y.h5").exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        summary = image_set_from_fits([tmp_path], tmp_path / "s.h5", on_blank="skip", **options)
    assert "100_blank.fits: all 90000 pixels are blank (NaN); left out of the set" in caplog.text
    assert "100_holed.fits: 400 of the 80x80 px of the central crop are blank" in caplog.text
    assert summary["n_images"] == 3 and summary["n_skipped_blank"] == 2
    with h5py.File(tmp_path / "s.h5") as h5:
        assert [n.decode() for n in h5["source_name"][()]] == [f.name for f in files]
        assert json.loads(h5.attrs["skipped_blank"]) == ["100_blank.fits", "100_holed.fits"]
        assert np.isfinite(h5["images"][()]).all() and (h5["images"][()].max(axis=(1, 2)) == 1.0).all()
    # only blank files: no set at all
    with pytest.raises(InputFileError, match=r"all 1 files are blank \(left out: 100_blank\.fits\)"):
        image_set_from_fits([tmp_path / "100_blank.fits"], tmp_path / "z.h5", on_blank="skip", **options)


def test_blank_edges_outside_the_crop_are_left_out_of_the_statistics(first_fits_dir, tmp_path, caplog):
    """A real FIRST cutout at the survey's edge: rows 265-299 are NaN (as DR2 mosaics at their edges)."""
    from radiogen.fits_images import first_clip_level

    src = first_fits_dir / "200_020.485-000.490_0.4364_0052.49.fits"
    raw = fits.getdata(src).astype(np.float64)
    n_blank = int(np.isnan(raw).sum())
    assert n_blank > 10000 and np.isfinite(raw[:265]).all()
    with caplog.at_level(logging.INFO, logger="radiogen.fits_images"):
        image_set_from_fits([src], tmp_path / "e.h5", dataset="first", beam_arcsec=5.4, frequency_hz=1.4e9)
    assert f"{n_blank} blank (NaN) pixels outside the crop, left out of the statistics" in caplog.text
    with h5py.File(tmp_path / "e.h5") as h5:
        assert h5["clip_level"][0] == pytest.approx(first_clip_level(raw[np.isfinite(raw)]))
        assert np.isfinite(h5["images"][0]).all()
    # matched to 8": the blank rows and the pixels within reach of them stay blank, the crop is whole
    summary = image_set_from_fits([src], tmp_path / "m.h5", dataset="first", beam_arcsec=5.4,
                                  frequency_hz=1.4e9, target_beam_arcsec=8.0)
    assert summary["beam_arcsec"] == 8.0 and summary["n_images"] == 1


def test_cli_defaults_are_the_schema_defaults():
    from radiogen.cli import build_parser
    from radiogen.fits_images import IMAGESET_DEFAULTS

    args = build_parser().parse_args(["imageset", "from-fits", "x.fits", "--output", "o.h5", "--dataset", "first"])
    option = {"pixel_scale_arcsec": "pixel_scale"}
    for key, default in IMAGESET_DEFAULTS.items():
        if key == "label_map":
            assert args.label_map == [] and default == {}
            continue
        assert getattr(args, option.get(key, key)) == default, key


@pytest.mark.slow
def test_schema_accepts_the_new_settings_and_the_workflow_passes_them(repo_root, first_fits_dir, tmp_path):
    """The settings validate, and the workflow's rule builds a beam-matched set with them (real Snakemake)."""
    import os
    import subprocess
    import sys

    import jsonschema

    from radiogen.config import load_schema, schema_dir

    schema = load_schema(schema_dir() / "imagesets.schema.yaml")
    entry = {"inputs": [str(first_fits_dir)], "dataset": "first", "beam_arcsec": 5.4, "frequency_hz": 1.4e9,
             "target_beam_arcsec": 8.0, "unit": "Jy/beam", "on_blank": "skip", "pixel_scale_arcsec": 2.0}
    jsonschema.validate({"mine": entry}, schema)
    with pytest.raises(jsonschema.ValidationError, match="'drop' is not one of"):
        jsonschema.validate({"mine": {**entry, "on_blank": "drop"}}, schema)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(json.dumps({"results": str(tmp_path / "results"), "imagesets": {"mine": entry}}))
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    target = tmp_path / "results" / "imagesets" / "mine.h5"
    run = subprocess.run([sys.executable, "-m", "snakemake", str(target), "--nolock", "--cores", "1",
                          "--configfile", "config.yaml", str(overlay)],
                         cwd=repo_root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with h5py.File(target) as h5:
        assert h5.attrs["beam_arcsec"] == 8.0 and h5.attrs["beam_source"] == "target"
        assert h5.attrs["pixel_scale_arcsec"] == 2.0 and h5.attrs["n_images"] == 32


def test_resampling_keeps_the_centre_and_blanks(lotss_dr1_dir):
    """Real LoTSS pixels 1.5" -> 1.0" (upsampling): centre value kept, blank rows stay blank and do not leak."""
    from radiogen.fits_images import resample

    data = read_fits_image(lotss_dr1_dir / "P218+55_200px.fits").data
    holed = data.copy()
    holed[:40] = np.nan  # a blanked edge, as in DR2 mosaics
    fine = resample(data, (1.0 / 1.5, 1.0 / 1.5))
    fine_holed = resample(holed, (1.0 / 1.5, 1.0 / 1.5))
    assert fine.shape == (300, 300)
    # output pixel 149.5 (between the central two) is input pixel 99.5: the mean of the central four, to 2%
    centre = fine[149:151, 149:151].mean()
    assert centre == pytest.approx(data[99:101, 99:101].mean(), rel=0.02, abs=2e-5)
    # input row 40 is output row 149.5 - 59.5 x 1.5 = 60.25: rows before it are blank, those beyond
    # the spline's reach (2 input px = 3 output px) are whole and equal the unblanked resampling
    assert np.isnan(fine_holed[:61]).all()
    valid = np.isfinite(fine_holed)
    assert valid[65:].all()
    # (a cubic spline's prefilter is global, so it differs by a trace next to the blanks: < 2% of the rms)
    assert np.abs(fine_holed[valid] - fine[valid]).max() < 0.02 * np.std(data)
    np.testing.assert_allclose(fine_holed[100:], fine[100:], rtol=1e-9, atol=1e-12)


def test_header_beams(lotss_dr1_dir, tmp_path):
    from radiogen.beams import Beam

    header = _lotss_header(lotss_dr1_dir)
    data = np.ones((20, 20))

    def beam_of(**cards):
        h = header.copy()
        for key in ("BMAJ", "BMIN", "BPA"):
            h.remove(key)
        h.update({k: v / 3600 if k != "BPA" else v for k, v in cards.items()})
        fits.PrimaryHDU(data, header=h).writeto(tmp_path / "b.fits", overwrite=True)
        return read_fits_image(tmp_path / "b.fits").beam

    assert read_fits_image(lotss_dr1_dir / "P218+55_200px.fits").beam.close_to(Beam.circular(6.0), 1e-9)
    assert beam_of() is None
    assert beam_of(BMAJ=5.0).close_to(Beam.circular(5.0), 1e-9)  # no BMIN: circular
    assert beam_of(BMAJ=4.0, BMIN=8.0, BPA=10.0).pa_deg == pytest.approx(100.0)  # axes swapped
    with pytest.raises(InputFileError, match=r"b\.fits: elliptical beam \(BMAJ 8\", BMIN 4\"\) without BPA"):
        beam_of(BMAJ=8.0, BMIN=4.0)
    # Beam <-> covariance round trip, and the area formula pi theta_maj theta_min / (4 ln 2)
    beam = Beam(9.0, 3.0, 120.0)
    again = Beam.from_covariance(beam.covariance())
    assert (again.major_arcsec, again.minor_arcsec, again.pa_deg) == pytest.approx((9.0, 3.0, 120.0))
    assert beam.solid_angle_arcsec2() == pytest.approx(np.pi * 27.0 / (4 * np.log(2)))
