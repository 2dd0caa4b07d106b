"""The classical simulated survey: DR2-like FITS, noise level, catalogue, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from radiogen.cli import main as cli_main
from radiogen.errors import ConfigError
from radiogen.noise import autocorrelation_fwhm_px
from radiogen.simulate import (
    SurveySettings,
    mosaic_ids,
    sample_power_law,
    simulate_mosaic,
    simulate_survey,
    source_name,
)

SMALL = dict(n_mosaics=2, mosaic_size=400, sources_per_mosaic=25)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    catalogue = simulate_survey(out, settings=SurveySettings(**SMALL), seed=7)
    return out, catalogue


def test_files_and_catalogue_columns(survey):
    out, catalogue = survey
    assert sorted(p.name for p in (out / "mosaics").iterdir()) == ["SIM000.fits", "SIM001.fits"]
    on_disk = pd.read_csv(out / "catalogue.csv")
    expected = ["Source_Name", "RA", "DEC", "optRA", "optDec", "LAS", "LAS_from", "Peak_flux",
                "Total_flux", "E_Total_flux", "S_Code", "Mosaic_ID", "Morphology"]
    assert list(on_disk.columns) == expected
    # what the LoTSS-DR2 resolved criterion needs: an integrated-flux error and a source code
    assert (on_disk["E_Total_flux"] > 0).all() and set(on_disk["S_Code"]) <= {"S", "M"}
    assert (on_disk.loc[on_disk["Morphology"] == "compact", "S_Code"] == "S").all()
    assert len(on_disk) == 50 and on_disk["Source_Name"].is_unique
    assert set(on_disk["Mosaic_ID"]) == {"SIM000", "SIM001"}
    assert on_disk["Source_Name"].str.match(r"^ILTJ\d{6}\.\d{2}[+-]\d{6}\.\d$").all()
    # Fluxes in mJy within the configured power-law limits; peak never above total.
    assert on_disk["Total_flux"].between(1.0, 1000.0).all()
    assert (on_disk["Peak_flux"] <= on_disk["Total_flux"] * 1.0001).all()
    # Some hosts unidentified (NaN optical position), as in DR2.
    assert on_disk["optRA"].isna().any() and on_disk["optRA"].notna().any()


def test_header_like_dr2(survey, lotss_dr1_dir):
    out, _ = survey
    real = fits.Header.fromstring(
        (lotss_dr1_dir / "dr2_headers" / "P000+23-mosaic-blanked.hdr").read_text(), sep="\n")
    with fits.open(out / "mosaics" / "SIM000.fits") as hdul:
        assert len(hdul) == 1
        header, data = hdul[0].header, hdul[0].data
    # Every card of a real DR2 mosaic header is present, same meaning.
    assert set(real.keys()) <= set(header.keys())
    for key in ("CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "RADESYS", "BUNIT", "BTYPE", "TELESCOP",
                "CDELT1", "CDELT2", "BMAJ", "BMIN", "BPA", "RESTFRQ", "EQUINOX", "LONPOLE"):
        assert header[key] == pytest.approx(real[key]) if isinstance(real[key], float) else header[key] == real[key], key
    assert header["CTYPE1"] == "RA---SIN" and header["BUNIT"] == "JY/BEAM"
    assert abs(header["CDELT2"]) * 3600 == pytest.approx(1.5)
    assert header["BMAJ"] * 3600 == pytest.approx(6.0) and header["BMIN"] * 3600 == pytest.approx(6.0)
    assert 140e6 < header["RESTFRQ"] < 148e6
    assert header["BITPIX"] == -32 and data.dtype.kind == "f" and data.dtype.itemsize == 4
    assert data.shape == (400, 400)
    # NaN-blanked corners, finite centre.
    assert np.isnan(data[0, 0]) and np.isnan(data[-1, -1]) and np.isnan(data[0, -1])
    assert np.isfinite(data[150:250, 150:250]).all()
    assert 0.15 < np.isnan(data).mean() < 0.3
    assert WCS(header).has_celestial


def test_noise_rms_and_beam_correlation():
    settings = SurveySettings(n_mosaics=1, mosaic_size=600, sources_per_mosaic=0, rms_ujy=80.0)
    image, _, table = simulate_mosaic(settings, index=0, seed=3)
    assert len(table) == 0
    finite = image[np.isfinite(image)].astype(float)
    assert np.std(finite) * 1e6 == pytest.approx(80.0, rel=0.03)
    assert abs(np.mean(finite)) < 5e-6
    # Autocorrelation = the 6" beam (sigma 1.70 px): neighbours correlate by exp(-1/(2 sigma^2)) = 0.84
    # (a kernel of the beam's own sigma would give exp(-1/(4 sigma^2)) = 0.92, a sqrt(2) wider correlation).
    core = image[200:400, 200:400].astype(float)
    rho = np.corrcoef(core[:, :-1].ravel(), core[:, 1:].ravel())[0, 1]
    assert rho == pytest.approx(0.841, abs=0.02)
    # the autocorrelation FWHM of the noise-only field is BMAJ (4 px at 1.5"/px), both axes, within 5%
    disc = image[150:450, 150:450].astype(float)
    assert np.isfinite(disc).all()
    for angle in (0.0, 90.0):
        assert autocorrelation_fwhm_px(disc, angle_deg=angle) == pytest.approx(6.0 / 1.5, rel=0.05)


def test_compact_sources_match_catalogue_in_pixels(survey):
    out, catalogue = survey
    with fits.open(out / "mosaics" / "SIM000.fits") as hdul:
        data, wcs = hdul[0].data.astype(float), WCS(hdul[0].header)
    compact = catalogue[(catalogue["Morphology"] == "compact") & (catalogue["Mosaic_ID"] == "SIM000")]
    assert len(compact) > 3
    checked = 0
    for _, row in compact.iterrows():
        x, y = wcs.world_to_pixel_values(row["RA"], row["DEC"])
        i, j = int(round(float(y))), int(round(float(x)))
        patch = data[i - 2:i + 3, j - 2:j + 3]
        if not np.isfinite(patch).all() or row["Peak_flux"] < 2.0:
            continue
        # Catalogue mJy/beam vs image Jy/beam, within 5 sigma of the noise (plus neighbours).
        assert np.nanmax(patch) * 1e3 == pytest.approx(row["Peak_flux"], abs=0.5 + 0.1 * row["Peak_flux"])
        checked += 1
    assert checked >= 2


def test_extended_sizes_physical(tmp_path):
    settings = SurveySettings(n_mosaics=1, mosaic_size=800, sources_per_mosaic=120)
    _, _, table = simulate_mosaic(settings, index=0, seed=11)
    las = table.groupby("Morphology")["LAS"]
    assert las.max()["compact"] <= 4.0
    for morph in ("FRI", "FRII", "bent"):
        assert las.min()[morph] > 10.0 and las.max()[morph] < 150.0, morph
    # Extended sources spread their flux: peak well below total.
    frii = table[table["Morphology"] == "FRII"]
    assert (frii["Peak_flux"] < 0.9 * frii["Total_flux"]).all()


def test_seed_reproducibility(tmp_path, survey):
    out, _ = survey
    again = tmp_path / "again"
    simulate_survey(again, settings=SurveySettings(**SMALL), seed=7)
    assert (again / "catalogue.csv").read_bytes() == (out / "catalogue.csv").read_bytes()
    for mid in mosaic_ids(2):
        a = fits.getdata(again / "mosaics" / f"{mid}.fits")
        b = fits.getdata(out / "mosaics" / f"{mid}.fits")
        assert np.array_equal(a, b, equal_nan=True)
    other = tmp_path / "other"
    simulate_survey(other, settings=SurveySettings(**SMALL), seed=8)
    assert (other / "catalogue.csv").read_bytes() != (out / "catalogue.csv").read_bytes()
    # Each mosaic has its own stream: the first mosaic does not depend on how many follow.
    one = simulate_mosaic(SurveySettings(**{**SMALL, "n_mosaics": 3}), index=0, seed=7)[0]
    assert np.array_equal(one, fits.getdata(out / "mosaics" / "SIM000.fits"), equal_nan=True)


def test_power_law_counts():
    rng = np.random.default_rng(0)
    s = sample_power_law(rng, 200_000, s_min=1.0, s_max=1000.0, alpha=1.6)
    assert s.min() >= 1.0 and s.max() <= 1000.0
    # N(>S) for dN/dS ~ S^-1.6 on [1, 1000]: (S^-0.6 - 1000^-0.6) / (1 - 1000^-0.6).
    for value in (2.0, 10.0, 100.0):
        expected = (value**-0.6 - 1000**-0.6) / (1 - 1000**-0.6)
        assert np.mean(s > value) == pytest.approx(expected, abs=0.005)


def test_source_name_format():
    assert source_name(205.15654, 54.83606) == "ILTJ134037.56+545009.8"
    assert source_name(10.0, -5.5).startswith("ILTJ004000.00-053000.0")


def test_invalid_settings_name_the_key():
    with pytest.raises(ConfigError, match="unknown key.*n_mosiacs"):
        SurveySettings.from_mapping({"n_mosiacs": 2})
    with pytest.raises(ConfigError, match="flux_min_mjy"):
        SurveySettings.from_mapping({"flux_min_mjy": 10.0, "flux_max_mjy": 1.0})
    with pytest.raises(ConfigError, match="morphology_fractions"):
        SurveySettings.from_mapping({"morphology_fractions": {"spiral": 1.0}})


def test_cli(tmp_path):
    rc = cli_main(["lotss", "simulate", "--out-dir", str(tmp_path), "--seed", "1",
                   "--settings", '{"n_mosaics": 1, "mosaic_size": 200, "sources_per_mosaic": 5}'])
    assert rc == 0
    assert (tmp_path / "mosaics" / "SIM000.fits").exists()
    assert len(pd.read_csv(tmp_path / "catalogue.csv")) == 5
    assert cli_main(["lotss", "simulate", "--out-dir", str(tmp_path / "x"), "--seed", "1",
                     "--settings", '{"rms_ujy": -1}']) == 1
    assert not (tmp_path / "x" / "catalogue.csv").exists()


def test_schema_defaults_match_library(repo_root):
    import dataclasses

    import yaml

    schema = yaml.safe_load((repo_root / "workflow/schemas/lotss.schema.yaml").read_text())
    props = schema["properties"]["simulate"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(SurveySettings)}
    for name, sub in props.items():
        field = fields[name]
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert sub["default"] == default, name
    assert set(fields) <= set(props)
