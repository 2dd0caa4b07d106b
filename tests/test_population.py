"""The map's source population: 144 MHz counts, intrinsic Gaussians, user catalogues, and their map."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import signal

from radiogen.config import fill_defaults
from radiogen.errors import CatalogueError, ConfigError
from radiogen.io import file_digest
from radiogen.skymap import assemble, catalogue, population, stamps, validate
from radiogen.skymap.geometry import beam_area_px, map_header, n_tiles
from radiogen.skymap.settings import MapSettings

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "skymap.schema.yaml"
#: A model whose training peak fluxes are 0.32 mJy/beam to 0.32 Jy/beam (log normalisation, lambda 0).
META = {"dataset": "lotss",
        "normalisation": {"boxcox_lambda": 0.0, "boxcox_mean": float(np.log(0.01)), "boxcox_std": 1.38},
        "context_histogram": {"edges": np.linspace(-2.5, 2.5, 101), "counts": np.ones(100)}}
#: The same normalisation with a training range far above any drawn peak: every source a Gaussian.
META_NO_GENERATED = {**META, "context_histogram": {"edges": np.linspace(20.0, 21.0, 11), "counts": np.ones(10)}}
BEAM = 6.0
PIXEL = 1.5


def _settings(**overrides) -> MapSettings:
    return MapSettings.from_mapping(fill_defaults(dict(overrides), SCHEMA))


def _header(size: int):
    return map_header(size_px=size, name="pop", centre_ra_deg=180.0, centre_dec_deg=55.0)


def test_counts_integral_is_lotss_like_and_the_draw_has_its_density_and_flux_distribution():
    # The counts above the DR2 5 sigma limit (5 x 83 uJy): ~1030 per deg^2 -- the same order as the
    # ~780 per deg^2 in the DR2 catalogue (a peak-flux-limited catalogue over varying rms, so fewer).
    density = population.integral_counts_deg2(0.415e-3, 1.0)
    assert 900.0 < density < 1200.0
    assert 0.5 < density / 780.0 < 2.0
    # the Euclidean-normalised counts rise from ~35 at 1 mJy to ~3300 at 1 Jy (at 154 MHz, the fit)
    assert population.euclidean_counts(1e-3, frequency_hz=154e6) == pytest.approx(10**1.583, rel=1e-3)
    # drawn over a 1 deg^2 map: the density of the integral, within 4 Poisson sigma
    size = 2400  # 1 deg at 1.5"
    header = _header(size)
    table = catalogue.input_catalogue(_settings(), META, header, seed=11)
    expected = population.integral_counts_deg2(0.415e-3, 1.0) * (size * PIXEL / 3600.0) ** 2
    assert abs(len(table) - expected) < 4.0 * math.sqrt(expected), (len(table), expected)
    # and its flux distribution: the fraction above 2 mJy is the counts' ratio, within 4 binomial sigma
    fraction = population.integral_counts_deg2(2e-3, 1.0) / population.integral_counts_deg2(0.415e-3, 1.0)
    above = float((table["Total_flux"] > 2.0).mean())
    assert abs(above - fraction) < 4.0 * math.sqrt(fraction * (1 - fraction) / len(table)), (above, fraction)
    # the same seed gives the same sky, another seed another
    again = catalogue.input_catalogue(_settings(), META, header, seed=11)
    pd.testing.assert_frame_equal(table, again)
    assert len(catalogue.input_catalogue(_settings(), META, header, seed=12)) != len(table) or \
        not np.allclose(catalogue.input_catalogue(_settings(), META, header, seed=12)["RA"].iloc[:5],
                        table["RA"].iloc[:5])
    # kinds: resolved sources with a convolved peak in the model's range are generated, the rest Gaussians
    generated = table["kind"] == "generated"
    assert generated.any() and (table["kind"] == "gaussian").sum() > 0.8 * len(table)
    assert table.loc[generated, "Resolved"].all()
    assert (table.loc[generated, "Peak_flux"] >= 0.32 * 0.99).all()
    np.testing.assert_allclose(table["Peak_flux"],
                               population.convolved_peak(table["Total_flux"], table["Maj"], table["Min"], BEAM))
    # sizes follow Windhorst et al.: the median size of the draw is near the median relation's
    ratio = table["Maj"] / population.median_size_arcsec(table["Total_flux"] * 1e-3)
    assert np.median(ratio) == pytest.approx(1.0, rel=0.15)


@pytest.mark.parametrize("major, minor, pa", [(0.0, 0.0, 0.0), (0.8, 0.5, 30.0), (4.0, 2.0, 75.0),
                                              (20.0, 8.0, 120.0)])
def test_gaussians_hold_their_total_flux_and_the_convolved_peak_formula(major, minor, pa):
    total = 2.5e-3  # Jy
    half = population.stamp_half_size_px(major, BEAM, PIXEL)
    shape = dict(major_arcsec=major, minor_arcsec=minor, pa_deg=pa, dx=0.3, dy=-0.2, half=half,
                 pixel_scale_arcsec=PIXEL)
    intrinsic = population.intrinsic_stamp(total, **shape)
    assert intrinsic.sum() == pytest.approx(total, rel=1e-9)
    convolved = population.convolved_stamp(total, beam_arcsec=BEAM, **shape)
    beam_px = beam_area_px(BEAM, PIXEL)
    assert convolved.sum() / beam_px == pytest.approx(total, rel=0.01)
    # the analytic convolution equals the intrinsic Jy/pixel sky convolved numerically with the beam
    # (a unit-peak Gaussian kernel turns Jy/pixel into Jy/beam); on a pixel centre, as the intrinsic sky
    # integrates over pixels and so puts a sub-pixel source at its pixel's centre
    centred = {**shape, "dx": 0.0, "dy": 0.0}
    intrinsic = population.intrinsic_stamp(total, **centred)
    convolved = population.convolved_stamp(total, beam_arcsec=BEAM, **centred)
    sigma = BEAM / PIXEL / math.sqrt(8 * math.log(2))
    grid = np.arange(-half, half + 1)
    kernel = np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / (2 * sigma**2))
    numeric = signal.fftconvolve(intrinsic, kernel, mode="same")
    assert np.abs(numeric - convolved).max() < 0.01 * convolved.max()
    peak = population.convolved_peak(total, major, minor, BEAM)
    assert peak == pytest.approx(total * BEAM**2 / (math.hypot(major, BEAM) * math.hypot(minor, BEAM)))
    assert convolved.max() <= peak * (1 + 1e-9) and convolved.max() > 0.95 * peak


def _write_fits_catalogue(path: Path, *, flux_unit="Jy", size_unit="deg", peak=False):
    import astropy.units as u

    table = Table()
    table["RA"] = [180.0, 180.01] * u.deg
    table["DEC"] = [55.0, 55.01] * u.deg
    table["S_int"] = [2e-3, 5e-3] * (u.Jy / u.beam if peak else u.Unit(flux_unit))
    table["Maj"] = [10.0 / 3600, 3.0 / 3600] * u.Unit(size_unit)
    table["Min"] = [6.0 / 3600, 3.0 / 3600] * u.Unit(size_unit)
    table["PA"] = [45.0, 0.0] * u.deg
    table.write(path, overwrite=True)
    return path


COLUMNS = {"ra": "RA", "dec": "DEC", "total_flux": "S_int", "major": "Maj", "minor": "Min", "pa": "PA",
           "name": None}


def test_user_catalogue_units_are_converted_and_bad_columns_named(tmp_path):
    fits_path = _write_fits_catalogue(tmp_path / "cat.fits")
    # the FITS columns' own units (Jy, deg) win over the configured ones
    table = population.read_population_catalogue(fits_path, columns=COLUMNS, flux_unit="mJy", size_unit="arcsec",
                                                 sizes="intrinsic", beam_arcsec=BEAM)
    np.testing.assert_allclose(table["Total_flux"], [2.0, 5.0])  # mJy
    np.testing.assert_allclose(table["Maj"], [10.0, 3.0])  # arcsec
    np.testing.assert_allclose(table["Min"], [6.0, 3.0])
    # a CSV has no units: the configured ones; convolved sizes are deconvolved from the 6" beam
    csv = tmp_path / "cat.csv"
    pd.DataFrame({"ra": [180.0], "dec": [55.0], "flux": [1500.0], "maj": [10.0], "mn": [5.0]}).to_csv(csv, index=False)
    columns = {"ra": "ra", "dec": "dec", "total_flux": "flux", "major": "maj", "minor": "mn", "pa": None}
    table = population.read_population_catalogue(csv, columns=columns, flux_unit="uJy", size_unit="arcsec",
                                                 sizes="convolved", beam_arcsec=BEAM)
    assert table["Total_flux"].iloc[0] == pytest.approx(1.5)
    assert table["Maj"].iloc[0] == pytest.approx(8.0) and table["Min"].iloc[0] == 0.0  # 5" < beam: unresolved
    assert table["PA"].iloc[0] == 0.0
    # a peak quantity is refused as the integrated flux
    with pytest.raises(CatalogueError, match="peak quantity"):
        population.read_population_catalogue(_write_fits_catalogue(tmp_path / "peak.fits", peak=True),
                                             columns=COLUMNS, flux_unit="mJy", size_unit="arcsec",
                                             sizes="intrinsic", beam_arcsec=BEAM)
    # a missing column names the key and the column
    with pytest.raises(CatalogueError, match=r"no column 'Total_flux' \(skymap.catalogue_columns.total_flux\)"):
        population.read_population_catalogue(fits_path, columns={**COLUMNS, "total_flux": "Total_flux"},
                                             flux_unit="mJy", size_unit="arcsec", sizes="intrinsic",
                                             beam_arcsec=BEAM)
    with pytest.raises(CatalogueError, match="catalogue_columns.minor"):
        population.read_population_catalogue(fits_path, columns={**COLUMNS, "minor": "b"}, flux_unit="mJy",
                                             size_unit="arcsec", sizes="intrinsic", beam_arcsec=BEAM)
    # start-up checks name the keys
    with pytest.raises(ConfigError, match="sources is catalogue, but skymap.catalogue names no file"):
        _settings(sources="catalogue")
    with pytest.raises(ConfigError, match="set skymap.sources: catalogue"):
        _settings(catalogue=str(fits_path))
    with pytest.raises(ConfigError, match="flux_range_mjy"):
        _settings(flux_range_mjy=[1.0, 0.5])
    with pytest.raises(ConfigError, match="catalogue_columns: unknown key"):
        _settings(catalogue_columns={**COLUMNS, "flux": "x"})
    # a catalogue population is placed with its fluxes (positions on the map)
    settings = _settings(sources="catalogue", catalogue=str(fits_path), catalogue_columns=COLUMNS)
    placed = catalogue.input_catalogue(settings, META_NO_GENERATED, _header(400), seed=1)
    np.testing.assert_allclose(placed["Total_flux"], [2.0, 5.0])
    assert list(placed["kind"]) == ["gaussian", "gaussian"]


def test_population_map_is_exact_intrinsic_and_recovered(tmp_path):
    """A counts sky of Gaussians: the Jy/beam sky is the intrinsic Jy/pixel sky convolved with the beam,
    the truth holds the exact fluxes and PyBDSF finds the bright ones."""
    size = 480
    header = _header(size)
    settings = _settings(tile_px=240, flux_range_mjy=[0.415, 50.0])
    table = catalogue.input_catalogue(settings, META_NO_GENERATED, header, seed=4)
    assert len(table) > 20 and (table["kind"] == "gaussian").all()
    header.totextfile(str(tmp_path / "h.txt"), overwrite=True)
    catalogue.write_sources(table, tmp_path / "sources.csv")

    tiles = []
    for number in range(n_tiles(size, 240)):  # tile jobs without generated sources
        tiles.append(stamps.write_tile(tmp_path / f"{number}.h5", stamps=np.zeros((0, 80, 80)),
                                       index=np.zeros(0, np.int64), n_islands=np.zeros(0, np.int64), gaussians=[],
                                       attrs={"tile": number, "catalogue_sha256": file_digest(tmp_path / "sources.csv"),
                                              "model_id": "none"}))
    truth = assemble.assemble_map(tmp_path / "sources.csv", tmp_path / "h.txt", tiles, settings=settings, seed=2,
                                  name="pop", map_path=tmp_path / "map.fits", sky_model_path=tmp_path / "sky.fits",
                                  truth_path=tmp_path / "truth.csv", intrinsic_sky_path=tmp_path / "intrinsic.fits")
    assert len(truth) == len(table) and (truth["kind"] == "gaussian").all()
    np.testing.assert_allclose(truth["Total_flux"], table["Total_flux"])
    np.testing.assert_allclose(truth["Peak_flux"], table["Peak_flux"])
    np.testing.assert_allclose(truth["Maj_convolved"], np.hypot(table["Maj"], BEAM))
    sky = fits.getdata(tmp_path / "sky.fits").astype(np.float64)
    with fits.open(tmp_path / "intrinsic.fits") as hdul:
        intrinsic, intrinsic_header = hdul[0].data.astype(np.float64), hdul[0].header
    assert intrinsic_header["BUNIT"] == "JY/PIXEL" and intrinsic_header["INTRINS"]
    beam_px = beam_area_px(BEAM, PIXEL)
    # total flux: the intrinsic sky holds the catalogue's (sources near the edge lose a little)
    assert intrinsic.sum() * 1e3 == pytest.approx(table["Total_flux"].sum(), rel=0.02)
    assert sky.sum() / beam_px == pytest.approx(intrinsic.sum(), rel=0.02)
    # the Jy/beam sky = the intrinsic sky convolved with the beam (away from the edges), up to the
    # intrinsic grid's pixel: a source smaller than a pixel sits at its pixel's centre there (measured:
    # largest difference 6 % of the brightest peak, the flux-weighted difference 2 %)
    sigma = BEAM / PIXEL / math.sqrt(8 * math.log(2))
    grid = np.arange(-15, 16)
    kernel = np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / (2 * sigma**2))
    numeric = signal.fftconvolve(intrinsic, kernel, mode="same")
    inner = (slice(40, -40), slice(40, -40))
    difference = np.abs(numeric[inner] - sky[inner])
    assert difference.max() < 0.1 * sky.max()
    assert difference.sum() < 0.05 * sky[inner].sum()
    # every source on a pixel centre: the two skies agree to 2 % of the peak (measured 1.0 %: the sources below
    # a pixel are averaged over it in the intrinsic sky)
    table_centred = table.assign(x=table["ix"].astype(float), y=table["iy"].astype(float))
    catalogue.write_sources(table_centred, tmp_path / "centred.csv")
    for number, path in enumerate(tiles):
        stamps.write_tile(path, stamps=np.zeros((0, 80, 80)), index=np.zeros(0, np.int64),
                          n_islands=np.zeros(0, np.int64), gaussians=[],
                          attrs={"tile": number, "catalogue_sha256": file_digest(tmp_path / "centred.csv"),
                                 "model_id": "none"})
    assemble.assemble_map(tmp_path / "centred.csv", tmp_path / "h.txt", tiles, settings=settings, seed=2,
                          name="pop", map_path=tmp_path / "map_c.fits", sky_model_path=tmp_path / "sky_c.fits",
                          truth_path=tmp_path / "truth_c.csv", intrinsic_sky_path=tmp_path / "intrinsic_c.fits")
    sky_c = fits.getdata(tmp_path / "sky_c.fits").astype(np.float64)
    numeric_c = signal.fftconvolve(fits.getdata(tmp_path / "intrinsic_c.fits").astype(np.float64), kernel,
                                   mode="same")
    assert np.abs(numeric_c[inner] - sky_c[inner]).max() < 0.02 * sky_c.max()
    # PyBDSF on the map finds the bright Gaussians (S/N >= 10 after the beam) and little else
    recovered = validate.find_sources(tmp_path / "map.fits", tmp_path / "rec.csv", thresh_isl=4, thresh_pix=5)
    footprint = fits.getdata(tmp_path / "sky.fits", extname="FOOTPRINT")
    rows = validate.footprint_rows(footprint, header, recovered["RA"], recovered["DEC"], grow_px=2.0)
    truth, recovered = validate.match_catalogues(truth, recovered, radius_arcsec=6.0, footprint_row=rows)
    summary = validate.summary_table(truth, recovered, n_input=len(table), rms_mjy=0.08,
                                     beam=(BEAM, BEAM, 0.0)).set_index("measure")
    bright = truth["Peak_flux"] / 0.08 >= 10
    assert bright.sum() >= 3
    assert summary.loc["completeness_snr_ge_10", "value"] >= 0.9
    assert summary.loc["reliability", "value"] >= 0.9
    ratio = (truth["Recovered_flux"] / truth["Total_flux"])[bright & (truth["n_matches"] > 0)]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1)
    # sizes: PyBDSF's fitted major axis is the true one convolved with the beam, its deconvolved one the
    # intrinsic one (bright single matches, summary and an independent computation)
    sized = validate.size_sample(truth, rms_mjy=0.08, beam=(BEAM, BEAM, 0.0))
    assert len(sized) >= 3 and summary.loc["size_sources", "value"] == len(sized)
    fitted = np.median(sized["Recovered_Maj"] / np.hypot(sized["Maj"], BEAM))  # circular beam: axes add in quadrature
    assert summary.loc["size_ratio_median", "value"] == pytest.approx(fitted, rel=1e-9)
    assert fitted == pytest.approx(1.0, abs=0.1)


def test_generated_source_enters_the_intrinsic_sky_deconvolved_from_the_beam():
    """A generated source's PyBDSF Gaussians (Jy/beam, after the beam) deconvolved: total flux kept, and
    convolved again with the beam they give back the model placed on the Jy/beam map."""
    from radiogen.skymap.source_model import gaussian_model

    beam_px = BEAM / PIXEL
    # peak Jy/beam, x, y, FWHM major, minor (px), theta: an extended and a barely resolved component
    gaussians = np.array([[4e-3, 38.0, 41.0, 9.0, 6.0, 30.0], [2e-3, 45.0, 36.0, 4.2, 4.1, 0.0]])
    shape = (80, 80)
    intrinsic = assemble.deconvolved_stamp(gaussians, shape, beam_px=beam_px)
    totals = gaussians[:, 0] * gaussians[:, 3] * gaussians[:, 4] / beam_px**2
    assert intrinsic.sum() == pytest.approx(totals.sum(), rel=1e-9)
    sigma = beam_px / math.sqrt(8 * math.log(2))
    grid = np.arange(-15, 16)
    kernel = np.exp(-(grid[None, :] ** 2 + grid[:, None] ** 2) / (2 * sigma**2))
    again = signal.fftconvolve(intrinsic, kernel, mode="same")
    model = gaussian_model(shape, gaussians.tolist())
    assert np.abs(again - model).max() < 0.03 * model.max()


def test_map_assembly_draws_gaussians_exactly_as_pybdsf():
    """skymap.gaussians.pybdsf_gaussian (no PyBDSF in the data environment) equals bdsf.functions.gaussian_fcn."""
    from radiogen.evaluation.pybdsf_runtime import bdsf_errstate, import_bdsf
    from radiogen.skymap.gaussians import pybdsf_gaussian

    import_bdsf()
    with bdsf_errstate():
        from bdsf.functions import gaussian_fcn

        x, y = np.mgrid[:40, :30].astype(np.float64)
        for params in ([1.0, 20.3, 14.1, 9.0, 4.0, 0.0], [2.5, 17.0, 12.5, 12.0, 3.0, 37.0],
                       [0.7, 22.0, 16.0, 5.0, 5.0, -120.0]):
            np.testing.assert_allclose(pybdsf_gaussian(params, x, y), gaussian_fcn(list(params), x, y),
                                       rtol=1e-5, atol=1e-15)  # PyBDSF rounds FWHM/sigma to 2.35482
