"""PyBDSF per image on real FIRST and LoTSS images: models, A50%, Delta+, shards, resume."""

from __future__ import annotations

import importlib.util
import re
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

# Not pytest.importorskip("bdsf"): a plain import would set numpy's global error
# state to divide='raise' for every later test in this process.
if importlib.util.find_spec("bdsf") is None:
    pytest.skip("PyBDSF (bdsf) is not installed", allow_module_level=True)

from radiogen.cli import main as cli_main  # noqa: E402
from radiogen.errors import InputFileError  # noqa: E402
from radiogen.evaluation import pybdsf as P  # noqa: E402
from radiogen.evaluation import pybdsf_runtime as RT  # noqa: E402
from radiogen.evaluation import pybdsf_shards as S  # noqa: E402
from radiogen.evaluation.imagesets import open_image_set  # noqa: E402
from figures import drawn_from, panels, shown_arrays  # noqa: E402
from kill_at import kill_at  # noqa: E402

FIRST_BEAM, FIRST_PX = 5.4, 1.8
LOTSS_BEAM, LOTSS_PX = 6.0, 1.5


# ---------------------------------------------------------------- real data builders
def first_crops(first_fits_dir: Path, n: int = 6, size: int = 80) -> tuple[np.ndarray, list[str]]:
    """Central ``size`` crops of real FIRST FITS cutouts, min-max scaled to [0, 1]."""
    from astropy.io import fits
    from astropy.stats import sigma_clipped_stats

    crops, names = [], []
    for path in sorted(first_fits_dir.glob("*.fits"))[:n]:
        header = fits.getheader(path)
        assert "BMAJ" not in header  # the beam must come from configuration
        data = np.nan_to_num(fits.getdata(path).squeeze().astype(np.float64))
        cy, cx = data.shape[0] // 2, data.shape[1] // 2
        crop = data[cy - size // 2: cy + size // 2, cx - size // 2: cx + size // 2]
        # as in the FIRST dataset (Griese et al. 2023): clip below 3 x rms, min-max scale
        _, _, rms = sigma_clipped_stats(crop)
        crop = np.clip(crop, 3 * rms, None)
        crop = (crop - crop.min()) / (crop.max() - crop.min())
        crops.append(crop.astype(np.float32))
        names.append(path.name)
    return np.stack(crops), names


def lotss_cutouts(lotss_dr1_dir: Path, size: int = 80) -> pd.DataFrame:
    """80x80 cutouts (Jy/beam) of the real DR1 pixels centred on catalogue sources."""
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    catalogue = Table.read(lotss_dr1_dir / "LoTSS_DR1_srl_P205+55_P218+55.fits")
    rows = []
    for name in ("P205+55_400px.fits", "P218+55_200px.fits"):
        with fits.open(lotss_dr1_dir / name) as hdul:
            header, data = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64).squeeze()
        assert header["BMAJ"] * 3600 == pytest.approx(LOTSS_BEAM)
        x, y = WCS(header).celestial.world_to_pixel_values(catalogue["RA"], catalogue["DEC"])
        half = size // 2
        inside = (x >= half) & (x < data.shape[1] - half) & (y >= half) & (y < data.shape[0] - half)
        for source, xx, yy in zip(catalogue[inside], x[inside], y[inside]):
            ix, iy = int(round(float(xx))), int(round(float(yy)))
            cut = data[iy - half: iy + half, ix - half: ix + half]
            rows.append({
                "name": str(source["Source_Name"]),
                "image": np.nan_to_num(cut).astype(np.float32),
                "total_flux_mjy": float(source["Total_flux"]),
                "peak_flux_mjy": float(source["Peak_flux"]),
                "dc_maj": float(source["DC_Maj"]),
                "s_code": str(source["S_Code"]),
            })
    return pd.DataFrame(rows)


def write_image_set(path: Path, images: np.ndarray, *, dataset: str, peak_flux=None,
                    labels=None, beam: bool = True) -> Path:
    """A training-set-like HDF5 file in the shared layout."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=np.asarray(images, dtype=np.float32))
        h5.create_dataset("split", data=np.zeros(len(images), dtype=np.uint8))
        if peak_flux is not None:
            h5.create_dataset("peak_flux", data=np.asarray(peak_flux, dtype=np.float32))
            ctx = (np.log10(peak_flux) - np.log10(peak_flux).mean())[:, None]
            h5.create_dataset("context", data=ctx.astype(np.float32))
        if labels is not None:
            h5.create_dataset("label", data=np.asarray(labels, dtype=np.int64))
        h5.attrs["dataset"] = dataset
        h5.attrs["pixel_scale_arcsec"] = LOTSS_PX if dataset == "lotss" else FIRST_PX
        if beam:
            h5.attrs["beam_arcsec"] = LOTSS_BEAM if dataset == "lotss" else FIRST_BEAM
        h5.attrs["frequency_hz"] = 144e6 if dataset == "lotss" else 1.4e9
        h5.attrs["seed"] = 1
    return path


def lotss_image_set(path: Path, cutouts: pd.DataFrame) -> Path:
    """LoTSS-like set: cutouts scaled by their maximum, ``/peak_flux`` the maximum (Jy/beam)."""
    images = np.stack(cutouts["image"].to_list())
    peaks = images.reshape(len(images), -1).max(axis=1)
    scaled = np.clip(images / peaks[:, None, None], 0, 1)
    return write_image_set(path, scaled, dataset="lotss", peak_flux=peaks)


@pytest.fixture(scope="module", autouse=True)
def _frozen_gc():
    # as in run_shard: PyBDSF's gc.collect() calls would otherwise walk all of pytest
    with RT.gc_frozen():
        yield


@pytest.fixture(scope="module")
def lotss_table(lotss_dr1_dir):
    return lotss_cutouts(lotss_dr1_dir)


def _measure(image, *, index=0, dataset="first", **kw):
    beam, px = (FIRST_BEAM, FIRST_PX) if dataset == "first" else (LOTSS_BEAM, LOTSS_PX)
    return P.measure_image(image, index=index, seed=7, pixel_scale_arcsec=px, beam_arcsec=beam,
                           frequency_hz=1.4e9 if dataset == "first" else 144e6,
                           projection="TAN" if dataset == "first" else "SIN", **kw)


# ---------------------------------------------------------------- pure functions
def _gaussian(size, fwhm_px, *, centre=None, amplitude=1.0):
    sigma = fwhm_px / np.sqrt(8 * np.log(2))
    cy, cx = centre if centre is not None else ((size - 1) / 2, (size - 1) / 2)
    yy, xx = np.mgrid[:size, :size]
    return amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def test_a50_of_gaussian_is_half_flux_disc():
    # Half of a circular Gaussian's flux lies within r = FWHM / 2: A50 = pi FWHM^2 / 4
    # = ln 2 x beam area (2 pi sigma^2).
    for fwhm in (4.0, 8.0, 16.0):
        model = _gaussian(128, fwhm)
        expected = np.pi * fwhm**2 / 4
        assert P.a50_pixels(model) == pytest.approx(expected, rel=0.08)
        mask = P.a50_mask(model)
        assert model[mask].sum() >= 0.5 * model.sum()
        # minimal: dropping the faintest selected pixel falls below half
        assert model[mask].sum() - model[mask].min() < 0.5 * model.sum()
    assert np.isnan(P.a50_pixels(np.zeros((10, 10))))


def _positive_residual_by_pixels(image, model) -> float:
    """Delta+ summed pixel by pixel, independently of the library's vectorised version."""
    return sum(max(float(x) - float(m), 0.0) for x, m in zip(np.ravel(image), np.ravel(model)))


def test_delta_plus_definition():
    model = _gaussian(40, 5.0)
    bump = np.zeros_like(model)
    bump[3, 4] = 0.25
    below = -0.1 * np.ones_like(model)
    # only the positive difference counts; the negative -0.1 everywhere else is ignored
    assert P.positive_residual(model + bump + below * (bump == 0), model) == pytest.approx(0.25)
    image = model + np.random.default_rng(1).normal(0, 0.05, model.shape)
    expected = _positive_residual_by_pixels(image, model)
    assert expected > 0
    assert P.positive_residual(image, model) == pytest.approx(expected, rel=1e-12)
    # positive minus negative residual is the total difference
    assert (P.positive_residual(image, model) - P.positive_residual(model, image)
            == pytest.approx(float((image - model).sum()), abs=1e-9))
    # NaN model pixels (blanked) count as zero model
    nan_model = model.copy()
    nan_model[0, 0] = np.nan
    assert P.positive_residual(image, nan_model) == pytest.approx(
        _positive_residual_by_pixels(image, np.nan_to_num(nan_model)), rel=1e-12)


@pytest.mark.parametrize("fwhm_px, theta", [((6.0, 4.0), 0.5), ((10.0, 5.0), 1.2), ((3.0, 3.0), 0.0)])
def test_synthetic_gaussian_of_known_flux_is_recovered(fwhm_px, theta):
    """An elliptical Gaussian of known total flux on a FIRST grid (5.4" beam, 1.8"/px): PyBDSF's
    flux to 2%, the model's A50 against the analytic half-flux ellipse, Delta+ pixel by pixel."""
    size, amplitude = 80, 0.8  # Jy/beam
    sigma_x, sigma_y = (f / np.sqrt(8 * np.log(2)) for f in fwhm_px)
    yy, xx = np.mgrid[:size, :size]
    dx, dy = xx - 38.7, yy - 40.3  # off the pixel grid
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    image = (amplitude * np.exp(-u**2 / (2 * sigma_x**2) - v**2 / (2 * sigma_y**2))).astype(np.float32)
    beam_area_px = 2 * np.pi * (FIRST_BEAM / np.sqrt(8 * np.log(2)))**2 / FIRST_PX**2
    flux = amplitude * 2 * np.pi * sigma_x * sigma_y / beam_area_px  # Jy
    row, model = _measure(image)
    assert row["status"] == "ok" and row["n_gaussians"] == 1, row
    assert row["model_flux"] == pytest.approx(flux, rel=0.02)
    assert row["model_image_sum"] == pytest.approx(flux, rel=0.02)
    assert row["image_sum"] == pytest.approx(flux, rel=1e-3)
    # half the flux of a Gaussian lies inside the ellipse of semi-axes FWHM / 2
    a50 = np.pi * fwhm_px[0] * fwhm_px[1] / 4
    assert row["a50_pixels"] == pytest.approx(a50, rel=0.05 if min(fwhm_px) > 3 else 0.15)
    delta_plus = _positive_residual_by_pixels(image, model)
    assert row["delta_plus"] == pytest.approx(delta_plus, rel=1e-6)
    assert 0 < delta_plus < 0.01 * image.sum()  # one Gaussian models one Gaussian


def test_shard_range_partitions():
    for n_images in (0, 5, 17, 1000):
        blocks = [S.shard_range(n_images, k, 4) for k in range(4)]
        covered = [i for start, stop in blocks for i in range(start, stop)]
        assert covered == list(range(n_images))


def test_numpy_error_state_kept():
    before = np.geterr()
    assert before["divide"] != "raise"
    RT.import_bdsf()
    assert np.geterr() == before
    image = _gaussian(40, 3.0) + np.random.default_rng(0).normal(0, 0.01, (40, 40))
    _measure(image.astype(np.float32))
    assert np.geterr() == before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isinf(np.float64(1.0) / np.zeros(1))[0]  # no FloatingPointError


# ---------------------------------------------------------------- real images
def test_first_sources_found_beam_from_config(first_fits_dir, tmp_path):
    crops, names = first_crops(first_fits_dir, n=4)
    for crop, name in zip(crops, names):
        row, model = _measure(crop)
        assert row["status"] == "ok", (name, row["error"])
        assert row["n_gaussians"] >= 1 and row["n_sources"] >= 1
        # the brightest pixel of the crop is modelled
        peak = np.unravel_index(np.argmax(crop), crop.shape)
        assert model[peak] > 0.5 * crop[peak], name
        # Gaussian fluxes, model image sum and image sum agree within a sensible range
        assert row["model_flux"] == pytest.approx(row["model_image_sum"], rel=0.2)
        assert 0.5 < row["model_flux"] / row["image_sum"] < 2.0, (name, row)
        assert row["noise_sigma"] == pytest.approx(0.01)


def test_pybdsf_gaussian_fits_work_under_the_installed_numpy():
    """bdsf 1.14.1 fails every Gaussian fit from numpy 2.5 (np.cross on 2-D vectors,
    PyBDSF issue #439): the lock file pins numpy below it; this guard fails if the pin goes."""
    image = _gaussian(80, 3.6, amplitude=1.0) + _gaussian(80, 3.6, centre=(52.0, 30.0), amplitude=0.5)
    row, model = _measure(image)
    assert row["status"] == "ok", f"numpy {np.__version__}: PyBDSF failed: {row['error']}"
    assert row["n_gaussians"] >= 2 and model is not None and model.max() > 0.5


def test_lotss_point_and_extended_sources(lotss_table):
    def fit(name):
        source = lotss_table.set_index("name").loc[name]
        image = source["image"]
        peak = float(image.max())
        row, model = _measure(image / peak, dataset="lotss")
        assert row["status"] == "ok", row["error"]
        return source, row, model, peak

    # bright unresolved source (DC_Maj = 0): its model's A50 is the beam's half-flux disc
    point, row, model, peak = fit("ILTJ143426.08+545730.5")
    beam_fwhm_px = LOTSS_BEAM / LOTSS_PX
    assert row["a50_pixels"] == pytest.approx(np.pi * beam_fwhm_px**2 / 4, rel=0.35)
    # its Gaussian flux, back in Jy, matches the DR1 catalogue's total flux
    assert row["model_flux"] * peak * 1e3 == pytest.approx(point["total_flux_mjy"], rel=0.3)
    assert model.max() == pytest.approx(1.0, abs=0.3)
    # a resolved multi-Gaussian source (S_Code M, 15 mJy) covers several times more pixels
    _, row_ext, _, _ = fit("ILTJ133946.43+545753.2")
    assert row_ext["n_gaussians"] > 1
    assert row_ext["a50_pixels"] > 3 * row["a50_pixels"]


def test_delta_plus_of_a_real_source_against_its_model(lotss_table):
    image = lotss_table["image"].iloc[0]
    scaled = image / image.max()
    row, model = _measure(scaled, dataset="lotss")
    assert row["status"] == "ok", row["error"]
    # the row's Delta+ is that of the image without the stabilising noise against the model
    expected = _positive_residual_by_pixels(scaled, model)
    assert row["delta_plus"] == pytest.approx(expected, rel=1e-6)
    # a real source in real noise leaves some positive residual, less than the image holds
    assert 0 < expected < float(np.clip(scaled, 0, None).sum())
    assert P.positive_residual(model + 0.5, model) == pytest.approx(0.5 * model.size)


def test_blank_image_is_a_recorded_failure():
    row, model = _measure(np.zeros((80, 80), np.float32))
    assert row["status"] == "failed"
    assert "rms" in row["error"].lower()
    assert model is None and np.isnan(row["a50_pixels"])


# ---------------------------------------------------------------- shards, resume, merge
@pytest.fixture()
def first_set(first_fits_dir, tmp_path):
    crops, _ = first_crops(first_fits_dir, n=5)
    images = np.concatenate([crops[:2], np.zeros((1, 80, 80), np.float32), crops[2:]])
    return write_image_set(tmp_path / "first.h5", images, dataset="first",
                           labels=np.arange(len(images)) % 4, beam=False)


def test_shard_records_failure_and_resumes(first_set, tmp_path, monkeypatch):
    settings = {**P.DEFAULT_SETTINGS, "checkpoint_every": 2}
    out = tmp_path / "run"
    reference = S.run_shard(first_set, shard=0, n_shards=1, output_csv=out / "ref.csv",
                            output_models=out / "ref.h5", settings=settings, seed=3)
    assert list(reference["index"]) == list(range(6))
    assert reference.loc[2, "status"] == "failed" and reference.loc[2, "error"]
    assert (reference.drop(index=2)["status"] == "ok").all()
    assert not (out / "ref.part").exists()
    with h5py.File(out / "ref.h5") as h5:
        assert h5["models"].shape == (6, 80, 80)
        assert not h5["models"][2].any() and h5["models"][0].any()

    # interrupt a second run after 5 fits: two checkpoints of two images survive
    real_measure = P.measure_image
    calls = []

    def crashing(*args, **kwargs):
        calls.append(kwargs["index"])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(P, "measure_image", crashing)
    with pytest.raises(KeyboardInterrupt):
        S.run_shard(first_set, shard=0, n_shards=1, output_csv=out / "s.csv",
                    output_models=out / "s.h5", settings=settings, seed=3)
    assert not (out / "s.csv").exists()
    assert len(list((out / "s.part").glob("chunk-*.h5"))) == 2
    calls.clear()
    monkeypatch.setattr(P, "measure_image", lambda *a, **k: (calls.append(k["index"]),
                                                             real_measure(*a, **k))[1])
    resumed = S.run_shard(first_set, shard=0, n_shards=1, output_csv=out / "s.csv",
                          output_models=out / "s.h5", settings=settings, seed=3)
    assert calls == [4, 5]  # only the images without a checkpoint
    columns = ["index", "status", "n_gaussians", "model_flux", "a50_pixels", "delta_plus",
               "noise_sigma", "label"]
    pd.testing.assert_frame_equal(resumed[columns], reference[columns])
    assert (resumed["seconds"] >= 0).all()


def test_rerun_after_kill_9_skips_finished_images(first_set, tmp_path):
    """A PyBDSF shard job killed outright keeps its finished chunks; the rerun fits only the
    rest and writes the same table as an uninterrupted run."""
    import subprocess
    import sys

    section = json.dumps({**P.DEFAULT_SETTINGS, "checkpoint_every": 1,
                          "beam_arcsec": {"lotss": 6.0, "first": 5.4}})

    def command(out):
        return [sys.executable, "-m", "radiogen.cli", "pybdsf", "shard", "--image-set", str(first_set),
                "--shard", "0", "--n-shards", "1", "--output", str(out / "s.csv"),
                "--models", str(out / "s.h5"), "--seed", "3", "--settings", section]

    killed = tmp_path / "killed"
    killed.mkdir()
    kill_at(command(killed), "pybdsf.chunk", 2, tmp_path / "killed.log")  # 2 of 6 images fitted
    assert not (killed / "s.csv").exists()
    rerun = subprocess.run(command(killed), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert re.search(r"images \[0, 6\), 2 already done, 4 to fit", rerun.stderr), rerun.stderr[-2000:]
    clean = tmp_path / "clean"
    assert subprocess.run(command(clean), capture_output=True, timeout=300).returncode == 0
    columns = ["index", "status", "n_gaussians", "model_flux", "a50_pixels", "delta_plus", "noise_sigma"]
    pd.testing.assert_frame_equal(pd.read_csv(killed / "s.csv")[columns], pd.read_csv(clean / "s.csv")[columns])
    with h5py.File(killed / "s.h5") as a, h5py.File(clean / "s.h5") as b:
        np.testing.assert_array_equal(a["models"][()], b["models"][()])


def test_checkpoints_of_other_settings_are_ignored(first_set, tmp_path):
    out = tmp_path / "run"
    settings = {**P.DEFAULT_SETTINGS, "checkpoint_every": 1}
    part = out / "s.part"
    part.mkdir(parents=True)
    with open_image_set(first_set) as image_set:
        key = S._settings_key({**settings, "thresh_isl": 3.0}, image_set, 3, 0, 6)
    S._write_chunk(part / "chunk-000000000.h5",
                   [{**{c: np.nan for c in P.RESULT_COLUMNS}, "index": 0, "status": "ok",
                     "error": "", "n_gaussians": 99, "n_sources": 1}], [None], key, (80, 80))
    table = S.run_shard(first_set, shard=0, n_shards=3, output_csv=out / "s.csv",
                        output_models=out / "s.h5", settings=settings, seed=3)
    assert list(table["index"]) == [0, 1] and table.loc[0, "n_gaussians"] != 99


def test_cli_shards_and_merge(first_set, tmp_path):
    out = tmp_path / "cli"
    section = {"thresh_isl": 5.0, "thresh_pix": 0.5, "shards_per_set": 2, "mem_mb": 1000,
               "beam_arcsec": {"lotss": 6.0, "first": 5.4}}
    shards = []
    for k in range(2):
        table, models = out / f"{k}.csv", out / f"{k}_models.h5"
        rc = cli_main(["pybdsf", "shard", "--image-set", str(first_set), "--shard", str(k),
                       "--n-shards", "2", "--output", str(table), "--models", str(models),
                       "--seed", "3", "--settings", json.dumps(section)])
        assert rc == 0
        shards.append(str(table))
    merged_path = out / "merged.csv"
    # image 2 fails (1 of 6, 17%): above the default 5% the merge stops, naming the reason
    assert cli_main(["pybdsf", "merge", "--image-set", str(first_set), "--shards", *shards,
                     "--output", str(merged_path)]) == 1
    assert not merged_path.exists()
    with pytest.raises(InputFileError, match=r"failed on 1 of 6 images \(16.7%\).*most common reason \(1 images\)"):
        S.merge_shards(shards, merged_path, n_images=6, max_failed_fraction=0.05)
    assert cli_main(["pybdsf", "merge", "--image-set", str(first_set), "--shards", *shards,
                     "--max-failed-fraction", "0.2", "--output", str(merged_path)]) == 0
    merged = pd.read_csv(merged_path, keep_default_na=False)
    assert list(merged.columns) == P.RESULT_COLUMNS
    assert list(merged["index"]) == list(range(6))
    assert merged.loc[2, "status"] == "failed"
    # a shard missing from the merge is an error naming the output
    with pytest.raises(InputFileError, match="expected 0..5"):
        S.merge_shards(shards[:1], out / "bad.csv", n_images=6)
    # bad settings JSON is a one-line CLI error
    assert cli_main(["pybdsf", "shard", "--image-set", str(first_set), "--shard", "0",
                     "--n-shards", "1", "--output", str(out / "x.csv"),
                     "--models", str(out / "x.h5"), "--seed", "1", "--settings", "{"]) == 1


def test_plots_from_real_fits(lotss_table, tmp_path, saved_figures):
    from radiogen.evaluation.plots_pybdsf import distribution_figure, example_figure

    # the brightest cutouts: after clipping negatives (as the LoTSS training set does) faint
    # ones make PyBDSF fit dozens of noise Gaussians, which is slow
    bright = lotss_table.assign(peak=[im.max() for im in lotss_table["image"]])
    path = lotss_image_set(tmp_path / "lotss.h5", bright.nlargest(5, "peak"))
    S.run_shard(path, shard=0, n_shards=1, output_csv=tmp_path / "t.csv",
                output_models=tmp_path / "m.h5", seed=1)
    sets = {"real": {"images": path, "table": tmp_path / "t.csv", "models": [tmp_path / "m.h5"]},
            "again": {"images": path, "table": tmp_path / "t.csv",
                      "models": [tmp_path / "m.h5"]}}
    example_figure(sets, tmp_path / "ex.png", n=4)
    result = distribution_figure({k: v["table"] for k, v in sets.items()}, tmp_path / "d.png",
                                 output_json=tmp_path / "d.json")
    assert (tmp_path / "ex.png").exists() and (tmp_path / "d.png").exists()
    # examples: per set a row of images above a row of their PyBDSF models with the A50% contour
    table = pd.read_csv(tmp_path / "t.csv").set_index("index")
    picks = [i for i in table.sort_values("a50_pixels").index if table.loc[i, "status"] == "ok"]
    axes = np.array(panels(saved_figures["ex.png"])).reshape(4, 4)
    with open_image_set(path) as image_set, h5py.File(tmp_path / "m.h5") as h5:
        images = image_set.images()
        models = dict(zip(h5["index"][()], h5["models"][()]))
        for col in range(4):
            image_panel, model_panel = axes[0, col], axes[1, col]
            (shown,) = shown_arrays(image_panel)
            index = drawn_from([shown], images)[0]
            assert index in picks
            np.testing.assert_allclose(shown_arrays(model_panel)[0], models[index], atol=1e-6)
            assert model_panel.get_xlabel().startswith(f"A50={table.loc[index, 'a50_pixels']:.0f} px")
            assert model_panel.collections  # the A50% contour
    # the paper's scaled model flux first, the Jy version beside it (LoTSS has peak fluxes)
    assert result["flux_columns"] == ["model_flux", "model_flux_jy"]
    assert set(result["histograms"]) == {"model_flux", "model_flux_jy", "a50_pixels"}
    hist = result["histograms"]["a50_pixels"]["real"]
    assert hist["total"] == (pd.read_csv(tmp_path / "t.csv")["status"] == "ok").sum()


def test_time_limit_holds_when_the_code_inside_swallows_the_timeout():
    # PyBDSF has broad `except` clauses; a Timeout raised inside one must not let
    # an expired fit pass as a success.
    import time

    with pytest.raises(RT.Timeout, match="time limit"):
        with RT.time_limit(0.01):
            try:
                time.sleep(0.2)
            except Exception:
                pass
    with RT.time_limit(5.0):  # an unexpired limit does not fire
        pass


def test_time_limit_is_a_recorded_failure(first_fits_dir):
    crops, _ = first_crops(first_fits_dir, n=1)
    row, model = _measure(crops[0], settings={"timeout_s": 1e-3})
    assert row["status"] == "failed" and "time limit" in row["error"]
    assert model is None
    # the alarm is cleared: a later fit without a limit succeeds
    row, _ = _measure(crops[0], settings={"timeout_s": None})
    assert row["status"] == "ok"
