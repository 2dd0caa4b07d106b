"""lotss published: the authors' LOFAR_Dataset.h5 layout into radiogen's training-set format."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import stats

from radiogen.cli import main
from radiogen.errors import InputFileError
from radiogen.lotss.published import convert_published_dataset
from radiogen.model.data import read_training_set


def _published(path, n=60, *, max_values=False, names=True):
    rng = np.random.default_rng(2)
    peaks = rng.lognormal(-4.0, 1.2, size=n)
    images = rng.normal(0.0, 0.1, size=(n, 16, 16)) * peaks[:, None, None]
    images[:, 8, 8] = peaks  # one bright pixel: the image maximum is the peak
    with h5py.File(path, "w") as h5:
        if max_values:  # images stored scaled, peak kept aside
            h5["images"] = (images / peaks[:, None, None]).astype(np.float32)
            h5["max_values"] = peaks.astype(np.float32)
        else:
            h5["images"] = images.astype(np.float32)
        if names:
            h5["names"] = np.array([f"ILTJ{i:06d}" for i in range(n)], dtype="S")
    return images, peaks


@pytest.mark.parametrize("max_values", [False, True])
def test_published_dataset_becomes_a_training_set(tmp_path, max_values):
    images, peaks = _published(tmp_path / "LOFAR_Dataset.h5", max_values=max_values)
    out = tmp_path / "training_set.h5"
    assert main(["lotss", "published", "--dataset", str(tmp_path / "LOFAR_Dataset.h5"), "--output", str(out),
                 "--seed", "3", "--validation-fraction", "0.2"]) == 0
    data = read_training_set(out)
    assert data.dataset == "lotss" and data.images.shape == (60, 1, 16, 16)
    assert (data.split == 1).sum() == 12
    expected_peaks = peaks.astype(np.float32).astype(np.float64)
    transformed, lam = stats.boxcox(expected_peaks)
    norm = data.normalisation()
    assert norm["boxcox_lambda"] == pytest.approx(lam, rel=1e-9)
    z = (transformed - transformed.mean()) / transformed.std()
    np.testing.assert_allclose(data.context[:, 0], z, rtol=1e-5, atol=1e-5)
    # negative pixels -> 0, min-max scaled: the peak pixel is 1, the minimum 0
    assert np.all(data.images[:, 0, 8, 8] == 1.0) and np.allclose(data.images.min(axis=(1, 2, 3)), 0.0)
    positive = np.clip(images[0], 0, None)
    np.testing.assert_allclose(data.images[0, 0], (positive - positive.min()) / np.ptp(positive), atol=1e-6)
    with h5py.File(out) as h5:
        np.testing.assert_allclose(h5["peak_flux"][()], expected_peaks, rtol=1e-6)
        assert h5["source_name"].asstr()[5] == "ILTJ000005"
        assert h5.attrs["peak_source"] == ("max_values" if max_values else "image maximum")


def test_scaled_images_without_max_values_are_refused(tmp_path):
    path = tmp_path / "LOFAR_Dataset.h5"
    with h5py.File(path, "w") as h5:
        h5["images"] = np.random.default_rng(0).uniform(0, 1, size=(5, 8, 8)).astype(np.float32)
        h5["images"][:, 0, 0] = 1.0
    with pytest.raises(InputFileError, match="peak flux is lost"):
        convert_published_dataset(path, tmp_path / "out.h5", seed=1)
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(InputFileError, match="no /images"):
        with h5py.File(tmp_path / "empty.h5", "w"):
            pass
        convert_published_dataset(tmp_path / "empty.h5", tmp_path / "out.h5", seed=1)


def _dry_run(repo_root, tmp_path, lotss_yaml):
    import os
    import subprocess
    import sys
    from pathlib import Path

    extra = tmp_path / "published.yaml"
    extra.write_text(lotss_yaml)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(bin_dir / "snakemake"), "-n", "--configfile", "config.yaml", str(extra),
         "--config", f"results={tmp_path / 'results'}"],
        cwd=repo_root, capture_output=True, text=True, env=env, timeout=300)


def test_workflow_takes_the_published_training_set(repo_root, tmp_path):
    """lotss.source: published: one published_lotss job makes the main training set, no main cutouts."""
    dataset = tmp_path / "LOFAR_Dataset.h5"
    _published(dataset)
    result = _dry_run(repo_root, tmp_path, f"lotss:\n  source: published\n  published_dataset: {dataset}\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "published_lotss" in result.stdout
    assert "lotss/main/cutouts" not in result.stdout and "lotss/main/selection" not in result.stdout
    assert "lotss/classical/training_set.h5" in result.stdout  # the classical survey still runs
    missing = _dry_run(repo_root, tmp_path, "lotss:\n  source: published\n")
    assert missing.returncode != 0
    assert "lotss.published_dataset" in missing.stdout + missing.stderr


def test_config_check_wants_the_published_dataset(repo_root, tmp_path):
    config = tmp_path / "published.yaml"
    config.write_text("lotss:\n  source: published\n")
    assert main(["config", "check", str(repo_root / "config.yaml"), str(config)]) == 1
    config.write_text(f"lotss:\n  source: published\n  published_dataset: {tmp_path / 'LOFAR_Dataset.h5'}\n")
    assert main(["config", "check", str(repo_root / "config.yaml"), str(config)]) == 0
