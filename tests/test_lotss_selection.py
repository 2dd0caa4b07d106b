"""Selection cuts and S/N_sigma on real LoTSS DR1 pixels (../shared/data/lotss_dr1)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from radiogen.errors import ConfigError, InputFileError
from radiogen.io import read_table_hdf5, write_table_hdf5
from radiogen.lotss.selection import (
    SelectionSettings,
    image_statistics,
    read_cutout_metadata,
    removal_reasons,
    run_selection,
    selection_counts,
)
from radiogen.lotss.snr import sigma_clipped_median_std, snr_sigma_batch, snr_sigma_reference

MOSAICS = ("P205+55_400px.fits", "P218+55_200px.fits")
SIZE = 80


def real_cutouts(lotss_dr1_dir: Path, *, n_random: int = 0, seed: int = 0) -> dict:
    """80x80 cutouts of the real DR1 pieces around every DR1 catalogue source on them.

    Cutouts use astropy's Cutout2D (mode "partial", NaN outside the piece) like
    the cutout step; ``n_random`` extra fully-inside cutouts at random positions
    are added (named RANDOM_<k>).  Returns the cutouts.h5 fields.
    """
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.table import Table
    from astropy.wcs import WCS

    catalogue = Table.read(lotss_dr1_dir / "LoTSS_DR1_srl_P205+55_P218+55.fits")
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("images", "source_name", "centre_ra", "centre_dec", "mosaic_id",
                           "flag_partial", "peak_mjy", "fully_inside")}
    rows = []
    for mosaic in MOSAICS:
        with fits.open(lotss_dr1_dir / mosaic) as hdul:
            data = hdul[0].data.astype(np.float32)
            wcs = WCS(hdul[0].header).celestial
        x, y = wcs.world_to_pixel(SkyCoord(catalogue["RA"], catalogue["DEC"], unit="deg"))
        ny, nx = data.shape
        on = (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        centres = [(float(r["RA"]), float(r["DEC"]), str(r["Source_Name"]), float(r["Peak_flux"]), r)
                   for r in catalogue[on]]
        for k in range(n_random):
            px, py = rng.uniform(SIZE / 2, nx - SIZE / 2 - 1), rng.uniform(SIZE / 2, ny - SIZE / 2 - 1)
            sky = wcs.pixel_to_world(px, py)
            centres.append((sky.ra.deg, sky.dec.deg, f"RANDOM_{mosaic[:7]}_{k}", np.nan, None))
        for ra, dec, name, peak, row in centres:
            cut = Cutout2D(data, SkyCoord(ra, dec, unit="deg"), SIZE, wcs=wcs, mode="partial",
                           fill_value=np.nan)
            # In "partial" mode bbox_cutout is the part of the cutout on the piece.
            inside = tuple(map(tuple, cut.bbox_cutout)) == ((0, SIZE - 1), (0, SIZE - 1))
            out["images"].append(cut.data.astype(np.float32))
            out["source_name"].append(name)
            out["centre_ra"].append(ra)
            out["centre_dec"].append(dec)
            out["mosaic_id"].append(mosaic[:7])
            out["flag_partial"].append(not inside)
            out["peak_mjy"].append(peak)
            out["fully_inside"].append(inside)
            rows.append({
                "Source_Name": name, "RA": ra, "DEC": dec,
                "Peak_flux": peak, "Total_flux": float(row["Total_flux"]) if row is not None else np.nan,
                "LAS": float(row["DC_Maj"]) if row is not None else np.nan,
                "Mosaic_ID": mosaic[:7],
            })
    result = {k: np.array(v) for k, v in out.items()}
    result["images"] = result["images"].astype(np.float32)
    result["catalogue"] = pd.DataFrame(rows)
    return result


def write_cutouts_h5(path: Path, fields: dict) -> Path:
    """Write the aggregate cutouts.h5 layout of the cutout step."""
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=fields["images"].astype(np.float32))
        for name in ("source_name", "mosaic_id"):
            h5.create_dataset(name, data=np.asarray(fields[name], dtype=object), dtype=text)
        h5.create_dataset("centre_from", data=np.array(["RA/DEC"] * len(fields["images"]), object), dtype=text)
        h5.create_dataset("centre_ra", data=np.asarray(fields["centre_ra"], float))
        h5.create_dataset("centre_dec", data=np.asarray(fields["centre_dec"], float))
        h5.create_dataset("flag_nan", data=np.isnan(fields["images"]).any(axis=(1, 2)))
        h5.create_dataset("flag_partial", data=np.asarray(fields["flag_partial"], bool))
        write_table_hdf5(h5, "catalogue", fields["catalogue"])
        h5.attrs.update(pixel_scale_arcsec=1.5, beam_arcsec=6.0, frequency_hz=144e6)
    return path


@pytest.fixture(scope="module")
def cutouts(lotss_dr1_dir):
    return real_cutouts(lotss_dr1_dir, n_random=40)


def _astropy_stats(image):
    from astropy.stats import sigma_clipped_stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, median, std = sigma_clipped_stats(image)
    return median, std


def test_vectorised_sigma_clipping_matches_astropy(cutouts):
    images = cutouts["images"][cutouts["fully_inside"]].astype(np.float64)
    assert len(images) >= 60
    # Raw Jy/beam and min-max scaled images, as S/N_sigma uses the latter.
    for batch in (images, (images - images.min(axis=(1, 2), keepdims=True))
                  / np.ptp(images, axis=(1, 2), keepdims=True)):
        median, std = sigma_clipped_median_std(batch, sigma=3.0, maxiters=5)
        expected = np.array([_astropy_stats(im) for im in batch])
        scale = np.abs(batch).max(axis=(1, 2))
        assert np.all(np.abs(median - expected[:, 0]) <= 1e-6 * scale)
        assert np.all(np.abs(std - expected[:, 1]) <= 1e-6 * scale)


def test_snr_sigma_matches_astropy_reference_on_real_cutouts(cutouts):
    images = cutouts["images"]  # includes partial cutouts with NaN borders
    result = snr_sigma_batch(images)
    for k, image in enumerate(images):
        snr, tau, median, std = snr_sigma_reference(image)
        assert result.tau[k] == tau
        assert abs(result.snr_sigma[k] - snr) <= 1e-6 * abs(snr), cutouts["source_name"][k]
        assert abs(result.median[k] - median) <= 1e-6
        assert abs(result.std[k] - std) <= 1e-6


def test_snr_sigma_separates_bright_and_faint_real_sources(cutouts):
    result = snr_sigma_batch(cutouts["images"])
    peak = cutouts["peak_mjy"]
    inside = cutouts["fully_inside"]
    bright = inside & (peak >= 1.8)
    # Faint sources with no brighter neighbour in the cutout (max < 1 mJy/beam):
    # S/N_sigma measures the brightest emission in the image, not the centre.
    no_neighbour = np.nanmax(cutouts["images"], axis=(1, 2)) < 1e-3
    faint = inside & (peak < 0.4) & no_neighbour
    assert bright.sum() >= 3 and faint.sum() >= 5
    # >= 18 sigma point sources (rms ~0.1 mJy/beam) pass the paper's cut of 5,
    # ~3 sigma ones look like noise.
    assert np.all(result.snr_sigma[bright] >= 5)
    assert np.all(result.snr_sigma[faint] < 4)
    assert np.all(result.snr_sigma[np.isfinite(result.snr_sigma)] > 1)
    # tau only ever decreases from 5 in steps of 0.5.
    assert np.all((5.0 - result.tau[np.isfinite(result.tau)]) % 0.5 == 0)


def test_snr_tau_is_lowered_until_a_pixel_qualifies():
    # Uniform noise: max - median = 0.5 of the range, std ~0.29, so tau = 5 gives no
    # source pixel and tau must come down to < 0.5/0.29 ~ 1.7.
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(4, 40, 40))
    result = snr_sigma_batch(images)
    for k in range(4):
        snr, tau, _, _ = snr_sigma_reference(images[k])
        assert result.tau[k] == tau < 2.0
        assert result.snr_sigma[k] == pytest.approx(snr, rel=1e-9)
        assert result.n_source[k] >= 1


def _cut_test_batch(cutouts):
    """Real cutouts plus made-up failures of each cut, with the expected removal step."""
    images, names, partial, expected = [], [], [], []
    inside = cutouts["fully_inside"]
    bright = np.nonzero(inside & (cutouts["peak_mjy"] >= 1.8))[0]
    no_neighbour = np.nanmax(cutouts["images"], axis=(1, 2)) < 1e-3
    faint = np.nonzero(inside & (cutouts["peak_mjy"] < 0.4) & no_neighbour)[0]
    good = cutouts["images"][bright[0]]

    def add(image, name, reason, flag=False):
        images.append(np.asarray(image, np.float32))
        names.append(name)
        partial.append(flag)
        expected.append(reason)

    for k in bright:
        add(cutouts["images"][k], cutouts["source_name"][k], "")
    for k in faint[:4]:
        add(cutouts["images"][k], cutouts["source_name"][k], "low_snr")
    add(np.full((SIZE, SIZE), np.nan), "ALL_NAN", "broken")
    add(np.full((SIZE, SIZE), 0.003), "CONSTANT", "broken")
    with_inf = good.copy()
    with_inf[:] = np.inf
    add(with_inf, "ALL_INF", "broken")
    # The bright source moved to the border: the source is cropped by the cutout.
    edge = np.roll(good, (0, SIZE // 2 - 1), axis=(0, 1))
    add(edge, "BRIGHT_EDGE", "edge")
    # Blanked (NaN) pixels make a cutout broken (paper Table 1, first row; the
    # authors' code drops every cutout holding NaN), however few.
    blank = good.copy()
    blank[:12, :15] = np.nan
    add(blank, "NAN_PATCH", "broken")
    one = good.copy()
    one[70, 5] = np.nan
    add(one, "ONE_NAN", "broken")
    add(good, "PARTIAL_FLAG", "broken", flag=True)
    # Broken comes first: a cropped source with blanking counts as broken, not edge.
    both = edge.copy()
    both[:5, :5] = np.nan
    add(both, "EDGE_AND_NAN", "broken")
    # Incomplete coverage: a flat region at the image minimum (zero-filled coverage gap).
    plateau = good.copy()
    plateau[-10:, -20:] = np.nanmin(good)
    add(plateau, "MIN_PLATEAU", "incomplete")
    return np.array(images), np.array(names, object), np.array(partial), np.array(expected, object)


def _write_batch(path, images, names, partial):
    n = len(images)
    fields = {
        "images": images, "source_name": names, "mosaic_id": np.array(["P205+55"] * n, object),
        "centre_ra": np.linspace(205.0, 205.1, n), "centre_dec": np.full(n, 55.0),
        "flag_partial": partial,
        "catalogue": pd.DataFrame({"Source_Name": names, "Peak_flux": np.arange(n, dtype=float)}),
    }
    return write_cutouts_h5(path, fields)


def test_each_cut_removes_what_it_should(cutouts, tmp_path):
    images, names, partial, expected = _cut_test_batch(cutouts)
    settings = SelectionSettings()
    stats = image_statistics(images, settings=settings, flag_partial=partial)
    reasons = removal_reasons(stats, settings=settings)
    assert dict(zip(names, reasons)) == dict(zip(names, expected))
    assert stats.loc[names == "BRIGHT_EDGE", "edge_ratio"].item() > 0.8
    assert stats.loc[names == "NAN_PATCH", "n_nan"].item() == 180
    assert stats.loc[names == "NAN_PATCH", "n_min"].item() == 181
    assert stats.loc[names == "MIN_PLATEAU", "n_min"].item() >= 200

    table = selection_counts(reasons, snr_min=5, edge_fraction=0.8)
    assert list(table["step"]) == ["cutouts", "broken", "low_snr", "edge", "incomplete", "selected"]
    counts = dict(zip(table["step"], table["removed"]))
    assert counts == {"cutouts": 0, "broken": 7, "low_snr": 4, "edge": 1, "incomplete": 1, "selected": 0}
    remaining = table["remaining"].to_numpy()
    assert remaining[0] == len(images)
    assert np.all(remaining[1:5] == remaining[:4] - table["removed"].to_numpy()[1:5])
    assert remaining[-1] == (expected == "").sum()


def test_run_selection_writes_consistent_outputs(cutouts, tmp_path):
    images, names, partial, expected = _cut_test_batch(cutouts)
    src = _write_batch(tmp_path / "cutouts.h5", images, names, partial)
    out = tmp_path / "selection"
    settings = SelectionSettings(chunk_size=5, figure_columns=4, figure_rows=2)
    table = run_selection(
        src, table_path=out / "selection_table.csv", per_image_path=out / "per_image.csv",
        selected_path=out / "selected.h5", figure_path=out / "snr.png",
        examples_path=out / "examples.png", settings=settings, threads=2, seed=1,
    )
    on_disk = pd.read_csv(out / "selection_table.csv")
    assert on_disk["removed"].tolist() == table["removed"].tolist()
    per_image = pd.read_csv(out / "per_image.csv", keep_default_na=False)
    assert len(per_image) == len(images)
    assert per_image["source_name"].tolist() == list(names)
    assert per_image["removed_at"].tolist() == list(expected)
    kept = expected == ""
    with h5py.File(out / "selected.h5") as h5:
        np.testing.assert_array_equal(h5["images"][()], images[kept])
        assert list(h5["source_name"].asstr()[()]) == list(names[kept])
        assert h5.attrs["pixel_scale_arcsec"] == 1.5
        np.testing.assert_allclose(h5["snr_sigma"][()], per_image["snr_sigma"][kept].astype(float))
        catalogue = read_table_hdf5(h5["catalogue"])
        assert catalogue["Source_Name"].tolist() == list(names[kept])
        assert json.loads(h5.attrs["selection_settings"])["snr_min"] == 5.0
    for png in ("snr.png", "examples.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One worker gives the same per-image table as two.
    run_selection(
        src, table_path=out / "t1.csv", per_image_path=out / "p1.csv",
        selected_path=out / "s1.h5", settings=settings, threads=1,
    )
    pd.testing.assert_frame_equal(pd.read_csv(out / "p1.csv", keep_default_na=False), per_image)


def test_real_cutouts_file_selection(cutouts, tmp_path):
    src = write_cutouts_h5(tmp_path / "cutouts.h5", cutouts)
    out = tmp_path / "sel"
    table = run_selection(
        src, table_path=out / "t.csv", per_image_path=out / "p.csv", selected_path=out / "s.h5",
    )
    per_image = pd.read_csv(out / "p.csv", keep_default_na=False)
    kept = per_image["kept"].to_numpy(bool)
    # Partial cutouts (NaN outside the 400/200 px pieces) never survive.
    assert not np.any(kept & cutouts["flag_partial"])
    assert kept.sum() == table["remaining"].iloc[-1] >= 3
    assert np.all(per_image.loc[kept, "snr_sigma"] >= 5)
    assert np.all(per_image.loc[kept, "edge_ratio"] <= 0.8)


@pytest.mark.parametrize("damage, message", [
    ("missing", "does not exist"),
    ("no_images", "missing required dataset(s) images"),
    ("flat_images", "/images must have shape (N, H, W)"),
    ("short_names", "/source_name has shape"),
    ("not_hdf5", "not a readable HDF5 file"),
])
def test_bad_cutout_files_give_clear_errors(tmp_path, damage, message):
    path = tmp_path / "cutouts.h5"
    if damage == "not_hdf5":
        path.write_text("SIMPLE = T\n")
    elif damage != "missing":
        with h5py.File(path, "w") as h5:
            if damage != "no_images":
                shape = (4, 6400) if damage == "flat_images" else (4, 80, 80)
                h5.create_dataset("images", data=np.zeros(shape, np.float32))
            n = 3 if damage == "short_names" else 4
            h5.create_dataset("source_name", data=np.array(["a"] * n, object),
                              dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(InputFileError) as err:
        read_cutout_metadata(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    missing = tmp_path / "nowhere" / "cutouts.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "radiogen.cli", "lotss", "select", "--cutouts", str(missing),
         "--table", str(tmp_path / "t.csv"), "--per-image", str(tmp_path / "p.csv"),
         "--selected", str(tmp_path / "s.h5")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert str(missing) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.csv").exists()


def test_settings_match_schema_defaults_and_reject_bad_keys(repo_root):
    schema = yaml.safe_load((repo_root / "workflow/schemas/lotss-selection.schema.yaml").read_text())
    defaults = {k: v["default"] for k, v in schema["properties"].items()}
    assert defaults == SelectionSettings().__dict__
    assert SelectionSettings.from_mapping({"snr_min": 3}).snr_min == 3.0
    with pytest.raises(ConfigError, match="snr_mn"):
        SelectionSettings.from_mapping({"snr_mn": 3}, source="lotss.selection")
    with pytest.raises(ConfigError, match="edge_fraction"):
        SelectionSettings.from_mapping({"edge_fraction": 1.5})
    with pytest.raises(ConfigError, match="clip_maxiters"):
        SelectionSettings.from_mapping({"clip_maxiters": 2.5})


def test_workflow_plans_selection_and_preprocess(repo_root, tmp_path):
    """Dry run: the training set target resolves to select_lotss -> preprocess_lotss."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--config",
         f"results={tmp_path}", "--", str(tmp_path / "lotss/classical/training_set.h5")],
        cwd=repo_root, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "select_lotss" in out and "preprocess_lotss" in out
