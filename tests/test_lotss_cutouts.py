"""Catalogue checks, source assignment, cutouts and aggregation on real LoTSS pixels."""

from __future__ import annotations

import logging
import shutil
import tracemalloc

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS

from radiogen.cli import main as cli_main
from radiogen.errors import CatalogueError, InputFileError
from radiogen.io import read_table_hdf5
from radiogen.lotss.catalogue import normalise_catalogue, read_catalogue
from radiogen.lotss.cutouts import (
    aggregate_shards,
    cut_mosaic,
    extract_cutouts,
    read_cutouts,
)
from radiogen.lotss.sources import assign_sources
from radiogen.lotss.mosaic import open_mosaic

MOSAICS = {"P205+55": "P205+55_400px.fits", "P218+55": "P218+55_200px.fits"}
CATALOGUE = "LoTSS_DR1_srl_P205+55_P218+55.fits"


@pytest.fixture(scope="module")
def dr1(lotss_dr1_dir, tmp_path_factory):
    """Real DR1 pieces cut end to end: sources, shards, aggregate."""
    out = tmp_path_factory.mktemp("dr1")
    paths = {mid: lotss_dr1_dir / name for mid, name in MOSAICS.items()}
    summary = assign_sources(lotss_dr1_dir / CATALOGUE, paths, out / "sources.h5")
    shards = []
    for mid, path in paths.items():
        cut_mosaic(path, out / "sources.h5", out / f"{mid}.h5", mosaic_id=mid, block_rows=64)
        shards.append(out / f"{mid}.h5")
    aggregate_shards(shards, out / "cutouts.h5", sources_path=out / "sources.h5")
    return {"dir": out, "paths": paths, "summary": summary, "cutouts": read_cutouts(out / "cutouts.h5")}


def test_assignment_counts_real_catalogue(dr1):
    s = dr1["summary"]
    assert s["n_catalogue"] == 12093
    assert s["n_per_mosaic"] == {"P205+55": 27, "P218+55": 7}
    assert s["n_off_mosaic"] == 12093 - 34
    with h5py.File(dr1["dir"] / "sources.h5") as h5:
        assert len(h5["off_mosaic_names"]) == s["n_off_mosaic"]
        table = read_table_hdf5(h5["catalogue"])
    # DR1 has no optical positions or LAS: centre from RA/DEC, LAS from DC_Maj.
    assert (table["centre_from"] == "radio").all()
    assert np.allclose(table["centre_ra"], table["RA"])
    assert np.allclose(table["LAS"], table["DC_Maj"]) and (table["LAS_from"] == "DC_Maj").all()


def test_aggregate_layout(dr1):
    c = dr1["cutouts"]
    n = 34
    assert c["images"].shape == (n, 80, 80) and c["images"].dtype == np.float32
    for name in ("source_name", "centre_ra", "centre_dec", "centre_from", "mosaic_id",
                 "flag_nan", "flag_partial", "nan_fraction"):
        assert len(c[name]) == n, name
    assert c["flag_nan"].dtype == bool and c["flag_partial"].dtype == bool
    assert list(c["mosaic_id"]) == ["P205+55"] * 27 + ["P218+55"] * 7
    assert list(c["catalogue"]["Source_Name"]) == list(c["source_name"])
    a = c["attrs"]
    assert a["pixel_scale_arcsec"] == pytest.approx(1.5)
    assert a["beam_arcsec"] == pytest.approx(6.0)
    assert a["frequency_hz"] == pytest.approx(143.65e6)
    assert a["n_catalogue"] == 12093 and a["n_off_mosaic"] == 12059 and a["n_cutouts"] == n
    # The pieces are small (300" and 600"), so many cutouts hang over an edge:
    # exactly those are NaN-filled and flagged, the rest are complete.
    assert np.array_equal(c["flag_partial"], c["flag_nan"])
    assert 0 < c["flag_partial"].sum() < n
    assert not np.isnan(c["images"][~c["flag_partial"]]).any()


def test_cutouts_equal_astropy_cutout2d(dr1):
    c = dr1["cutouts"]
    for mid, path in dr1["paths"].items():
        full = fits.getdata(path).astype(float)
        for i in np.flatnonzero(c["mosaic_id"] == mid):
            ref = Cutout2D(full, (c["pixel_x"][i], c["pixel_y"][i]), 80, mode="partial", fill_value=np.nan)
            assert np.array_equal(ref.data.astype(np.float32), c["images"][i], equal_nan=True)
            assert ref.data.shape == (80, 80)


def test_compact_sources_centred_with_catalogue_peak(dr1):
    c = dr1["cutouts"]
    cat = c["catalogue"]
    ra, dec, peak = cat["RA"].to_numpy(), cat["DEC"].to_numpy(), cat["Peak_flux"].to_numpy()
    checked = 0
    for i in range(len(cat)):
        if cat["S_Code"][i] != "S" or peak[i] < 1.0 or c["flag_partial"][i]:
            continue
        # Skip sources with a brighter catalogue neighbour inside the cutout.
        sep = np.hypot((ra - ra[i]) * np.cos(np.deg2rad(dec[i])), dec - dec[i]) * 3600
        if np.any((sep < 60) & (sep > 0) & (peak > peak[i])):
            continue
        image = c["images"][i]
        iy, ix = np.unravel_index(np.nanargmax(image), image.shape)
        assert abs(iy - 40) <= 1 and abs(ix - 40) <= 1, cat["Source_Name"][i]
        # Catalogue mJy/beam vs pixel Jy/beam: same within pixelisation and noise.
        assert image[iy, ix] * 1e3 == pytest.approx(peak[i], rel=0.12), cat["Source_Name"][i]
        checked += 1
    assert checked >= 3


def test_block_size_does_not_change_cutouts(lotss_dr1_dir):
    mosaic = open_mosaic(lotss_dr1_dir / MOSAICS["P205+55"])
    x = np.array([10.0, 200.3, 399.0, 150.7])
    y = np.array([5.2, 199.9, 390.0, -20.0])
    results = [extract_cutouts(mosaic, x, y, block_rows=b) for b in (1, 7, 64, 4096)]
    for images, partial, n_finite in results[1:]:
        assert np.array_equal(images, results[0][0], equal_nan=True)
        assert np.array_equal(partial, results[0][1]) and n_finite == 400 * 400
    assert list(results[0][1]) == [True, False, True, True]


def test_memory_bounded_by_block(tmp_path):
    # 2000 x 2000 float64 = 32 MB on disk; reading in 50-row blocks must stay far below.
    path = tmp_path / "big.fits"
    rng = np.random.default_rng(0)
    header = fits.Header.fromstring(
        "NAXIS   = 2\nCTYPE1  = 'RA---SIN'\nCTYPE2  = 'DEC--SIN'\nCRPIX1  = 1000\nCRPIX2  = 1000\n"
        "CRVAL1  = 180.0\nCRVAL2  = 55.0\nCDELT1  = -0.000416666666666667\n"
        "CDELT2  = 0.000416666666666667\nBMAJ    = 0.001666666666666667\n", sep="\n")
    fits.PrimaryHDU(rng.standard_normal((2000, 2000)), header=header).writeto(path)
    mosaic = open_mosaic(path)
    xy = rng.uniform(0, 2000, size=(2, 200))
    tracemalloc.start()
    images, _, _ = extract_cutouts(mosaic, xy[0], xy[1], block_rows=50)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < images.nbytes + 4 * 50 * 2000 * 8 + 2_000_000
    assert peak < 32e6 / 2


def test_scaled_integer_mosaic(lotss_dr1_dir, tmp_path):
    # BSCALE/BZERO/BLANK would disable astropy's memmap; we scale per block instead.
    with fits.open(lotss_dr1_dir / MOSAICS["P218+55"]) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data.copy()
    bscale = (data.max() - data.min()) / 60000.0
    bzero = float(data.min() + data.max()) / 2.0
    raw = np.round((data - bzero) / bscale).astype(np.int16)
    raw[:3, :3] = -32768
    for key in ("BSCALE", "BZERO", "BLANK"):
        header.remove(key, ignore_missing=True)
    path = tmp_path / "scaled.fits"
    fits.PrimaryHDU(raw, header=header).writeto(path)
    with fits.open(path, mode="update", do_not_scale_image_data=True) as hdul:
        hdul[0].header["BSCALE"] = bscale
        hdul[0].header["BZERO"] = bzero
        hdul[0].header["BLANK"] = -32768
    mosaic = open_mosaic(path)
    expected = fits.getdata(path).astype(float)  # astropy applies BSCALE/BZERO/BLANK
    got = mosaic.read()
    assert np.array_equal(np.isnan(got), np.isnan(expected)) and np.isnan(got[:3, :3]).all()
    assert np.allclose(got[3:], expected[3:], rtol=1e-6, atol=1e-9)  # astropy scales to float32
    assert np.nanmax(np.abs(got[3:] - data[3:])) < bscale


# --- bad input -------------------------------------------------------------------

def _write_catalogue(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_catalogue_missing_column_names_it(tmp_path, lotss_dr1_dir):
    table = Table.read(lotss_dr1_dir / CATALOGUE)[:5]
    table.remove_column("Peak_flux")
    path = tmp_path / "cat.fits"
    table.write(path)
    with pytest.raises(CatalogueError, match=r"cat\.fits.*missing required column\(s\) Peak_flux"):
        assign_sources(path, {"P205+55": lotss_dr1_dir / MOSAICS["P205+55"]}, tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()


def test_catalogue_unreadable(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        read_catalogue(tmp_path / "none.csv")
    bad = tmp_path / "bad.fits"
    bad.write_text("not a table")
    with pytest.raises(InputFileError, match=r"bad\.fits: not a readable"):
        read_catalogue(bad)


def test_duplicate_names_error_or_keep_first(tmp_path, lotss_dr1_dir):
    rows = [dict(Source_Name="ILTJ1", RA=205.05, DEC=54.9, Peak_flux=1.0, Total_flux=1.0),
            dict(Source_Name="ILTJ2", RA=205.06, DEC=54.9, Peak_flux=1.0, Total_flux=1.0),
            dict(Source_Name="ILTJ1", RA=205.07, DEC=54.9, Peak_flux=2.0, Total_flux=2.0)]
    path = _write_catalogue(tmp_path / "dup.csv", rows)
    with pytest.raises(CatalogueError, match=r"dup\.csv: 1 duplicated Source_Name\(s\): ILTJ1"):
        normalise_catalogue(read_catalogue(path), source=path)
    kept = normalise_catalogue(read_catalogue(path), source=path, duplicates="keep_first")
    assert list(kept["Source_Name"]) == ["ILTJ1", "ILTJ2"] and kept["Peak_flux"][0] == 1.0
    assert cli_main(["lotss", "assign", "--catalogue", str(path), "--mosaic", "P205+55",
                     str(lotss_dr1_dir / MOSAICS["P205+55"]), "--out", str(tmp_path / "s.h5")]) == 1
    assert not (tmp_path / "s.h5").exists()


def test_bad_positions_named(tmp_path):
    rows = [dict(Source_Name="ILTJ9", RA=np.nan, DEC=54.9, Peak_flux=1.0, Total_flux=1.0)]
    path = _write_catalogue(tmp_path / "pos.csv", rows)
    with pytest.raises(CatalogueError, match="missing RA/DEC.*ILTJ9"):
        normalise_catalogue(read_catalogue(path), source=path)


def test_sources_off_every_mosaic_counted_and_named(tmp_path, lotss_dr1_dir, caplog):
    rows = [dict(Source_Name="ON", RA=205.0553, DEC=54.8982, Peak_flux=1.0, Total_flux=1.0),
            dict(Source_Name="FAR_AWAY", RA=20.0, DEC=-30.0, Peak_flux=1.0, Total_flux=1.0),
            dict(Source_Name="NEAR_MISS", RA=205.3, DEC=54.9, Peak_flux=1.0, Total_flux=1.0)]
    path = _write_catalogue(tmp_path / "cat.csv", rows)
    with caplog.at_level(logging.WARNING):
        s = assign_sources(path, {"P205+55": lotss_dr1_dir / MOSAICS["P205+55"]}, tmp_path / "s.h5")
    assert s["n_off_mosaic"] == 2 and s["n_per_mosaic"] == {"P205+55": 1}
    assert "FAR_AWAY" in caplog.text and "NEAR_MISS" in caplog.text
    with h5py.File(tmp_path / "s.h5") as h5:
        assert sorted(v.decode() for v in h5["off_mosaic_names"][()]) == ["FAR_AWAY", "NEAR_MISS"]


def test_optical_centre_preferred(tmp_path, lotss_dr1_dir):
    rows = [dict(Source_Name="A", RA=205.0553, DEC=54.8982, optRA=205.06, optDec=54.899,
                 Peak_flux=1.0, Total_flux=1.0, LAS=10.0, LAS_from="Maj"),
            dict(Source_Name="B", RA=205.05, DEC=54.90, optRA=np.nan, optDec=np.nan,
                 Peak_flux=1.0, Total_flux=1.0, LAS=10.0, LAS_from="Maj")]
    path = _write_catalogue(tmp_path / "cat.csv", rows)
    assign_sources(path, {"P205+55": lotss_dr1_dir / MOSAICS["P205+55"]}, tmp_path / "s.h5")
    cut_mosaic(lotss_dr1_dir / MOSAICS["P205+55"], tmp_path / "s.h5", tmp_path / "c.h5", mosaic_id="P205+55")
    c = read_cutouts(tmp_path / "c.h5")
    assert list(c["centre_from"]) == ["optical", "radio"]
    assert c["centre_ra"][0] == pytest.approx(205.06) and c["centre_ra"][1] == pytest.approx(205.05)


def test_most_central_mosaic_wins(tmp_path, lotss_dr1_dir):
    # Two overlapping mosaics: the full piece and its shifted copy; a source near the
    # edge of the copy goes to the mosaic where it sits more centrally.
    src = lotss_dr1_dir / MOSAICS["P205+55"]
    with fits.open(src) as hdul:
        header, data = hdul[0].header.copy(), hdul[0].data
    header["CRPIX1"] += 150
    shifted = tmp_path / "shifted.fits"
    fits.PrimaryHDU(data, header=header).writeto(shifted)
    rows = [dict(Source_Name="S", RA=205.0553, DEC=54.8982, Peak_flux=1.0, Total_flux=1.0)]
    path = _write_catalogue(tmp_path / "cat.csv", rows)
    s = assign_sources(path, {"A": src, "B": shifted}, tmp_path / "s.h5")
    assert s["n_per_mosaic"] == {"A": 1, "B": 0}


@pytest.mark.parametrize("problem", ["missing", "truncated", "not_fits", "no_wcs", "cube"])
def test_bad_mosaic_files_named(problem, tmp_path, lotss_dr1_dir):
    src = lotss_dr1_dir / MOSAICS["P218+55"]
    path = tmp_path / f"{problem}.fits"
    if problem == "truncated":
        path.write_bytes(src.read_bytes()[: 2880 + 50_000])
        match = "truncated FITS file"
    elif problem == "not_fits":
        path.write_text("SIMPLE? no, this is a text file\n" * 200)
        match = "not a readable FITS file"
    elif problem == "no_wcs":
        fits.PrimaryHDU(np.zeros((50, 50), dtype=np.float32)).writeto(path)
        match = "no celestial WCS"
    elif problem == "cube":
        fits.PrimaryHDU(np.zeros((3, 50, 50), dtype=np.float32)).writeto(path)
        match = "non-degenerate extra axes"
    else:
        match = "does not exist"
    with pytest.raises(InputFileError, match=f"{problem}\\.fits: .*{match}"):
        open_mosaic(path)


def test_all_nan_mosaic_is_an_error_and_output_untouched(tmp_path, lotss_dr1_dir):
    src = lotss_dr1_dir / MOSAICS["P218+55"]
    with fits.open(src) as hdul:
        header = hdul[0].header.copy()
    blank = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.full((200, 200), np.nan), header=header).writeto(blank)
    rows = [dict(Source_Name="S", RA=218.5774625, DEC=54.9724, Peak_flux=1.0, Total_flux=1.0)]
    cat = _write_catalogue(tmp_path / "cat.csv", rows)
    assign_sources(cat, {"P218+55": blank}, tmp_path / "s.h5")
    out = tmp_path / "shard.h5"
    with pytest.raises(InputFileError, match=r"blank\.fits: every pixel of mosaic P218\+55 is NaN"):
        cut_mosaic(blank, tmp_path / "s.h5", out, mosaic_id="P218+55")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".shard")] == []
    # The CLI turns it into exit code 1; a good rerun then produces the shard.
    assert cli_main(["lotss", "cutouts", "--mosaic", str(blank), "--mosaic-id", "P218+55",
                     "--sources", str(tmp_path / "s.h5"), "--out", str(out)]) == 1
    shutil.copy(src, blank)
    assert cli_main(["lotss", "cutouts", "--mosaic", str(blank), "--mosaic-id", "P218+55",
                     "--sources", str(tmp_path / "s.h5"), "--out", str(out)]) == 0
    assert read_cutouts(out)["images"].shape == (1, 80, 80)


def test_mosaic_without_sources_gives_empty_shard(tmp_path, lotss_dr1_dir):
    rows = [dict(Source_Name="S", RA=205.0553, DEC=54.8982, Peak_flux=1.0, Total_flux=1.0)]
    cat = _write_catalogue(tmp_path / "cat.csv", rows)
    paths = {mid: lotss_dr1_dir / name for mid, name in MOSAICS.items()}
    assign_sources(cat, paths, tmp_path / "s.h5")
    for mid, path in paths.items():
        cut_mosaic(path, tmp_path / "s.h5", tmp_path / f"{mid}.h5", mosaic_id=mid)
    assert read_cutouts(tmp_path / "P218+55.h5")["images"].shape == (0, 80, 80)
    rc = cli_main(["lotss", "aggregate", "--shards", str(tmp_path / "P205+55.h5"), str(tmp_path / "P218+55.h5"),
                   "--sources", str(tmp_path / "s.h5"), "--out", str(tmp_path / "all.h5")])
    assert rc == 0
    agg = read_cutouts(tmp_path / "all.h5")
    assert list(agg["source_name"]) == ["S"] and agg["attrs"]["n_mosaics"] == 2


def test_aggregate_rejects_missing_or_mismatched_shards(tmp_path, dr1):
    with pytest.raises(InputFileError, match=r"nope\.h5: file does not exist"):
        aggregate_shards([dr1["dir"] / "P205+55.h5", tmp_path / "nope.h5"], tmp_path / "out.h5")
    odd = tmp_path / "odd.h5"
    shutil.copy(dr1["dir"] / "P218+55.h5", odd)
    with h5py.File(odd, "a") as h5:
        h5.attrs["beam_arcsec"] = 20.0
    with pytest.raises(InputFileError, match=r"odd\.h5: beam_arcsec=20.0 differs"):
        aggregate_shards([dr1["dir"] / "P205+55.h5", odd], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_mosaic_in_mjy_per_beam_gives_the_same_cutouts_in_jy(tmp_path, lotss_dr1_dir):
    """BUNIT is read: a copy of a real piece stored in mJy/beam cuts out identically."""
    src = lotss_dr1_dir / MOSAICS["P218+55"]
    with fits.open(src) as hdul:
        data, header = hdul[0].data.astype(np.float64), hdul[0].header.copy()
    header["BUNIT"] = "mJy/beam"
    milli = tmp_path / "milli.fits"
    fits.PrimaryHDU(data * 1000.0, header=header).writeto(milli)
    rows = [dict(Source_Name="S", RA=218.5774625, DEC=54.9724, Peak_flux=1.0, Total_flux=1.0)]
    cat = _write_catalogue(tmp_path / "cat.csv", rows)
    cut = {}
    for name, path in (("jy", src), ("mjy", milli)):
        assign_sources(cat, {"P218+55": path}, tmp_path / f"s_{name}.h5")
        cut_mosaic(path, tmp_path / f"s_{name}.h5", tmp_path / f"{name}.h5", mosaic_id="P218+55")
        cut[name] = read_cutouts(tmp_path / f"{name}.h5")
    np.testing.assert_allclose(cut["mjy"]["images"], cut["jy"]["images"], rtol=1e-6, equal_nan=True)
    assert cut["mjy"]["attrs"]["mosaic_bunit"] == "mJy/beam"
    assert open_mosaic(milli).unit == "mJy/beam"


@pytest.mark.parametrize("bunit", ["K", "Jy/pixel", "JY"])
def test_mosaic_unit_that_is_not_per_beam_is_named(tmp_path, lotss_dr1_dir, bunit):
    with fits.open(lotss_dr1_dir / MOSAICS["P218+55"]) as hdul:
        header = hdul[0].header.copy()
        header["BUNIT"] = bunit
        fits.PrimaryHDU(hdul[0].data, header=header).writeto(tmp_path / "k.fits")
    with pytest.raises(InputFileError, match=rf"k\.fits: BUNIT = '{bunit}' is not a surface brightness per beam"):
        open_mosaic(tmp_path / "k.fits")


def test_resolved_sample_of_real_dr1_rows(tmp_path, lotss_dr1_dir):
    """The LoTSS-DR2 resolved criterion on the real DR1 catalogue: ~8% of rows, as in DR2."""
    paths = {mid: lotss_dr1_dir / name for mid, name in MOSAICS.items()}
    summary = assign_sources(lotss_dr1_dir / CATALOGUE, paths, tmp_path / "s.h5", sample="resolved")
    assert summary["n_catalogue_rows"] == 12093
    assert summary["n_catalogue"] == 943  # resolved rows of the whole catalogue
    with h5py.File(tmp_path / "s.h5") as h5:
        kept = read_table_hdf5(h5["catalogue"])
        assert h5.attrs["sample"] == "resolved"
    # hand-checked: S_I/S_P = 7.7 with DC_Maj 24" (resolved) ... three multi-Gaussian sources
    assert sorted(kept["Source_Name"]) == ["ILTJ133946.43+545753.2", "ILTJ133949.14+545812.5",
                                           "ILTJ134033.75+545434.4", "ILTJ134036.70+545500.1"]
    table = normalise_catalogue(read_catalogue(lotss_dr1_dir / CATALOGUE))
    # each kept source lies on the piece it was given (astropy WCS here, not the library's)
    for row in kept.itertuples():
        with fits.open(paths[row.cutout_mosaic]) as hdul:
            header, shape = hdul[0].header, np.squeeze(hdul[0].data).shape
        x, y = WCS(header).celestial.world_to_pixel_values(row.RA, row.DEC)
        assert -0.5 <= x < shape[1] - 0.5 and -0.5 <= y < shape[0] - 0.5, row.Source_Name
    # the whole catalogue has sources on both pieces: the resolved sample is a choice among them
    per_mosaic = assign_sources(lotss_dr1_dir / CATALOGUE, paths, tmp_path / "all.h5")["n_per_mosaic"]
    assert per_mosaic["P205+55"] > 0 and per_mosaic["P218+55"] > 0
    # every kept row obeys the envelope; compact sources (S_I ~ S_P) are out
    ratio = np.log(table["Total_flux"] / table["Peak_flux"])
    snr = table["Total_flux"] / table["E_Total_flux"]
    assert (ratio > 0.42 + 1.08 / (1 + (snr / 96.57) ** 2.49)).sum() == 943


def test_resolved_criterion_envelope_and_catalogue_column(tmp_path):
    from radiogen.lotss.catalogue import resolved_mask, select_sample

    # at SNR = 96.57 the envelope is 0.42 + 1.08 / 2 = 0.96
    rows = pd.DataFrame({"Source_Name": ["IN", "OUT", "Z"], "Total_flux": [96.57, 96.57, 1.0],
                         "E_Total_flux": [1.0, 1.0, 1.0], "Peak_flux": [96.57 / np.exp(1.0), 96.57 / np.exp(0.9), 1.0],
                         "S_Code": ["M", "S", "Z"]})
    assert list(resolved_mask(rows)) == [True, False, True]  # composite (Z) sources count as resolved
    # the catalogue's own Resolved column wins (DR2 value-added catalogue)
    flagged = rows.assign(Resolved=["False", "True", "False"])
    assert list(select_sample(flagged, sample="resolved")["Source_Name"]) == ["OUT"]
    with pytest.raises(CatalogueError, match=r"cat\.csv: cannot select resolved sources: no Resolved column, "
                                             r"and E_Total_flux missing"):
        resolved_mask(rows.drop(columns="E_Total_flux"), source="cat.csv")
    with pytest.raises(CatalogueError, match=r"1 listed source\(s\) not in the catalogue: TYPO"):
        select_sample(rows, sample="list", names=["IN", "TYPO"])
    listed = tmp_path / "names.txt"
    listed.write_text("# my sources\nIN\nZ  # composite\n")
    from radiogen.lotss.catalogue import read_source_list

    assert list(select_sample(rows, sample="list", names=read_source_list(listed))["Source_Name"]) == ["IN", "Z"]


def test_selection_table_starts_from_the_source_sample():
    from radiogen.lotss.selection import selection_counts

    reasons = np.array(["", "broken", "low_snr", ""], dtype=object)
    table = selection_counts(reasons, snr_min=5, edge_fraction=0.8, n_sources=6, sample="resolved")
    assert list(table["step"])[:2] == ["sources", "cutouts"]
    assert table.loc[0, "description"] == "Catalogue resolved sources" and table.loc[0, "remaining"] == 6
    assert table.loc[1, "removed"] == 2 and table.loc[1, "remaining"] == 4  # two lie on no mosaic
    assert table["remaining"].iloc[-1] == 2


def test_brighter_neighbour_counted_against_the_whole_catalogue(lotss_dr1_dir, tmp_path):
    """Hand-checked on the real DR1 rows: the 0.43 mJy/beam ILTJ143428.48+545728.7 has the
    3.3 mJy/beam ILTJ143426.08+545730.5 21" away inside its cutout.  With only the faint one in
    the sample, the neighbour is still found, because the count runs over the whole catalogue."""
    from radiogen.lotss.selection import run_selection

    paths = {mid: lotss_dr1_dir / name for mid, name in MOSAICS.items()}
    names = tmp_path / "names.txt"
    names.write_text("ILTJ143428.48+545728.7\nILTJ143426.08+545730.5\n")
    only_faint = tmp_path / "faint.txt"
    only_faint.write_text("ILTJ143428.48+545728.7\n")
    for listed, expected in ((names, {"ILTJ143428.48+545728.7": 1, "ILTJ143426.08+545730.5": 0}),
                             (only_faint, {"ILTJ143428.48+545728.7": 1})):
        out = tmp_path / listed.stem
        assign_sources(lotss_dr1_dir / CATALOGUE, paths, out / "sources.h5", sample="list", source_list=listed)
        with h5py.File(out / "sources.h5") as h5:
            table = read_table_hdf5(h5["catalogue"]).set_index("Source_Name")
        assert table["n_brighter_neighbours"].to_dict() == expected
        shards = []
        for mid, path in paths.items():
            cut_mosaic(path, out / "sources.h5", out / f"{mid}.h5", mosaic_id=mid, block_rows=64)
            shards.append(out / f"{mid}.h5")
        aggregate_shards(shards, out / "cutouts.h5", sources_path=out / "sources.h5")
        run_selection(out / "cutouts.h5", table_path=out / "t.csv", per_image_path=out / "p.csv",
                      selected_path=out / "s.h5")
        per_image = pd.read_csv(out / "p.csv", keep_default_na=False).set_index("source_name")
        assert bool(per_image.loc["ILTJ143428.48+545728.7", "brighter_neighbour"])


def test_central_source_measured_and_optional_cut(dr1, tmp_path):
    """Hand-checked on the real DR1 pixels: ILTJ143428.48+545728.7 (0.43 mJy/beam) passes the
    paper's cuts, but its brightest pixel is the 3.3 mJy/beam ILTJ143426.08+545730.5, 21" away."""
    from radiogen.lotss.selection import SelectionSettings, run_selection

    out = tmp_path / "sel"
    kwargs = dict(table_path=out / "t.csv", per_image_path=out / "p.csv", selected_path=out / "s.h5")
    table = run_selection(dr1["dir"] / "cutouts.h5", **kwargs)
    per_image = pd.read_csv(out / "p.csv", keep_default_na=False).set_index("source_name")
    faint, bright = per_image.loc["ILTJ143428.48+545728.7"], per_image.loc["ILTJ143426.08+545730.5"]
    assert faint["kept"] and 12 < faint["max_offset_px"] < 15 and faint["brighter_neighbour"]
    assert bright["kept"] and bright["max_offset_px"] < 1.5 and not bright["brighter_neighbour"]
    rows = table.set_index("step")
    off = per_image["kept"] & (per_image["max_offset_px"] > 10)
    assert rows.loc["count_max_off_centre", "remaining"] == off.sum() >= 2
    assert rows.loc["count_brighter_neighbour", "remaining"] >= 2
    assert "off_centre" not in rows.index  # no cut by default, as in the paper
    # the optional cut has its own row and removes exactly the off-centre images
    cut = run_selection(dr1["dir"] / "cutouts.h5", table_path=out / "t2.csv", per_image_path=out / "p2.csv",
                        selected_path=out / "s2.h5", settings=SelectionSettings(central_source=10))
    cut_rows = cut.set_index("step")
    assert cut_rows.loc["off_centre", "removed"] == off.sum()
    assert cut_rows.loc["selected", "remaining"] == rows.loc["selected", "remaining"] - off.sum()
