"""Summary tables (size-matched W1/KS/Frechet/KID vs noise floor and classical baseline) and the evaluate-* CLI chain."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from radiogen.cli import main
from radiogen.errors import InputFileError
from radiogen.evaluation import summary as sm
from radiogen.evaluation.distances import size_matched_splits
from radiogen.evaluation.pybdsf_shards import model_flux_columns


def first_crops(zip_path, *, split: str, n: int, seed: int) -> np.ndarray:
    """``n`` real FIRST crops (80x80, [0, 1]) of one split, a seeded choice."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(".png") and f"/{split}/" in m)
        pick = sorted(np.random.default_rng(seed).choice(len(names), size=n, replace=False))
        images = []
        for i in pick:
            image = np.asarray(Image.open(io.BytesIO(zf.read(names[i]))).convert("L"), dtype=np.float32)
            c = (image.shape[0] - 80) // 2
            images.append(image[c : c + 80, c : c + 80] / 255.0)
    return np.stack(images)


def first_set(zip_path, path, *, split: str, n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """An image-set HDF5 of ``n`` real FIRST crops (80x80, [0, 1]); ``shift`` brightens them."""
    images = np.clip(first_crops(zip_path, split=split, n=n, seed=seed) + shift, 0.0, 1.0).astype(np.float32)
    with h5py.File(path, "w") as h5:
        h5["images"] = images
        h5["split"] = (np.arange(n) % 10 == 9).astype(np.uint8)
        h5["label"] = np.zeros(n, dtype=np.int64)
        for key, value in {"dataset": "first", "pixel_scale_arcsec": 1.8, "beam_arcsec": 5.4,
                           "frequency_hz": 1.4e9}.items():
            h5.attrs[key] = value
    return images


def test_image_distributions_are_unbiased_row_samples(first_zip, tmp_path):
    images = first_set(first_zip, tmp_path / "real.h5", split="train", n=30, seed=0)
    assert sm.pixels_per_image(30 * 100, 30) == 100 and sm.pixels_per_image(3001, 30) == 101
    assert sm.pixels_per_image(None, 30) is None
    stats = sm.image_set_distributions(tmp_path / "real.h5", pixels_per_image=100, seed=1, chunk=7)
    assert stats["pixel_value"].shape == (30, 100)
    np.testing.assert_allclose(stats["image_mean"], images.reshape(30, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats["image_std"], images.reshape(30, -1).std(axis=1), rtol=1e-5)
    # Each row's sample comes from its own image.
    for row in (0, 17):
        assert np.all(np.isin(stats["pixel_value"][row], images[row]))
    every = sm.image_set_distributions(tmp_path / "real.h5", pixels_per_image=None, seed=1)
    np.testing.assert_array_equal(np.sort(every["pixel_value"].ravel()), np.sort(images.ravel()))


def _pybdsf_table(n, rng, *, scale=1.0, jy=False):
    table = pd.DataFrame({
        "index": np.arange(n),
        "status": np.where(np.arange(n) % 7 == 3, "failed", "ok"),
        "model_flux": rng.lognormal(0, 1, n) * scale,
        "model_flux_jy": rng.lognormal(-5, 1, n) if jy else np.full(n, np.nan),
        "a50_pixels": rng.integers(5, 60, n).astype(float),
        "delta_plus": rng.gamma(2.0, 3.0, n),
    })
    table.loc[table["status"] != "ok", ["model_flux", "model_flux_jy", "a50_pixels", "delta_plus"]] = np.nan
    return table


def test_model_flux_columns_scaled_first_then_jy_where_every_set_has_it():
    rng = np.random.default_rng(0)
    lotss, first = _pybdsf_table(20, rng, jy=True), _pybdsf_table(20, rng)
    assert model_flux_columns(lotss) == ["model_flux", "model_flux_jy"]
    assert model_flux_columns(lotss, first) == ["model_flux"]  # the paper's scaled flux is always compared
    assert model_flux_columns(lotss.drop(columns="model_flux_jy")) == ["model_flux"]


def test_pybdsf_rows_follow_their_image_index():
    rng = np.random.default_rng(0)
    table = _pybdsf_table(12, rng).sample(frac=1.0, random_state=1)  # row order is not image order
    per_image = sm.pybdsf_per_image(table, 12, flux_columns=["model_flux"])
    ok = table["status"] == "ok"
    np.testing.assert_array_equal(np.isfinite(per_image["a50_pixels"]), np.isin(np.arange(12), table["index"][ok]))
    row = table[ok].iloc[0]
    assert per_image["delta_plus"][int(row["index"])] == row["delta_plus"]
    with pytest.raises(InputFileError, match="outside"):
        sm.pybdsf_per_image(table, 5, flux_columns=["model_flux"])


def test_matched_table_partitions_images_and_pybdsf_rows_alike():
    rng = np.random.default_rng(0)
    n, m = 40, 14
    real = {"pixel_value": rng.random((n, 10)), "image_mean": rng.random(n), "image_std": rng.random(n)}
    gen = {"pixel_value": rng.random((m, 10)), "image_mean": rng.random(m), "image_std": rng.random(m)}
    real.update(sm.pybdsf_per_image(_pybdsf_table(n, rng), n, flux_columns=["model_flux"]))
    gen.update(sm.pybdsf_per_image(_pybdsf_table(m, rng), m, flux_columns=["model_flux"]))
    table = sm.matched_distance_table(real, gen, repeats=3, seed=9)
    assert list(table.columns) == sm.DISTANCE_COLUMNS
    assert list(table["distribution"].unique()) == ["pixel_value", "image_mean", "image_std", "model_flux", "a50_pixels",
                                                    "delta_plus"]
    t = table.set_index(["distribution", "metric"])
    assert set(t["n_reference"]) == {n - m} and set(t["n_compared"]) == {m} and set(t["repeats"]) == {3}
    splits = size_matched_splits(n, [m], repeats=3, seed=9)
    floors = [scipy.stats.wasserstein_distance(real["image_mean"][s.reference], real["image_mean"][s.held_out]) for s in splits]
    assert t.loc[("image_mean", "W1"), "real_vs_real_floor"] == pytest.approx(np.median(floors))
    assert t.loc[("image_mean", "W1"), "floor_sd"] == pytest.approx(np.std(floors, ddof=1))
    gens = [scipy.stats.wasserstein_distance(real["image_mean"][s.reference], gen["image_mean"]) for s in splits]
    assert t.loc[("image_mean", "W1"), "real_vs_generated"] == pytest.approx(np.median(gens))
    # PyBDSF values follow the image rows: NaN (not modelled) rows drop out of A and B alike.
    ks = []
    for s in splits:
        a, b = real["delta_plus"][s.reference], real["delta_plus"][s.held_out]
        ks.append(scipy.stats.ks_2samp(a[np.isfinite(a)], b[np.isfinite(b)]).statistic)
    assert t.loc[("delta_plus", "KS"), "real_vs_real_floor"] == pytest.approx(np.median(ks))
    assert t.loc[("delta_plus", "KS"), "unit"] == "dimensionless"
    assert t["real_vs_classical"].isna().all()


def _image_proxies(images, rng):
    """PyBDSF-like table and classifier-like embeddings computed from real images.

    Not PyBDSF (which would take minutes): quantities with the same kind of
    variety (flux above a threshold, area holding half of it, residual below
    it, some failures), and a fixed random ReLU projection of the block-averaged
    image as a 32-d embedding.
    """
    n = len(images)
    flat = images.reshape(n, -1)
    source = np.where(flat > 0.2, flat, 0.0)
    cum = np.cumsum(-np.sort(-source, axis=1), axis=1)
    table = pd.DataFrame({
        "index": np.arange(n),
        "status": np.where((np.arange(n) % 11 == 5) | (flat.max(axis=1) < 0.3), "failed", "ok"),
        "model_flux": source.sum(axis=1) / 10,
        "model_flux_jy": source.sum(axis=1) / 10 * rng.lognormal(-5, 1, n),
        "a50_pixels": (cum < 0.5 * cum[:, -1:]).sum(axis=1) + 1.0,
        "delta_plus": np.where(flat <= 0.2, flat, 0.0).sum(axis=1),
    })
    blocks = images.reshape(n, 10, 8, 10, 8).mean(axis=(2, 4)).reshape(n, 100)
    embeddings = np.tanh(blocks @ np.random.default_rng(2).normal(size=(100, 32)))
    return table, embeddings


def test_null_generated_set_is_at_the_floor_for_every_metric(first_zip):
    """NULL TEST: "generated" := held-out real FIRST images; every row of the summary table sits at its floor.

    Over 16 seeded draws (real and "generated" parts of 900 real crops, at
    M < N/2 and M > N/2) the median ``generated_over_floor`` is within
    0.8-1.25 for W1 and KS of every distribution and for the Frechet
    distance.  The KID is unbiased, so its floor is about 0 and its ratio is
    not given; its median z is about 0 instead.
    """
    images = first_crops(first_zip, split="train", n=900, seed=0)
    rng = np.random.default_rng(1)
    table, embeddings = _image_proxies(images, rng)
    per_image = sm.image_distributions(images, pixels_per_image=50, rng=rng)
    per_image.update(sm.pybdsf_per_image(table, len(images), flux_columns=model_flux_columns(table)))
    ratios, z = [], []
    for seed in range(16):
        n_real = 650 if seed % 2 == 0 else 400  # M = 250 < N / 2, and M = 500 > N / 2 (subsampled)
        order = np.random.default_rng([99, seed]).permutation(len(images))
        real, gen = order[:n_real], order[n_real:]
        summary = sm.summary_table(
            sm.matched_distance_table({k: v[real] for k, v in per_image.items()},
                                      {k: v[gen] for k, v in per_image.items()}, repeats=10, seed=seed),
            sm.feature_distance_table(embeddings[real], embeddings[gen], repeats=10, seed=seed),
        )
        ratios.append(summary["generated_over_floor"].to_numpy())
        z.append(summary["generated_floor_z"].to_numpy())
    rows = list(summary["distribution"] + "/" + summary["metric"])
    assert len(rows) == 2 * 7 + 2  # every distribution, Jy flux included, and the two feature distances
    median_ratio = dict(zip(rows, np.median(ratios, axis=0)))
    median_z = dict(zip(rows, np.median(z, axis=0)))
    for row, value in median_ratio.items():
        if row == "embeddings/KID":
            assert np.isnan(value)
            assert abs(median_z[row]) < 1.0
        else:
            assert 0.8 < value < 1.25, (row, value)


def test_summary_table_compares_generated_floor_and_classical(tmp_path):
    rng = np.random.default_rng(1)
    real = {"image_mean": rng.normal(0, 1, 800), "delta_plus": rng.normal(0, 1, 800)}
    gen = {"image_mean": rng.normal(0.5, 1, 400), "delta_plus": rng.normal(0.1, 1, 400)}
    classical = {"image_mean": rng.normal(1.0, 1, 500), "delta_plus": rng.normal(0.0, 3, 500)}
    emb = {"real": rng.normal(0, 1, (800, 4)), "gen": rng.normal(0.4, 1, (400, 4)), "cla": rng.normal(1, 1, (500, 4))}
    distances = sm.matched_distance_table(real, gen, classical=classical, repeats=5, seed=3)
    features = sm.feature_distance_table(emb["real"], emb["gen"], classical=emb["cla"], repeats=5, seed=3)
    table = sm.summary_table(distances, features)
    assert list(table["metric"]) == ["W1", "KS", "W1", "KS", "Frechet", "KID"]
    # Both compared sets at the same size m = min(400, 500, 800 // 2).
    assert set(table["n_compared"]) == {400} and set(table["n_reference"]) == {400}
    row = table[(table["distribution"] == "image_mean") & (table["metric"] == "W1")].iloc[0]
    assert row["real_vs_generated"] == pytest.approx(0.5, abs=0.15)  # W1 of a shift is the shift
    assert bool(row["generated_beats_classical"])
    assert row["generated_over_floor"] == pytest.approx(row["real_vs_generated"] / row["real_vs_real_floor"])
    assert row["generated_floor_z"] == pytest.approx((row["real_vs_generated"] - row["real_vs_real_floor"]) / row["floor_sd"])
    assert row["generated_over_floor"] > 3 and row["classical_over_floor"] > row["generated_over_floor"]
    assert row["classical_floor_z"] == pytest.approx((row["real_vs_classical"] - row["real_vs_real_floor"]) / row["floor_sd"])
    kid = table.iloc[-1]
    assert np.isnan(kid["generated_over_floor"]) and kid["generated_floor_z"] > 3  # unbiased: read the z
    assert bool(kid["generated_beats_classical"])
    no_classical = sm.summary_table(sm.matched_distance_table(real, gen, repeats=3, seed=3))
    assert no_classical["real_vs_classical"].isna().all() and no_classical["generated_beats_classical"].isna().all()
    assert no_classical["classical_floor_z"].isna().all()
    sm.write_table_html(table, tmp_path / "t.html", title="x <y>", notes=["a & b"])
    page = (tmp_path / "t.html").read_text()
    assert "<table" in page and "x &lt;y&gt;" in page and "a &amp; b" in page and "KID" in page


def _pybdsf(image_set, out_csv, models):
    subprocess.run(
        [sys.executable, "-m", "radiogen.cli", "pybdsf", "shard", "--image-set", str(image_set), "--shard", "0",
         "--n-shards", "1", "--output", str(out_csv), "--models", str(models), "--seed", "5"],
        check=True, capture_output=True,
    )


@pytest.mark.slow
def test_evaluate_cli_chain_on_real_first_images(first_zip, tmp_path):
    """size-matched distances, similarity and summary on real crops with real PyBDSF tables."""
    real = tmp_path / "real.h5"
    gen = tmp_path / "gen.h5"
    first_set(first_zip, real, split="train", n=30, seed=0)
    first_set(first_zip, gen, split="test", n=12, seed=1, shift=0.02)
    for name in ("real", "gen"):
        _pybdsf(tmp_path / f"{name}.h5", tmp_path / f"{name}.csv", tmp_path / f"{name}_models.h5")
    table = pd.read_csv(tmp_path / "real.csv")
    assert len(table) == 30 and (table["status"] == "ok").sum() >= 15
    settings = json.dumps({"max_pixels": 20000, "floor_repeats": 3})
    assert main(["evaluate", "distances", "--real", str(real), "--generated", str(gen),
                 "--real-pybdsf", str(tmp_path / "real.csv"), "--generated-pybdsf", str(tmp_path / "gen.csv"),
                 "--settings", settings, "--seed", "1", "--output", str(tmp_path / "d.csv")]) == 0
    d = pd.read_csv(tmp_path / "d.csv").set_index(["distribution", "metric"])
    # FIRST sets have no peak flux: the scaled model flux only.
    assert list(d.index.get_level_values(0).unique()) == ["pixel_value", "image_mean", "image_std", "model_flux",
                                                          "a50_pixels", "delta_plus"]
    # m = 12 generated images against A = 30 - 12 real ones; the held-out B has 12 too.
    assert set(d["n_reference"]) == {18} and set(d["n_compared"]) == {12} and set(d["repeats"]) == {3}
    # The generated stand-in is 0.02 brighter: the image-mean W1 is about that shift.
    assert d.loc[("image_mean", "W1"), "real_vs_generated"] == pytest.approx(0.02, abs=0.01)
    assert main(["evaluate", "summary", "--distances", str(tmp_path / "d.csv"), "--title", "test",
                 "--output-csv", str(tmp_path / "s.csv"), "--output-html", str(tmp_path / "s.html")]) == 0
    s = pd.read_csv(tmp_path / "s.csv")
    assert len(s) == 12 and s["real_vs_real_floor"].notna().all() and s["generated_over_floor"].notna().all()
    assert "p-value" in (tmp_path / "s.html").read_text()  # the notes say why there are none
    sim_settings = json.dumps({"n_generated": 10, "n_reference": 15, "n_show": 3})
    assert main(["evaluate", "similarity", "--generated", str(gen), "--training", str(real), "--settings", sim_settings,
                 "--seed", "1", "--output-json", str(tmp_path / "m.json"), "--output-html", str(tmp_path / "m.html"),
                 "--output-figure", str(tmp_path / "m.png"), "--output-h5", str(tmp_path / "m.h5")]) == 0
    memo = json.loads((tmp_path / "m.json").read_text())
    assert memo["n_generated"] == 10 and memo["n_training"] == 27 and memo["n_reference"] == 15
    with h5py.File(tmp_path / "m.h5") as h5:
        # Indices are rows of the training *file* (only /split == 0 rows are candidates).
        assert np.all(h5["nearest_index"][()] % 10 != 9)
        assert h5["nearest_ssim"].shape == (10, 5)
        nearest = h5["nearest_ssim"][()].max(axis=1)
    # the memorisation number is the share of generated images whose nearest training
    # image is closer than the reference percentile, recomputed here from the stored SSIMs
    assert -1.0 < memo["threshold_ssim"] <= 1.0
    assert memo["fraction"] == pytest.approx(np.mean(nearest > memo["threshold_ssim"]))
    assert memo["n_above"] == np.count_nonzero(nearest > memo["threshold_ssim"])


def test_cli_rejects_unknown_settings(tmp_path, first_zip):
    first_set(first_zip, tmp_path / "real.h5", split="train", n=4, seed=0)
    code = main(["evaluate", "distances", "--real", str(tmp_path / "real.h5"), "--generated", str(tmp_path / "real.h5"),
                 "--settings", '{"max_pixel": 5}', "--output", str(tmp_path / "f.csv")])
    assert code == 1 and not (tmp_path / "f.csv").exists()
