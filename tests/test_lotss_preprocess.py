"""Preprocessing into the LoTSS training set: scaling, Box-Cox context, split, file contract."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from scipy import stats

from radiogen.errors import ConfigError, InputFileError
from radiogen.lotss.preprocess import (
    PreprocessSettings,
    boxcox_forward,
    boxcox_inverse,
    fit_boxcox,
    run_preprocess,
    scale_images,
    split_train_validation,
)
from radiogen.lotss.selection import SelectionSettings, run_selection
from test_lotss_selection import real_cutouts, write_cutouts_h5


@pytest.fixture(scope="module")
def selected_file(lotss_dr1_dir, tmp_path_factory):
    """selected.h5 from the selection step run on real DR1 cutouts."""
    root = tmp_path_factory.mktemp("preprocess")
    fields = real_cutouts(lotss_dr1_dir, n_random=20, seed=5)
    src = write_cutouts_h5(root / "cutouts.h5", fields)
    # A lower S/N cut keeps enough real images to fit Box-Cox meaningfully.
    run_selection(
        src, table_path=root / "t.csv", per_image_path=root / "p.csv",
        selected_path=root / "selected.h5", settings=SelectionSettings(snr_min=2.0),
    )
    return root / "selected.h5"


def test_scale_images_clips_negatives_and_keeps_the_peak(selected_file):
    with h5py.File(selected_file) as h5:
        raw = h5["images"][()]
    assert len(raw) >= 10 and (raw < 0).any()
    scaled, peak = scale_images(raw)
    assert scaled.dtype == np.float32 and scaled.shape == raw.shape
    np.testing.assert_allclose(scaled.max(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(scaled.min(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(peak, raw.max(axis=(1, 2)))
    # Real LoTSS noise has negative pixels, so min after clipping is 0 and the
    # physical image is images * peak_flux with negatives set to 0.
    np.testing.assert_allclose(scaled * peak[:, None, None], np.maximum(raw, 0), atol=1e-6 * peak.max())
    # Pixels that were negative are exactly 0.
    assert np.all(scaled[raw < 0] == 0)


@pytest.mark.parametrize("lam", [None, -0.23, 0.0, 0.5])
def test_boxcox_round_trip(lam):
    rng = np.random.default_rng(0)
    peak = rng.lognormal(mean=np.log(3e-3), sigma=1.5, size=2000)  # Jy/beam
    lam_fit, mean, std = fit_boxcox(peak, lam=lam)
    if lam is None:
        _, expected = stats.boxcox(peak)
        assert lam_fit == pytest.approx(expected)
    else:
        assert lam_fit == lam
    z = boxcox_forward(peak, lam=lam_fit, mean=mean, std=std)
    assert z.mean() == pytest.approx(0.0, abs=1e-9)
    assert z.std() == pytest.approx(1.0, rel=1e-9)
    np.testing.assert_allclose(boxcox_inverse(z, lam=lam_fit, mean=mean, std=std), peak, rtol=1e-10)
    # Scipy's own transform agrees with the unstandardised forward transform.
    np.testing.assert_allclose(z * std + mean, stats.boxcox(peak, lmbda=lam_fit), rtol=1e-9, atol=1e-12)


def test_boxcox_inverse_outside_the_domain_is_nan():
    # For lambda < 0 the transform is bounded above by -1/lambda.
    lam, mean, std = -0.5, 0.0, 1.0
    assert np.isnan(boxcox_inverse(np.array([2.5]), lam=lam, mean=mean, std=std)).all()
    assert np.isfinite(boxcox_inverse(np.array([1.5]), lam=lam, mean=mean, std=std)).all()
    assert np.isnan(boxcox_forward(np.array([0.0, -1.0]), lam=lam, mean=mean, std=std)).all()


def test_split_is_seeded_and_has_the_requested_size():
    a = split_train_validation(1001, validation_fraction=0.1, seed=7)
    b = split_train_validation(1001, validation_fraction=0.1, seed=7)
    c = split_train_validation(1001, validation_fraction=0.1, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and set(np.unique(a)) == {0, 1}
    assert a.sum() == 100 and c.sum() == 100
    assert split_train_validation(10, validation_fraction=0.0, seed=1).sum() == 0


def test_training_set_contract(selected_file, tmp_path):
    out = tmp_path / "training_set.h5"
    summary = run_preprocess(selected_file, out, seed=123, figure_path=tmp_path / "fig.png")
    with h5py.File(selected_file) as h5:
        raw = h5["images"][()]
        names = list(h5["source_name"].asstr()[()])
        snr = h5["snr_sigma"][()]
    n = len(raw)
    with h5py.File(out) as h5:
        images = h5["images"][()]
        assert images.dtype == np.float32 and images.shape == (n, 80, 80)
        assert images.min() == 0.0 and np.allclose(images.max(axis=(1, 2)), 1.0)
        assert h5["split"].dtype == np.uint8 and h5["split"].shape == (n,)
        assert h5["split"][()].sum() == round(0.1 * n)
        assert h5["context"].dtype == np.float32 and h5["context"].shape == (n, 1)
        assert h5["peak_flux"].dtype == np.float32
        np.testing.assert_allclose(h5["peak_flux"][()], raw.max(axis=(1, 2)), rtol=1e-6)
        assert list(h5["source_name"].asstr()[()]) == names
        np.testing.assert_allclose(h5["snr_sigma"][()], snr)
        attrs = dict(h5.attrs)
        assert attrs["dataset"] == "lotss"
        assert (attrs["pixel_scale_arcsec"], attrs["beam_arcsec"], attrs["frequency_hz"]) == (1.5, 6.0, 144e6)
        assert attrs["seed"] == 123
        lam, mean, std = attrs["boxcox_lambda"], attrs["boxcox_mean"], attrs["boxcox_std"]
        assert (lam, mean, std) == (summary["boxcox_lambda"], summary["boxcox_mean"], summary["boxcox_std"])
        # The stored parameters reproduce the context and invert it to the peak flux.
        context = h5["context"][:, 0].astype(np.float64)
        np.testing.assert_allclose(
            context, boxcox_forward(h5["peak_flux"][()], lam=lam, mean=mean, std=std), atol=1e-5
        )
        np.testing.assert_allclose(
            boxcox_inverse(context, lam=lam, mean=mean, std=std), h5["peak_flux"][()], rtol=1e-4
        )
        assert abs(context.mean()) < 1e-5 and abs(context.std() - 1) < 1e-5
        assert json.loads(attrs["preprocess_settings"])["validation_fraction"] == 0.1
        split = h5["split"][()]
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    # Same seed -> identical file contents; fixed lambda is honoured.
    out2 = tmp_path / "again.h5"
    run_preprocess(selected_file, out2, seed=123, settings=PreprocessSettings(boxcox_lambda=-0.23))
    with h5py.File(out2) as h5:
        np.testing.assert_array_equal(h5["split"][()], split)
        np.testing.assert_array_equal(h5["images"][()], images)
        assert h5.attrs["boxcox_lambda"] == -0.23 and not h5.attrs["boxcox_lambda_fitted"]


def test_bad_selected_files(tmp_path, selected_file):
    with pytest.raises(InputFileError, match="does not exist"):
        run_preprocess(tmp_path / "missing.h5", tmp_path / "o.h5", seed=1)
    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as h5:
        h5["images"] = np.zeros((3, 6400), np.float32)
        h5.create_dataset("source_name", data=np.array(["a", "b", "c"], object),
                          dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(InputFileError, match=r"flat\.h5: /images must have shape"):
        run_preprocess(flat, tmp_path / "o.h5", seed=1)
    nan = tmp_path / "nan.h5"
    with h5py.File(selected_file) as src, h5py.File(nan, "w") as h5:
        images = src["images"][()]
        images[1, 3, 3] = np.nan
        h5["images"] = images
        h5.create_dataset("source_name", data=src["source_name"][()], dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(InputFileError, match=r"nan\.h5: image 1 .* contains NaN"):
        run_preprocess(nan, tmp_path / "o.h5", seed=1)
    names = tmp_path / "names.h5"
    with h5py.File(names, "w") as h5:
        h5["images"] = np.zeros((3, 80, 80), np.float32)
    with pytest.raises(InputFileError, match=r"names\.h5: missing required dataset\(s\) source_name"):
        run_preprocess(names, tmp_path / "o.h5", seed=1)
    assert not (tmp_path / "o.h5").exists()


def test_cli_preprocess(selected_file, tmp_path):
    out = tmp_path / "ts.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "radiogen.cli", "lotss", "preprocess", "--selected", str(selected_file),
         "--output", str(out), "--seed", "5", "--settings", json.dumps({"validation_fraction": 0.2})],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out) as h5:
        assert h5["split"][()].sum() == round(0.2 * len(h5["split"]))
    proc = subprocess.run(
        [sys.executable, "-m", "radiogen.cli", "lotss", "preprocess", "--selected", str(selected_file),
         "--output", str(out), "--seed", "5", "--settings", '{"validation_fraction": 1.5}'],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1 and "validation_fraction" in proc.stderr


def test_settings_match_schema_defaults(repo_root):
    schema = yaml.safe_load((repo_root / "workflow/schemas/lotss-preprocess.schema.yaml").read_text())
    # a nested block (feret) defaults to {}: its own properties carry the defaults
    defaults = {k: {kk: vv["default"] for kk, vv in v["properties"].items()} if "properties" in v else v["default"]
                for k, v in schema["properties"].items()}
    assert defaults == dataclasses.asdict(PreprocessSettings())
    with pytest.raises(ConfigError, match="lambda_boxcox"):
        PreprocessSettings.from_mapping({"lambda_boxcox": 1})


def test_size_context_is_the_standardised_boxcox_of_the_catalogue_las(selected_file, tmp_path):
    from radiogen.model.data import read_training_set

    out = tmp_path / "training_set.h5"
    settings = PreprocessSettings(context="peak_flux+size", size_source="las", size_floor_arcsec=2.0)
    run_preprocess(selected_file, out, settings=settings, seed=3)
    with h5py.File(out) as h5:
        context, size = h5["context"][()], h5["size"][()]
        attrs = dict(h5.attrs)
        peak = h5["peak_flux"][()]
    assert context.shape == (len(size), 2)
    assert json.loads(attrs["context_names"]) == ["peak_flux", "size"]
    norm = {k: attrs[f"size_boxcox_{k}"] for k in ("lambda", "mean", "std")}
    back = boxcox_inverse(context[:, 1], lam=norm["lambda"], mean=norm["mean"], std=norm["std"])
    np.testing.assert_allclose(back, np.maximum(size, 2.0), rtol=1e-4)
    assert context[:, 1].mean() == pytest.approx(0.0, abs=1e-4) and context[:, 1].std() == pytest.approx(1.0, rel=1e-3)
    flux_back = boxcox_inverse(context[:, 0], lam=attrs["boxcox_lambda"], mean=attrs["boxcox_mean"],
                               std=attrs["boxcox_std"])
    np.testing.assert_allclose(flux_back, peak, rtol=1e-4)
    data = read_training_set(out)
    assert data.context_names() == ["peak_flux", "size"]
    assert data.size_normalisation() == pytest.approx(
        {"boxcox_lambda": norm["lambda"], "boxcox_mean": norm["mean"], "boxcox_std": norm["std"]})
    hist = data.context_histogram_2d(bins=5)
    assert hist["counts"].shape == (5, 5) and hist["counts"].sum() == len(data.train_index)
    # the paper's peak-flux-only context keeps one column and its old digest layout
    run_preprocess(selected_file, tmp_path / "flux_only.h5", settings=PreprocessSettings(), seed=3)
    flux_only = read_training_set(tmp_path / "flux_only.h5")
    assert flux_only.context_dim == 1 and flux_only.context_names() == ["peak_flux"]
    assert flux_only.size_normalisation() is None and flux_only.context_histogram_2d() is None


def test_size_context_needs_a_catalogue_las(selected_file, tmp_path):
    bare = tmp_path / "bare.h5"
    with h5py.File(selected_file) as src, h5py.File(bare, "w") as dst:
        for name in src:
            if name != "catalogue":
                src.copy(name, dst)
        dst.attrs.update(dict(src.attrs))
    with pytest.raises(InputFileError, match="bare.h5: lotss.preprocess.context asks for size"):
        run_preprocess(bare, tmp_path / "t.h5", settings=PreprocessSettings(context="peak_flux+size",
                                                                            size_source="las"), seed=0)
    with pytest.raises(ConfigError, match="lotss.preprocess.context"):
        PreprocessSettings(context="size")
    with pytest.raises(ConfigError, match="lotss.preprocess.size_source"):
        PreprocessSettings(context="peak_flux+size", size_source="DC_Maj")
    with pytest.raises(ConfigError, match="feret: unknown key\\(s\\) threshold"):
        PreprocessSettings.from_mapping({"feret": {"threshold": 3}})
    with pytest.raises(ConfigError, match="feret.closing_px"):
        PreprocessSettings.from_mapping({"feret": {"closing_px": 0}})


def test_feret_size_context_is_what_the_evaluation_measures_on_the_stored_images(selected_file, tmp_path):
    """The default size source: the Feret size of each scaled image, recorded with its settings."""
    from radiogen.evaluation.size import measured_sizes, read_feret_settings
    from radiogen.lotss.sizes import FeretSettings

    out = tmp_path / "training_set.h5"
    feret = {"island_threshold_sigma": 3.0, "peak_threshold_sigma": 5.0, "island_radius_px": 25.0,
             "closing_px": 3, "min_island_px": 4}
    settings = PreprocessSettings.from_mapping({"context": "peak_flux+size", "feret": feret})
    assert settings.size_source == "feret"
    run_preprocess(selected_file, out, settings=settings, seed=3)
    with h5py.File(out) as h5:
        images, size, context = h5["images"][()], h5["size"][()], h5["context"][()]
        las = h5["las"][()]
        attrs = dict(h5.attrs)
        assert "Feret" in h5["size"].attrs["meaning"]
    assert attrs["size_source"] == "feret" and json.loads(attrs["size_feret_settings"]) == feret
    assert read_feret_settings(out) == FeretSettings(**feret)
    # the evaluation's measure of the stored images gives back the conditioning sizes (stored as float32)
    np.testing.assert_allclose(measured_sizes(images, pixel_scale_arcsec=attrs["pixel_scale_arcsec"],
                                              settings=read_feret_settings(out)), size, rtol=1e-6)
    assert np.all(size >= attrs["pixel_scale_arcsec"]) and len(size) >= 5
    norm = {k: attrs[f"size_boxcox_{k}"] for k in ("lambda", "mean", "std")}
    back = boxcox_inverse(context[:, 1], lam=norm["lambda"], mean=norm["mean"], std=norm["std"])
    np.testing.assert_allclose(back, np.maximum(size, settings.size_floor_arcsec), rtol=1e-4)
    # the image measure is not the catalogue's deconvolved LAS: it adds about a beam for a compact source
    assert np.isfinite(las).sum() >= 5 and np.nanmedian(size - las) > 0
