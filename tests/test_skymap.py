"""Simulated survey maps: catalogue, tiles, placement, truth and PyBDSF recovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.io import fits
from scipy import ndimage

from radiogen.cli import main as cli_main
from radiogen.config import fill_defaults
from radiogen.errors import CatalogueError, InputFileError
from radiogen.io import file_digest
from radiogen.simulate import FWHM_PER_SIGMA
from radiogen.skymap import assemble, catalogue, stamps, validate
from radiogen.skymap.geometry import beam_area_px, map_header, n_tiles, tile_index, wcs_of
from radiogen.skymap.settings import MapSettings, settings_json
from tiny_models import save_tiny_model

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "skymap.schema.yaml"
#: Peak-flux normalisation (log, lambda 0) and training histogram of a model, as a model file
#: holds them: z in [-2.5, 2.5] is 0.32 mJy/beam to 0.32 Jy/beam.
META = {"dataset": "lotss",
        "normalisation": {"boxcox_lambda": 0.0, "boxcox_mean": float(np.log(0.01)), "boxcox_std": 1.38},
        "context_histogram": {"edges": np.linspace(-2.5, 2.5, 101), "counts": np.ones(100)}}
SIGMA_BEAM_PX = 6.0 / FWHM_PER_SIGMA / 1.5


def _settings(tmp_path=None, **overrides) -> MapSettings:
    # the model mode (every source generated) unless a test asks for a population; populations: test_population.py
    block = fill_defaults({"sources": "model", **overrides}, SCHEMA)
    return MapSettings.from_mapping(block)


def _header(size=400, name="test"):
    return map_header(size_px=size, name=name, centre_ra_deg=180.0, centre_dec_deg=55.0)


def _gaussian_stamp(peak_jy, size=80, sigma=SIGMA_BEAM_PX):
    gy, gx = np.mgrid[:size, :size]
    return (peak_jy * np.exp(-((gx - size // 2) ** 2 + (gy - size // 2) ** 2) / (2 * sigma**2))
            ).astype(np.float32)


def _write_catalogue(path, rows):
    pd.DataFrame(rows, columns=["Source_Name", "RA", "DEC", "Peak_flux"]).to_csv(path, index=False)
    return path


def _world(header, x, y):
    ra, dec = wcs_of(header).pixel_to_world_values(x, y)
    return float(ra), float(dec)


def test_background_level_is_exact_for_noise_with_negatives_set_to_zero():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(200_000) * 2.0
    level, rms = stamps.background_level(np.maximum(noise, 0.0))
    assert level == pytest.approx(0.0, abs=0.02)
    assert rms == pytest.approx(2.0, rel=0.02)
    level, rms = stamps.background_level(noise + 5.0)
    assert (level, rms) == pytest.approx((5.0, 2.0), rel=0.02)


def test_extract_source_keeps_the_central_source_and_drops_a_neighbour():
    rng = np.random.default_rng(1)
    image = np.maximum(rng.standard_normal((80, 80)) * 0.01, 0.0)
    image += _gaussian_stamp(1.0)  # central source
    gy, gx = np.mgrid[:80, :80]
    image += 0.5 * np.exp(-((gx - 72) ** 2 + (gy - 8) ** 2) / (2 * 2.0**2))  # neighbour near a corner
    stamp, n_islands = stamps.extract_source(image, 0.02, _settings())
    assert n_islands == 1
    assert stamp.max() == pytest.approx(0.02, rel=1e-6)
    assert stamp[40, 40] == stamp.max()
    assert stamp[8, 72] == 0.0 and stamp[0, 0] == 0.0
    empty, n_empty = stamps.extract_source(np.maximum(rng.standard_normal((80, 80)), 0) * 0.01, 0.02,
                                           _settings(peak_threshold_sigma=8.0))
    assert n_empty == 0 and not empty.any()


def test_tile_index_is_row_major_and_each_pixel_in_one_tile():
    ix, iy = np.meshgrid(np.arange(400), np.arange(400))
    tiles = tile_index(ix, iy, size_px=400, tile_px=150)
    assert n_tiles(400, 150) == 9
    assert set(np.unique(tiles)) == set(range(9))
    assert tiles[0, 149] == 0 and tiles[0, 150] == 1 and tiles[150, 0] == 3 and tiles[399, 399] == 8


def test_catalogue_drops_positions_off_the_map_and_clips_fluxes_out_of_range(tmp_path, caplog):
    header = _header()
    low, high = catalogue.training_peak_range_mjy(META)
    rows = [("A", *_world(header, 100, 100), 5.0),
            ("B", *_world(header, 450, 100), 5.0),      # off the map
            ("C", *_world(header, 300, 300), high * 10)]  # above the training range
    path = _write_catalogue(tmp_path / "cat.csv", rows)
    table = catalogue.input_catalogue(_settings(catalogue=str(path)), META, header, seed=0)
    assert list(table["Source_Name"]) == ["A", "C"]
    assert list(table["Peak_flux_clipped"]) == [False, True]
    assert table["Peak_flux"].iloc[1] == pytest.approx(high)
    assert "1 of 3 source(s) lie off" in caplog.text and "1 of 2 peak flux(es) outside" in caplog.text
    with pytest.raises(CatalogueError, match="off the 400x400 px map"):
        catalogue.input_catalogue(_settings(catalogue=str(path), outside="error"), META, header, seed=0)
    with pytest.raises(CatalogueError, match="outside the model's training range"):
        catalogue.input_catalogue(_settings(catalogue=str(path), out_of_range="error"), META, header, seed=0)


@pytest.mark.parametrize("rows, message", [
    ([{"RA": 180.0, "DEC": 55.0}], "missing column"),
    ([{"RA": 180.0, "DEC": "x", "Peak_flux": 1.0}], "non-numeric or NaN"),
    ([{"RA": 180.0, "DEC": 55.0, "Peak_flux": -1.0}], "must be > 0"),
])
def test_bad_user_catalogue_is_refused_naming_the_file(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(CatalogueError, match=f"bad.csv: .*{message}"):
        catalogue.read_user_catalogue(path)


def test_drawn_catalogue_is_seeded_and_has_the_requested_density():
    header = _header(size=2400)  # 1 deg
    settings = _settings(source_density_deg2=300.0)
    first = catalogue.input_catalogue(settings, META, header, seed=7)
    again = catalogue.input_catalogue(settings, META, header, seed=7)
    pd.testing.assert_frame_equal(first, again)
    assert abs(len(first) - 300) < 4 * np.sqrt(300)
    low, high = catalogue.training_peak_range_mjy(META)
    assert first["Peak_flux"].between(low, high).all() and not first["Peak_flux_clipped"].any()
    assert len(catalogue.input_catalogue(settings, META, header, seed=8)) != len(first) or not np.allclose(
        catalogue.input_catalogue(settings, META, header, seed=8)["RA"], first["RA"])


def _known_map(tmp_path, *, noise_rms_ujy=80.0, tile_px=200):
    """Three beam-sized sources, one on a tile border; tiles written from known stamps."""
    header = _header()
    (tmp_path / "h.txt").write_text("")
    header.totextfile(str(tmp_path / "h.txt"), overwrite=True)
    settings = _settings(noise_rms_ujy=noise_rms_ujy, tile_px=tile_px, catalogue=str(tmp_path / "in.csv"))
    positions = [(80, 90, 20.0), (200, 260, 8.0), (320, 150, 3.0)]  # x=200 lies on the 0|1 tile border
    _write_catalogue(tmp_path / "in.csv", [(f"S{k}", *_world(header, x, y), peak)
                                          for k, (x, y, peak) in enumerate(positions)])
    table = catalogue.input_catalogue(settings, META, header, seed=0)
    catalogue.write_sources(table, tmp_path / "sources.csv")
    digest = file_digest(tmp_path / "sources.csv")
    tiles = []
    for tile in range(n_tiles(400, tile_px)):
        rows = table[table["tile"] == tile]
        path = tmp_path / f"tile{tile}.h5"
        stamps.write_tile(path, stamps=np.stack([_gaussian_stamp(p * 1e-3) for p in rows["Peak_flux"]])
                          if len(rows) else np.zeros((0, 80, 80)),
                          index=rows["index"].to_numpy(), n_islands=np.ones(len(rows), int),
                          attrs={"tile": tile, "catalogue_sha256": digest, "model_id": "known"})
        tiles.append(path)
    return header, settings, table, tiles, positions


def test_three_known_sources_are_placed_once_and_recovered_by_pybdsf(tmp_path):
    header, settings, table, tiles, positions = _known_map(tmp_path)
    assert sorted(table["tile"]) == [0, 1, 3]
    truth = assemble.assemble_map(tmp_path / "sources.csv", tmp_path / "h.txt", tiles, settings=settings,
                                  seed=3, name="test", map_path=tmp_path / "map.fits",
                                  sky_model_path=tmp_path / "sky.fits", truth_path=tmp_path / "truth.csv")
    sky = fits.getdata(tmp_path / "sky.fits")
    observed = fits.getdata(tmp_path / "map.fits")
    # each source once: the sky model holds exactly the three stamps' flux
    expected_sum = sum(_gaussian_stamp(p * 1e-3).sum() for *_xy, p in positions)
    assert sky.sum() == pytest.approx(expected_sum, rel=1e-5)
    for x, y, peak in positions:
        assert sky[y, x] == pytest.approx(peak * 1e-3, rel=1e-5)
    noise = (observed - sky)[sky < 1e-9]
    assert noise.std() == pytest.approx(80e-6, rel=0.05)
    # the truth catalogue describes the placed pixels
    assert list(truth["Source_Name"]) == ["S0", "S1", "S2"]
    beam = beam_area_px(6.0, 1.5)
    for row, (x, y, peak) in zip(truth.itertuples(), positions):
        assert row.Peak_flux == pytest.approx(peak, rel=1e-5)
        assert row.Total_flux == pytest.approx(_gaussian_stamp(peak * 1e-3).sum() / beam * 1e3, rel=1e-5)
        assert (row.RA, row.DEC) == pytest.approx(_world(header, x, y), abs=1e-6)
    header_out = fits.getheader(tmp_path / "map.fits")
    assert header_out["BUNIT"] == "JY/BEAM" and header_out["CTYPE1"] == "RA---SIN"
    assert header_out["BMAJ"] == pytest.approx(6.0 / 3600) and header_out["RESTFRQ"] > 1e8

    recovered = validate.find_sources(tmp_path / "map.fits", tmp_path / "rec.csv", thresh_isl=4, thresh_pix=5)
    footprint = fits.getdata(tmp_path / "sky.fits", extname="FOOTPRINT")
    assert set(np.unique(footprint)) == {0, 1, 2, 3}
    for row, (x, y, _peak) in enumerate(positions):
        assert footprint[y, x] == row + 1
    rows = validate.footprint_rows(footprint, header, recovered["RA"], recovered["DEC"], grow_px=2.0)
    truth, recovered = validate.match_catalogues(truth, recovered, radius_arcsec=6.0, footprint_row=rows)
    assert len(recovered) == 3 and sorted(recovered["truth_row"]) == [0, 1, 2]
    assert (truth["n_matches"] == 1).all()
    offsets = np.hypot(truth["dRA"], truth["dDEC"])
    assert (offsets < 1.0).all(), offsets  # arcsec; the beam is 6"
    pull = (truth["Recovered_flux"] - truth["Total_flux"]) / recovered.set_index("truth_row")["E_Total_flux"]
    assert (np.abs(pull) < 4).all(), pull
    table = validate.summary_table(truth, recovered, n_input=3, rms_mjy=0.08,
                                   beam=(6.0, 6.0, 0.0)).set_index("measure")
    assert table.loc["completeness", "value"] == 1.0 and table.loc["reliability", "value"] == 1.0


def test_assemble_refuses_tiles_that_do_not_belong_together(tmp_path):
    header, settings, table, tiles, _ = _known_map(tmp_path)
    kwargs = dict(settings=settings, seed=0, name="t", map_path=tmp_path / "m.fits",
                  sky_model_path=tmp_path / "s.fits", truth_path=tmp_path / "t.csv")
    run = lambda paths: assemble.assemble_map(tmp_path / "sources.csv", tmp_path / "h.txt", paths, **kwargs)
    with pytest.raises(InputFileError, match=r"tiles \[2\] of 4 are missing"):
        run([tiles[0], tiles[1], tiles[3]])
    with pytest.raises(InputFileError, match="given twice"):
        run(tiles + [tiles[0]])
    # a tile made from another catalogue (a rerun of the sources step) is refused
    other = tmp_path / "other.h5"
    data = stamps.read_tile(tiles[2])
    stamps.write_tile(other, stamps=data["stamps"], index=data["index"], n_islands=data["n_islands"],
                      attrs={**data["attrs"], "catalogue_sha256": "0" * 64})
    with pytest.raises(InputFileError, match="another source catalogue"):
        run([tiles[0], tiles[1], other, tiles[3]])
    # a tile holding a source that the catalogue puts elsewhere (a seam placed twice)
    wrong = tmp_path / "wrong.h5"
    data = stamps.read_tile(tiles[0])
    stamps.write_tile(wrong, stamps=np.concatenate([data["stamps"], data["stamps"]]),
                      index=np.array([0, 1]), n_islands=np.array([1, 1]), attrs=data["attrs"])
    with pytest.raises(InputFileError, match="tile 0 holds sources"):
        run([wrong] + tiles[1:])
    assert not (tmp_path / "t.csv").exists()


def test_rms_map_scales_the_noise_and_is_checked(tmp_path):
    header, _, table, tiles, _ = _known_map(tmp_path)
    rms = np.full((400, 400), 1e-4, dtype=np.float32)
    rms[:, 200:] = 4e-4
    fits.PrimaryHDU(rms * 1e3, header=fits.Header({"BUNIT": "mJy/beam"})).writeto(tmp_path / "rms.fits")
    settings = _settings(catalogue=str(tmp_path / "in.csv"), tile_px=200, rms_map=str(tmp_path / "rms.fits"))
    assemble.assemble_map(tmp_path / "sources.csv", tmp_path / "h.txt", tiles, settings=settings, seed=0,
                          name="t", map_path=tmp_path / "m.fits", sky_model_path=tmp_path / "s.fits",
                          truth_path=tmp_path / "t.csv")
    noise = fits.getdata(tmp_path / "m.fits") - fits.getdata(tmp_path / "s.fits")
    left, right = noise[:, 20:180].std(), noise[:, 220:380].std()
    assert right / left == pytest.approx(4.0, rel=0.1)
    fits.PrimaryHDU(rms[:100]).writeto(tmp_path / "small.fits")
    with pytest.raises(InputFileError, match="small.fits: rms map has shape"):
        assemble.read_rms_map(tmp_path / "small.fits", (400, 400))


def test_header_template_takes_a_real_dr2_header(shared_data):
    template = shared_data / "lotss_dr1" / "dr2_headers" / "P000+23-mosaic-blanked.hdr"
    header = map_header(size_px=300, name="t", centre_ra_deg=0, centre_dec_deg=0, template=template)
    assert header["NAXIS1"] == 300 and header["CRPIX1"] == 150.5
    assert header["CRVAL2"] == pytest.approx(23.3953) and header["CTYPE1"] == "RA---SIN"
    with pytest.raises(InputFileError, match="arcsec/px, but the model's images have 1.8"):
        map_header(size_px=300, name="t", centre_ra_deg=0, centre_dec_deg=0, template=template,
                   pixel_scale_arcsec=1.8)


def test_header_template_with_another_beam_is_refused_naming_both(shared_data, tmp_path):
    template = shared_data / "lotss_dr1" / "dr2_headers" / "P000+23-mosaic-blanked.hdr"
    header = fits.Header.fromtextfile(str(template))
    header["BMAJ"], header["BMIN"] = 9.0 / 3600.0, 7.5 / 3600.0
    other = tmp_path / "wide_beam.hdr"
    header.totextfile(str(other))
    with pytest.raises(InputFileError, match=r'wide_beam.hdr: header template beam is BMAJ x BMIN = 9" x 7.5", '
                                             r'but the model\'s images have a 6" x 6" beam'):
        map_header(size_px=300, name="t", centre_ra_deg=0, centre_dec_deg=0, template=other)
    # the real 6" DR2 template is refused by a model of another beam
    with pytest.raises(InputFileError, match=r'P000\+23-mosaic-blanked.hdr: .* = 6" x 6", but the model\'s images '
                                             r'have a 4.5" x 4.5" beam'):
        map_header(size_px=300, name="t", centre_ra_deg=0, centre_dec_deg=0, template=template, beam_arcsec=4.5)


def _briefly_trained_lotss_model(path):
    """A tiny LoTSS model trained for 120 steps on Gaussian sources: unlike an untrained
    network, it makes some sources that stand 5 sigma above their cutout's noise."""
    from radiogen.model.data import write_synthetic_training_set
    from radiogen.model.train import train

    data = write_synthetic_training_set(path.with_suffix(".h5"), n=64, size=16, dataset="lotss", seed=3)
    train(data_path=data, out_path=path, seed=11, device="cpu",
          train_settings={"lr": 2e-3, "ema_decay": 0.9, "channels_last": False, "log_every": 60,
                          "val_sigmas": [0.5], "val_max_images": 8,
                          "lotss": {"batch_size": 8, "steps": 120, "val_every": 1000, "checkpoint_every": 1000}},
          model_settings={"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8, "dropout": 0.0})
    return path


def test_generate_tile_with_a_model_is_reproducible_and_refuses_a_first_model(tmp_path):
    torch.set_num_threads(1)
    lotss = _briefly_trained_lotss_model(tmp_path / "lotss.pt")
    first = save_tiny_model(tmp_path / "first.pt", "first")
    settings = _settings(size_deg=0.1, tile_px=120, source_density_deg2=600.0)
    block = json.loads(settings_json(fill_defaults({"sources": "model", "size_deg": 0.1, "tile_px": 120,
                                                    "source_density_deg2": 600.0}, SCHEMA)))
    assert cli_main(["skymap", "sources", "--model", str(lotss), "--settings", json.dumps(block),
                     "--seed", "5", "--name", "t", "--header", str(tmp_path / "h.txt"),
                     "--output", str(tmp_path / "sources.csv")]) == 0
    table = catalogue.read_sources(tmp_path / "sources.csv")
    assert len(table) > 0 and set(table["tile"]) <= set(range(n_tiles(240, 120)))
    sampler = {"num_steps": 8}
    for name in ("a.h5", "b.h5"):
        stamps.generate_tile(lotss, tmp_path / "sources.csv", tmp_path / name, tile=0, seed=5, guidance=0.0,
                             settings=settings, sampler=sampler, device="cpu")
    a, b = stamps.read_tile(tmp_path / "a.h5"), stamps.read_tile(tmp_path / "b.h5")
    assert np.array_equal(a["stamps"], b["stamps"])
    assert list(a["index"]) == list(table.index[table["tile"] == 0])
    assert a["stamps"].shape[1:] == (16, 16) and (a["stamps"] >= 0).all()
    # kept sources peak at their catalogue flux; the others are left off (empty stamps)
    kept = a["n_islands"] > 0
    assert kept.any() and not kept.all()
    assert not a["stamps"][~kept].any()
    np.testing.assert_allclose(a["stamps"][kept].max(axis=(1, 2)),
                               table.loc[table["tile"] == 0, "Peak_flux"].to_numpy()[kept] * 1e-3, rtol=1e-5)
    with pytest.raises(InputFileError, match="this is a first model, but lotss images were asked for"):
        stamps.generate_tile(first, tmp_path / "sources.csv", tmp_path / "c.h5", tile=0, seed=5,
                             guidance=0.0, settings=settings, sampler=sampler, device="cpu")


def test_settings_name_unknown_and_invalid_keys():
    block = fill_defaults({}, SCHEMA)
    with pytest.raises(Exception, match="unknown key"):
        MapSettings.from_mapping({**block, "sizes_deg": 1.0})
    with pytest.raises(Exception, match="peak_flux_range_mjy needs 0 < low < high"):
        MapSettings.from_mapping({**block, "peak_flux_range_mjy": [10.0, 1.0]})
    with pytest.raises(Exception, match="missing key"):
        MapSettings.from_mapping({k: v for k, v in block.items() if k != "tile_px"})


def test_size_conditioned_model_gets_each_source_size(tmp_path, caplog):
    from radiogen.model import load_model

    torch.set_num_threads(1)
    model = save_tiny_model(tmp_path / "size.pt", "lotss", with_size=True)
    _net, meta = load_model(model)
    header = _header(size=240)
    drawn = catalogue.input_catalogue(_settings(source_density_deg2=2000.0), meta, header, seed=1)
    low, high = catalogue.training_size_range_arcsec(meta)
    assert drawn["LAS"].between(low, high).all() and len(drawn) > 20
    power = catalogue.input_catalogue(_settings(source_density_deg2=2000.0, peak_flux="power_law",
                                                peak_flux_range_mjy=[100.0, 5000.0]), meta, header, seed=1)
    assert power["LAS"].notna().all()
    rows = [("A", *_world(header, 50, 50), 200.0)]
    path = _write_catalogue(tmp_path / "no_las.csv", rows)
    with pytest.raises(CatalogueError, match="conditioned on size, but the catalogue has no LAS"):
        catalogue.input_catalogue(_settings(catalogue=str(path)), meta, header, seed=0)
    table = pd.DataFrame({"Source_Name": ["A", "B"], "RA": [_world(header, 50, 50)[0], _world(header, 150, 150)[0]],
                          "DEC": [_world(header, 50, 50)[1], _world(header, 150, 150)[1]],
                          "Peak_flux": [200.0, 300.0], "LAS": [12.0, high * 3]})
    table.to_csv(tmp_path / "las.csv", index=False)
    sources = catalogue.input_catalogue(_settings(catalogue=str(tmp_path / "las.csv")), meta, header, seed=0)
    assert list(sources["LAS_clipped"]) == [False, True] and sources["LAS"].iloc[1] == pytest.approx(high)
    assert "1 of 2 size(s) outside" in caplog.text
    catalogue.write_sources(sources, tmp_path / "sources.csv")
    stamps.generate_tile(model, tmp_path / "sources.csv", tmp_path / "t.h5", tile=0, seed=0, guidance=0.0,
                         settings=_settings(), sampler={"num_steps": 2}, device="cpu",
                         expect_context="peak_flux+size")
    assert len(stamps.read_tile(tmp_path / "t.h5")["index"]) == 2
    with pytest.raises(InputFileError, match="conditioned on peak_flux\\+size, but the config asks for peak_flux"):
        stamps.generate_tile(model, tmp_path / "sources.csv", tmp_path / "u.h5", tile=0, seed=0, guidance=0.0,
                             settings=_settings(), sampler={"num_steps": 2}, device="cpu",
                             expect_context="peak_flux")


@pytest.mark.parametrize("bmaj, bmin, bpa", [(6.0, 6.0, 0.0), (9.0, 6.0, 30.0)])
def test_map_noise_is_correlated_like_the_beam(bmaj, bmin, bpa):
    """A noise-only map: its autocorrelation FWHM is BMAJ along BPA and BMIN across it, within 5%."""
    from radiogen.noise import autocorrelation_fwhm_px

    header = _header(size=512)
    header["BMAJ"], header["BMIN"], header["BPA"] = bmaj / 3600.0, bmin / 3600.0, bpa
    observed = assemble.image_plane_observation(np.zeros((512, 512), np.float32), header=header,
                                                settings=_settings(), rms_jy=80e-6,
                                                rng=np.random.default_rng(4))
    assert observed.std() == pytest.approx(80e-6, rel=1e-3)
    assert autocorrelation_fwhm_px(observed, angle_deg=bpa) == pytest.approx(bmaj / 1.5, rel=0.05)
    assert autocorrelation_fwhm_px(observed, angle_deg=bpa + 90.0) == pytest.approx(bmin / 1.5, rel=0.05)


def test_counts_are_taken_after_association(tmp_path):
    """Three PyBDSF components of one truth source count once, with their fluxes summed."""
    header = _header()
    truth = pd.DataFrame({"RA": [_world(header, 100, 100)[0], _world(header, 300, 300)[0]],
                          "DEC": [_world(header, 100, 100)[1], _world(header, 300, 300)[1]],
                          "LAS": [60.0, 10.0], "Total_flux": [30.0, 5.0], "Peak_flux": [5.0, 4.0]})
    positions = [(95, 100, 10.0), (100, 100, 12.0), (105, 100, 7.0), (300, 300, 4.5), (200, 350, 1.5)]
    recovered = pd.DataFrame({"RA": [_world(header, x, y)[0] for x, y, _ in positions],
                              "DEC": [_world(header, x, y)[1] for x, y, _ in positions],
                              "Total_flux": [s for *_, s in positions]})
    truth, recovered = validate.match_catalogues(truth, recovered, radius_arcsec=6.0)
    assert list(truth["n_matches"]) == [3, 1] and list(recovered["truth_row"]) == [0, 0, 0, 1, -1]
    assert sorted(validate.associated_fluxes(truth, recovered)) == pytest.approx([1.5, 4.5, 29.0])
    table = validate.summary_table(truth, recovered, n_input=2, rms_mjy=0.08,
                                   beam=(6.0, 6.0, 0.0)).set_index("measure")
    assert table.loc["recovered_sources", "value"] == 5 and table.loc["associated_sources", "value"] == 3
    validate.plot_validation(truth, recovered, tmp_path / "v.png", rms_mjy=0.08, area_deg2=0.03,
                             beam=(6.0, 6.0, 0.0), title="t")
    assert (tmp_path / "v.png").stat().st_size > 0


def test_deconvolved_size_median_keeps_pybdsf_zeros_and_counts_them():
    """Resolved Gaussians PyBDSF could not deconvolve (DC_Maj = 0) stay in the deconvolved median as zeros
    (upper limits; dropping them would select on the outcome) and are counted; unresolved truth sources do
    not enter it."""
    truth = pd.DataFrame({"kind": "gaussian", "n_matches": 1, "Peak_flux": 10.0, "Min": 4.0, "PA": 0.0,
                          "Maj": [12.0, 12.0, 12.0, 1.0],
                          "Recovered_Maj": [13.4, 13.4, 13.4, 6.1],
                          "Recovered_DC_Maj": [11.0, 0.0, 13.0, 0.0],
                          "Total_flux": 10.0, "Recovered_flux": 10.0, "dRA": 0.0, "dDEC": 0.0})
    recovered = pd.DataFrame({"truth_row": [0, 1, 2, 3], "Total_flux": 10.0})
    table = validate.summary_table(truth, recovered, n_input=4, rms_mjy=0.08,
                                   beam=(6.0, 6.0, 0.0)).set_index("measure")["value"]
    assert table["size_sources"] == 4 and table["deconvolved_size_sources"] == 3
    assert table["deconvolved_size_unresolved"] == 1
    assert table["deconvolved_size_ratio_median"] == pytest.approx(11.0 / 12.0)


def _noisy_cutout(source, peak_snr, rng):
    """A generated-like cutout: source x peak S/N plus beam-correlated unit noise, negatives set to 0,
    min-max scaled (as the LoTSS preprocessing and the model's images)."""
    from radiogen.noise import beam_correlated_noise

    image = source / source.max() * peak_snr + beam_correlated_noise(rng, source.shape, bmaj_px=6.0 / 1.5)
    image = np.maximum(image, 0.0)
    return image / image.max()


def _elliptical_stamp(peak_jy, fwhm_major_arcsec, fwhm_minor_arcsec, angle_rad, size=80):
    """A beam-convolved elliptical Gaussian source of the given peak, centred at size // 2."""
    gy, gx = np.mgrid[:size, :size] - size // 2
    major = np.hypot(fwhm_major_arcsec / FWHM_PER_SIGMA / 1.5, SIGMA_BEAM_PX)
    minor = np.hypot(fwhm_minor_arcsec / FWHM_PER_SIGMA / 1.5, SIGMA_BEAM_PX)
    along = gx * np.cos(angle_rad) + gy * np.sin(angle_rad)
    across = -gx * np.sin(angle_rad) + gy * np.cos(angle_rad)
    return peak_jy * np.exp(-0.5 * ((along / major) ** 2 + (across / minor) ** 2))


@pytest.mark.parametrize("shape", [(0.0, 0.0, 0.0), (15.0, 9.0, 0.6)], ids=["point", "extended"])
def test_a_gaussian_through_the_stamp_path_keeps_its_total_flux(shape):
    """Peak S/N 30 in the cutout: the 3 sigma islands lost 8 % of the flux; the model keeps it within 5 %."""
    rng = np.random.default_rng(11)
    source = _elliptical_stamp(0.01, *shape)
    ratios = []
    for _ in range(4):
        stamp, n_islands = stamps.extract_source(_noisy_cutout(source, 30.0, rng), 0.01, _settings())
        assert n_islands >= 1 and stamp.max() == pytest.approx(0.01, rel=1e-6)
        ratios.append(stamp.sum() / source.sum())
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.05), ratios


def test_map_of_generated_like_sources_has_noise_free_smooth_models(tmp_path):
    """Sources cut from noisy cutouts: the map's noise inside their islands is the map rms (the
    models carry no cutout noise), the sky model ends far below the rms, truth fluxes are kept."""
    rms = 80e-6
    peak = 70 * rms  # cutout peak S/N 100: a 3 sigma island would carry 0.7 map rms of cutout noise
    shapes = [(0.0, 0.0, 0.0), (15.0, 9.0, 0.6), (20.0, 12.0, 2.0), (4.0, 4.0, 0.0), (12.0, 12.0, 0.0)]
    rng = np.random.default_rng(5)
    sources = [_elliptical_stamp(peak, *shape) for shape in shapes]
    models = []
    for source in sources:
        model, n_islands = stamps.extract_source(_noisy_cutout(source, 100.0, rng), peak, _settings())
        assert n_islands == 1
        models.append(model)
    header = _header()
    header.totextfile(str(tmp_path / "h.txt"), overwrite=True)
    grid = [(x, y) for y in range(60, 341, 70) for x in range(50, 351, 60)]  # 30 positions, 60-70 px apart
    kind = [k % len(shapes) for k in range(len(grid))]
    _write_catalogue(tmp_path / "in.csv", [(f"S{k}", *_world(header, x, y), peak * 1e3)
                                          for k, (x, y) in enumerate(grid)])
    settings = _settings(noise_rms_ujy=rms * 1e6, tile_px=400, catalogue=str(tmp_path / "in.csv"))
    table = catalogue.input_catalogue(settings, META, header, seed=0)
    catalogue.write_sources(table, tmp_path / "sources.csv")
    stamps.write_tile(tmp_path / "tile.h5", stamps=np.stack([models[kind[k]] for k in table["index"]]),
                      index=table["index"].to_numpy(), n_islands=np.ones(len(table), int),
                      attrs={"tile": 0, "catalogue_sha256": file_digest(tmp_path / "sources.csv"), "model_id": "m"})
    truth = assemble.assemble_map(tmp_path / "sources.csv", tmp_path / "h.txt", [tmp_path / "tile.h5"],
                                  settings=settings, seed=2, name="t", map_path=tmp_path / "map.fits",
                                  sky_model_path=tmp_path / "sky.fits", truth_path=tmp_path / "truth.csv")
    observed = fits.getdata(tmp_path / "map.fits").astype(float)
    sky = fits.getdata(tmp_path / "sky.fits").astype(float)
    true_sky, _ = assemble.place_stamps((400, 400), np.stack([sources[kind[k]] for k in table["index"]]),
                                        table["ix"].to_numpy(), table["iy"].to_numpy())
    islands = true_sky >= 3 * rms
    assert islands.sum() > 5000
    # the noise inside the islands: the map minus the noise-free sources, within 10 % of the map rms
    assert np.std((observed - true_sky)[islands]) == pytest.approx(rms, rel=0.10)
    # the sky model's edge pixels (on its support, next to a zero pixel) are far below the map rms
    support = sky > 0
    edge = support & ~ndimage.binary_erosion(support, border_value=1)
    assert edge.any() and sky[edge].max() < rms
    # truth measured on the placed models keeps the sources' total fluxes within 5 %
    beam = beam_area_px(6.0, 1.5)
    true_totals = np.array([sources[kind[k]].sum() / beam * 1e3 for k in table["index"]])
    assert truth["Total_flux"].to_numpy() == pytest.approx(true_totals, rel=0.05)


def test_convolved_major_axis_adds_covariances():
    """Gaussian convolution for the size-recovery truth: axes add in quadrature when aligned, a source
    across an elliptical beam's major axis gets sqrt(major^2 + BMIN^2) or BMAJ, whichever is larger,
    and only the angle between source and beam matters."""
    conv = validate.convolved_major_fwhm
    assert conv(10.0, 4.0, 30.0, (6.0, 6.0, 0.0)) == pytest.approx(np.hypot(10.0, 6.0))
    assert conv(10.0, 2.0, 45.0, (8.0, 4.0, 45.0)) == pytest.approx(np.hypot(10.0, 8.0))
    assert conv(10.0, 0.0, 0.0, (8.0, 4.0, 90.0)) == pytest.approx(np.hypot(10.0, 4.0))
    assert conv(3.0, 0.0, 0.0, (8.0, 4.0, 90.0)) == pytest.approx(np.hypot(8.0, 0.0))
    np.testing.assert_allclose(conv([7.0, 7.0], [3.0, 3.0], [10.0, 50.0], (9.0, 5.0, 40.0)),
                               conv([7.0, 7.0], [3.0, 3.0], [90.0, 50.0], (9.0, 5.0, 60.0)))


def _validation_tsv(path, **values):
    rows = {"input_sources": 5, "placed_sources": 4, "recovered_sources": 3, "associated_sources": 3,
            "completeness": 0.75, "completeness_snr_ge_10": 1.0, "reliability": 1.0, "flux_ratio_median": 0.98,
            "flux_ratio_scatter": 0.05, "offset_median_arcsec": 0.4, "size_sources": 2, "size_ratio_median": 1.02,
            "size_ratio_scatter": 0.04, "deconvolved_size_sources": 1, "deconvolved_size_unresolved": 0,
            "deconvolved_size_ratio_median": 0.97,
            **values}
    pd.DataFrame({"measure": list(rows), "value": list(rows.values()), "meaning": "m"}).to_csv(
        path, sep="\t", index=False)
    return path


def test_compare_puts_maps_side_by_side_shows_undefined_and_refuses_other_skies(tmp_path, saved_figures):
    from figures import panels

    a = _validation_tsv(tmp_path / "a.tsv")
    b = _validation_tsv(tmp_path / "b.tsv", recovered_sources=0, associated_sources=0, completeness=0.0,
                        reliability=float("nan"), flux_ratio_median=float("nan"))
    assert cli_main(["skymap", "compare", "--validation", f"image-plane={a}", "--validation",
                     f"interferometric={b}", "--table", str(tmp_path / "c.tsv"),
                     "--figure", str(tmp_path / "c.png")]) == 0
    table = pd.read_csv(tmp_path / "c.tsv", sep="\t", index_col="measure")
    assert list(table.columns) == ["image-plane", "interferometric", "meaning"]
    assert table.loc["completeness"].tolist()[:2] == [0.75, 0.0]
    assert table.loc["reliability", "image-plane"] == 1.0 and np.isnan(table.loc["reliability", "interferometric"])
    axes = panels(saved_figures["c.png"])
    heights = {ax.get_title(): [p.get_height() for p in ax.patches] for ax in axes}
    assert heights == {"completeness": [0.75, 0.0], "reliability": [1.0], "flux_ratio_median": [0.98]}
    undefined = [t.get_text() for ax in axes for t in ax.texts]
    assert undefined == ["undefined\n(no sources)"] * 2
    other = _validation_tsv(tmp_path / "other.tsv", placed_sources=7)
    with pytest.raises(InputFileError, match="do not share one truth catalogue"):
        validate.compare_summaries({"a": a, "other": other}, table_path=tmp_path / "x.tsv",
                                   figure_path=tmp_path / "x.png")
    with pytest.raises(InputFileError, match="not a map validation table"):
        pd.DataFrame({"measure": ["completeness"], "value": [1.0], "meaning": ["m"]}).to_csv(
            tmp_path / "bad.tsv", sep="\t", index=False)
        validate.compare_summaries({"a": a, "bad": tmp_path / "bad.tsv"}, table_path=tmp_path / "x.tsv",
                                   figure_path=tmp_path / "x.png")
    assert cli_main(["skymap", "compare", "--validation", str(a), "--validation", f"b={b}", "--table",
                     str(tmp_path / "x.tsv"), "--figure", str(tmp_path / "x.png")]) != 0
