"""Summary tables (W1/KS vs noise floor and classical baseline) and the evaluate-* CLI chain."""

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
from radiogen.evaluation import summary as sm
from radiogen.evaluation.distances import split_halves


def first_set(zip_path, path, *, split: str, n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """An image-set HDF5 of ``n`` real FIRST crops (80x80, [0, 1]); ``shift`` brightens them."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(".png") and f"/{split}/" in m)
        pick = sorted(np.random.default_rng(seed).choice(len(names), size=n, replace=False))
        images = []
        for i in pick:
            image = np.asarray(Image.open(io.BytesIO(zf.read(names[i]))).convert("L"), dtype=np.float32)
            c = (image.shape[0] - 80) // 2
            images.append(image[c : c + 80, c : c + 80] / 255.0)
    images = np.clip(np.stack(images) + shift, 0.0, 1.0).astype(np.float32)
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
    stats = sm.image_set_distributions(tmp_path / "real.h5", max_pixels=30 * 100, seed=1, chunk=7)
    assert stats["pixel_value"].shape == (30, 100)
    np.testing.assert_allclose(stats["image_mean"], images.reshape(30, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(stats["image_std"], images.reshape(30, -1).std(axis=1), rtol=1e-5)
    # Each row's sample comes from its own image.
    for row in (0, 17):
        assert np.all(np.isin(stats["pixel_value"][row], images[row]))
    every = sm.image_set_distributions(tmp_path / "real.h5", max_pixels=None, seed=1)
    np.testing.assert_array_equal(np.sort(every["pixel_value"].ravel()), np.sort(images.ravel()))


def _pybdsf_table(n, rng, *, scale=1.0):
    table = pd.DataFrame({
        "index": np.arange(n),
        "status": np.where(np.arange(n) % 7 == 3, "failed", "ok"),
        "model_flux": rng.lognormal(0, 1, n) * scale,
        "model_flux_jy": np.full(n, np.nan),
        "a50_pixels": rng.integers(5, 60, n).astype(float),
        "delta_plus": rng.gamma(2.0, 3.0, n),
    })
    table.loc[table["status"] != "ok", ["model_flux", "a50_pixels", "delta_plus"]] = np.nan
    return table


def test_noise_floor_splits_images_and_pybdsf_rows_alike():
    rng = np.random.default_rng(0)
    stats = {"pixel_value": rng.random((40, 10)), "image_mean": rng.random(40), "image_std": rng.random(40)}
    table = _pybdsf_table(40, rng)
    assert sm.flux_column_for(table) == "model_flux"
    floor = sm.noise_floor_table(stats, table, flux_column="model_flux", seed=9).set_index("distribution")
    a, b = split_halves(40, seed=9)
    assert floor.loc["image_mean", "w1"] == pytest.approx(scipy.stats.wasserstein_distance(stats["image_mean"][a], stats["image_mean"][b]))
    assert floor.loc["pixel_value", "n_a"] == 200
    ok_a = table[table["index"].isin(a) & (table["status"] == "ok")]
    ok_b = table[table["index"].isin(b) & (table["status"] == "ok")]
    assert floor.loc["a50_pixels", "n_a"] == len(ok_a) and floor.loc["a50_pixels", "n_b"] == len(ok_b)
    assert floor.loc["delta_plus", "ks"] == pytest.approx(scipy.stats.ks_2samp(ok_a["delta_plus"], ok_b["delta_plus"]).statistic)


def test_summary_table_compares_generated_floor_and_classical(tmp_path):
    rng = np.random.default_rng(1)
    real = {"image_mean": rng.normal(0, 1, 400), "delta_plus": rng.normal(0, 1, 400)}
    gen = {"image_mean": rng.normal(0.05, 1, 400), "delta_plus": rng.normal(0.1, 1, 400)}
    classical = {"image_mean": rng.normal(1.0, 1, 400), "delta_plus": rng.normal(0.0, 3, 400)}
    floor = sm.distance_table({k: v[:200] for k, v in real.items()}, {k: v[200:] for k, v in real.items()})
    table = sm.summary_table(sm.distance_table(real, gen), floor, classical=sm.distance_table(real, classical),
                             frechet={"generated": 2.0, "real_halves": 1.0, "classical": 5.0, "n_real": 400, "n_generated": 400})
    assert list(table["metric"]) == ["W1", "KS", "W1", "KS", "Frechet"]
    row = table[(table["distribution"] == "image mean") & (table["metric"] == "W1")].iloc[0]
    assert row["real_vs_generated"] == pytest.approx(scipy.stats.wasserstein_distance(real["image_mean"], gen["image_mean"]))
    assert bool(row["generated_beats_classical"])
    assert row["generated_over_floor"] == pytest.approx(row["real_vs_generated"] / row["real_vs_real_halves"])
    fd = table.iloc[-1]
    assert fd["generated_over_floor"] == 2.0 and bool(fd["generated_beats_classical"])
    no_classical = sm.summary_table(sm.distance_table(real, gen), floor)
    assert no_classical["real_vs_classical"].isna().all() and no_classical["generated_beats_classical"].isna().all()
    sm.write_table_html(table, tmp_path / "t.html", title="x <y>", notes=["a & b"])
    page = (tmp_path / "t.html").read_text()
    assert "<table" in page and "x &lt;y&gt;" in page and "a &amp; b" in page and "Frechet" in page


def _pybdsf(image_set, out_csv, models):
    subprocess.run(
        [sys.executable, "-m", "radiogen.cli", "pybdsf-shard", "--image-set", str(image_set), "--shard", "0",
         "--n-shards", "1", "--output", str(out_csv), "--models", str(models), "--seed", "5"],
        check=True, capture_output=True,
    )


@pytest.mark.slow
def test_evaluate_cli_chain_on_real_first_images(first_zip, tmp_path):
    """distances, noise floor, similarity and summary on real crops with real PyBDSF tables."""
    real = tmp_path / "real.h5"
    gen = tmp_path / "gen.h5"
    first_set(first_zip, real, split="train", n=30, seed=0)
    first_set(first_zip, gen, split="test", n=12, seed=1, shift=0.02)
    for name in ("real", "gen"):
        _pybdsf(tmp_path / f"{name}.h5", tmp_path / f"{name}.csv", tmp_path / f"{name}_models.h5")
    table = pd.read_csv(tmp_path / "real.csv")
    assert len(table) == 30 and (table["status"] == "ok").sum() >= 15
    settings = json.dumps({"max_pixels": 20000})
    assert main(["evaluate-distances", "--real", str(real), "--other", str(gen), "--real-pybdsf", str(tmp_path / "real.csv"),
                 "--other-pybdsf", str(tmp_path / "gen.csv"), "--settings", settings, "--seed", "1",
                 "--output", str(tmp_path / "d.csv")]) == 0
    assert main(["evaluate-noise-floor", "--real", str(real), "--real-pybdsf", str(tmp_path / "real.csv"),
                 "--settings", settings, "--seed", "1", "--output", str(tmp_path / "floor.csv")]) == 0
    d = pd.read_csv(tmp_path / "d.csv").set_index("distribution")
    assert list(d.index) == ["pixel_value", "image_mean", "image_std", "model_flux", "a50_pixels", "delta_plus"]
    # The generated stand-in is 0.02 brighter: the image-mean W1 is about that shift.
    assert d.loc["image_mean", "w1"] == pytest.approx(0.02, abs=0.01)
    assert 20000 <= d.loc["pixel_value", "n_a"] < 20000 + 30  # ceil(max_pixels / N) per image
    assert main(["evaluate-summary", "--generated", str(tmp_path / "d.csv"), "--noise-floor", str(tmp_path / "floor.csv"),
                 "--title", "test", "--output-csv", str(tmp_path / "s.csv"), "--output-html", str(tmp_path / "s.html")]) == 0
    s = pd.read_csv(tmp_path / "s.csv")
    assert len(s) == 12 and s["real_vs_real_halves"].notna().all()
    sim_settings = json.dumps({"n_generated": 10, "n_reference": 15, "n_show": 3})
    assert main(["evaluate-similarity", "--generated", str(gen), "--training", str(real), "--settings", sim_settings,
                 "--seed", "1", "--output-json", str(tmp_path / "m.json"), "--output-html", str(tmp_path / "m.html"),
                 "--output-figure", str(tmp_path / "m.png"), "--output-h5", str(tmp_path / "m.h5")]) == 0
    memo = json.loads((tmp_path / "m.json").read_text())
    assert memo["n_generated"] == 10 and memo["n_training"] == 27 and memo["n_reference"] == 15
    assert 0.0 <= memo["fraction"] <= 1.0
    with h5py.File(tmp_path / "m.h5") as h5:
        # Indices are rows of the training *file* (only /split == 0 rows are candidates).
        assert np.all(h5["nearest_index"][()] % 10 != 9)
        assert h5["nearest_ssim"].shape == (10, 5)


def test_cli_rejects_unknown_settings(tmp_path, first_zip):
    first_set(first_zip, tmp_path / "real.h5", split="train", n=4, seed=0)
    code = main(["evaluate-noise-floor", "--real", str(tmp_path / "real.h5"), "--settings", '{"max_pixel": 5}',
                 "--output", str(tmp_path / "f.csv")])
    assert code == 1 and not (tmp_path / "f.csv").exists()
