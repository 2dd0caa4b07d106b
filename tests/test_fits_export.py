"""Exported FITS images: astropy WCS reads them back, PyBDSF measures them, both layouts agree."""

from __future__ import annotations

import importlib.util

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from radiogen.fits_header import image_header
from radiogen.sampler.fits_export import export_fits

SIZE, PEAK_JY, RA, DEC = 80, 0.05, 210.5, 54.2
SIGMA_PX = 6.0 / 2.3548 / 1.5  # LoTSS beam, 6" FWHM at 1.5"/px


def _lotss_samples(path, n=3):
    """A LoTSS-like sample set: one unresolved source (peak 1 in scaled units) on Gaussian noise."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = []
    for k in range(n):
        y0, x0 = 40 + k, 38 - k
        source = np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * SIGMA_PX**2))
        images.append(source + rng.normal(0, 0.002, source.shape))
    images = np.stack(images).astype(np.float32)
    images /= images.max(axis=(1, 2), keepdims=True)
    with h5py.File(path, "w") as h5:
        h5["images"] = images
        h5["index"] = np.arange(10, 10 + n)
        h5["peak_flux"] = np.full(n, PEAK_JY, np.float32)
        h5.attrs.update(dataset="lotss", pixel_scale_arcsec=1.5, beam_arcsec=6.0, frequency_hz=144e6,
                        model_id="ab" * 32, guidance=0.1, seed=7)
    return images


def test_header_is_astropy_wcs_with_radio_axes_and_round_trips():
    header = image_header((SIZE, SIZE), pixel_scale_arcsec=1.5, beam_arcsec=6.0, frequency_hz=144e6,
                          bandwidth_hz=48e6, ra_deg=RA, dec_deg=DEC, bunit="JY/BEAM", freq_stokes_axes=True)
    wcs = WCS(header)
    assert wcs.naxis == 4 and list(wcs.wcs.ctype) == ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
    assert wcs.spectral.wcs.crval[0] == 144e6
    celestial = wcs.celestial
    pixels = np.array([[0.0, 0.0], [39.5, 39.5], [79.0, 12.0]])
    world = celestial.pixel_to_world_values(pixels[:, 0], pixels[:, 1])
    assert world[0][1] == pytest.approx(RA) and world[1][1] == pytest.approx(DEC)
    back = np.column_stack(celestial.world_to_pixel_values(*world))
    np.testing.assert_allclose(back, pixels, atol=1e-8)
    # 1.5" per pixel on the sky near the centre
    ra1, dec1 = celestial.pixel_to_world_values(39.5, 40.5)
    assert (dec1 - DEC) * 3600 == pytest.approx(1.5, rel=1e-4)
    assert header["BMAJ"] == pytest.approx(6.0 / 3600) and header["BUNIT"] == "JY/BEAM"


def test_both_layouts_hold_the_same_images_and_headers(tmp_path):
    samples = tmp_path / "samples.h5"
    images = _lotss_samples(samples)
    one = export_fits(samples, tmp_path / "images", ra_deg=RA, dec_deg=DEC, layout="images")
    multi = export_fits(samples, tmp_path / "mef", ra_deg=RA, dec_deg=DEC, layout="multi_extension",
                        images_per_file=2)
    assert [p.name for p in one] == ["sample_000010.fits", "sample_000011.fits", "sample_000012.fits"]
    assert [p.name for p in multi] == ["samples_000010-000011.fits", "samples_000012-000012.fits"]
    with fits.open(multi[0]) as mef:
        assert mef[0].header["NIMAGES"] == 2 and mef[0].header["SEED"] == 7
        assert [h.name for h in mef[1:]] == ["SAMPLE_000010", "SAMPLE_000011"]
        for k, hdu in enumerate(mef[1:]):
            single = fits.getheader(one[k])
            assert hdu.data.shape == (1, 1, SIZE, SIZE)
            np.testing.assert_allclose(hdu.data[0, 0], images[k] * PEAK_JY, rtol=1e-6)
            np.testing.assert_array_equal(hdu.data, fits.getdata(one[k]))
            for key in ("CTYPE1", "CRVAL1", "CRVAL2", "CDELT1", "CRVAL3", "BMAJ", "PEAKFLUX", "IMGINDEX"):
                assert hdu.header[key] == single[key], key
    flat = export_fits(samples, tmp_path / "flat", freq_stokes_axes=False, max_images=1)
    assert fits.getdata(flat[0]).shape == (SIZE, SIZE) and WCS(fits.getheader(flat[0])).naxis == 2


@pytest.mark.skipif(importlib.util.find_spec("bdsf") is None, reason="PyBDSF (bdsf) is not installed")
def test_pybdsf_reads_an_exported_image(tmp_path):
    """PyBDSF takes pixel scale, beam and frequency from the header and finds the source where it is."""
    # the library's import keeps numpy's global error state (a bare ``import bdsf`` sets
    # divide="raise" for every later test in this worker)
    from radiogen.evaluation.pybdsf_runtime import bdsf_errstate, import_bdsf

    bdsf = import_bdsf()
    samples = tmp_path / "samples.h5"
    _lotss_samples(samples, n=1)
    (path,) = export_fits(samples, tmp_path / "fits", ra_deg=RA, dec_deg=DEC)
    before = np.geterr()
    with bdsf_errstate():
        img = bdsf.process_image(str(path), quiet=True, thresh="hard", thresh_isl=5.0, thresh_pix=5.0,
                                 rms_map=False, mean_map="const", outdir=str(tmp_path))
    assert np.geterr() == before
    assert img.nsrc == 1
    source = img.sources[0]
    ra, dec = WCS(fits.getheader(path)).celestial.pixel_to_world_values(38, 40)
    assert source.posn_sky_centroid[0] == pytest.approx(ra, abs=1.0 / 3600)
    assert source.posn_sky_centroid[1] == pytest.approx(dec, abs=1.0 / 3600)
    # an unresolved source: total flux equals the peak (Jy), both from the header's beam
    assert source.peak_flux_max == pytest.approx(PEAK_JY, rel=0.05)
    assert source.total_flux == pytest.approx(PEAK_JY, rel=0.1)
    assert float(img.frequency) == pytest.approx(144e6)
