"""FITS cutouts of any survey as an image set, on real FIRST (SkyView) and LoTSS pixels."""

from __future__ import annotations

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
