"""The evaluation rules run under Snakemake and `snakemake --report` builds one HTML file.

The real rule files (common.smk and evaluate.smk, with the real captions and
config schemas) run the class-conditioning, similarity, size-matched distance,
feature-distance (Frechet, KID), summary and overview rules on small real inputs made here (FIRST crops, LoTSS DR1 cutouts,
an untrained classifier of the real format, PyBDSF tables from the real PyBDSF
runner), then build the report.  The upstream rule files are left out so that
the pre-made inputs are source files; the report of the whole workflow is
checked by the end-to-end run of the default configuration.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

CLASS_NAMES = ["FRI", "FRII", "Compact", "Bent"]
SPLITS = ["train", "valid", "test"]
ATTRS = {
    "first": {"dataset": "first", "pixel_scale_arcsec": 1.8, "beam_arcsec": 5.4, "frequency_hz": 1.4e9},
    "lotss": {"dataset": "lotss", "pixel_scale_arcsec": 1.5, "beam_arcsec": 6.0, "frequency_hz": 144e6},
}
TARGETS = [
    "results/evaluation/classes/accuracy.html",
    "results/evaluation/similarity/first_memorisation.html",
    "results/evaluation/similarity/lotss_memorisation.html",
    "results/evaluation/summary/first.html",
    "results/evaluation/summary/lotss.html",
    "results/evaluation/overview.html",
]


def _first_images(zip_path):
    """All FIRST test/valid/train PNG names with their label and split."""
    from PIL import Image

    out = []
    with zipfile.ZipFile(zip_path) as zf:
        for split_value, split in enumerate(SPLITS):
            for label, cls in enumerate(CLASS_NAMES):
                names = sorted(m for m in zf.namelist() if m.endswith(".png") and f"/{split}/{cls}/" in m)
                for name in names[:2]:
                    image = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L"), dtype=np.float32)
                    c = (image.shape[0] - 80) // 2
                    out.append((image[c : c + 80, c : c + 80] / 255.0, label, split_value))
    return out


def _write_set(path, images, *, dataset, extra=None, attrs=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["images"] = np.asarray(images, dtype=np.float32)
        for key, value in (extra or {}).items():
            h5[key] = value
        for key, value in {**ATTRS[dataset], **(attrs or {})}.items():
            h5.attrs[key] = value


def _lotss_tiles(fits_path, offset):
    from astropy.io import fits

    data = fits.getdata(fits_path).astype(np.float64)
    tiles, peaks = [], []
    for y in range(offset, data.shape[0] - 79, 80):
        for x in range(offset, data.shape[1] - 79, 80):
            tile = data[y : y + 80, x : x + 80]
            lo, hi = tile.min(), tile.max()
            tiles.append((tile - lo) / (hi - lo))
            peaks.append(hi)
    return np.array(tiles[:10]), np.array(peaks[:10])


def _make_inputs(root: Path, first_zip: Path, lotss_dir: Path, guidance_values) -> None:
    import torch

    from radiogen.classifier import MorphologyClassifier, save_classifier
    from radiogen.evaluation.pybdsf_shards import run_shard

    res = root / "results"
    rows = _first_images(first_zip)
    images = np.stack([r[0] for r in rows])
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    splits = np.array([r[2] for r in rows], dtype=np.uint8)
    _write_set(res / "first" / "dataset.h5", images, dataset="first",
               extra={"label": labels, "first_split": splits}, attrs={"class_names": json.dumps(CLASS_NAMES)})
    train = splits == 0
    onehot = np.eye(4, dtype=np.float32)
    _write_set(res / "first" / "training_set.h5", images[train], dataset="first",
               extra={"label": labels[train], "context": onehot[labels[train]],
                      "split": (np.arange(train.sum()) % 10 == 9).astype(np.uint8)},
               attrs={"class_names": json.dumps(CLASS_NAMES)})
    other = ~train  # stand-ins for generated images: real images the "model" never saw
    for w in guidance_values:
        _write_set(res / "samples" / "first" / f"guidance{float(w)}" / "samples.h5", images[other], dataset="first",
                   extra={"label": labels[other], "context": onehot[labels[other]]}, attrs={"guidance": float(w)})
    for name, offset in (("main", 0), ("classical", 20)):
        tiles, peaks = _lotss_tiles(lotss_dir / "P205+55_400px.fits", offset)
        _write_set(res / "lotss" / name / "training_set.h5", tiles, dataset="lotss",
                   extra={"peak_flux": peaks, "split": (np.arange(len(tiles)) % 10 == 9).astype(np.uint8)})
    tiles, peaks = _lotss_tiles(lotss_dir / "P205+55_400px.fits", 40)
    _write_set(res / "samples" / "lotss" / "samples.h5", tiles, dataset="lotss", extra={"peak_flux": peaks},
               attrs={"guidance": 0.1})
    torch.manual_seed(0)
    save_classifier(res / "classifier" / "classifier.pt", MorphologyClassifier(), class_names=CLASS_NAMES,
                    image_size=80, train_config={}, seed=0, best_epoch=None, metrics={})
    sets = {
        "lotss_real": res / "lotss" / "main" / "training_set.h5",
        "lotss_classical": res / "lotss" / "classical" / "training_set.h5",
        "lotss_generated": res / "samples" / "lotss" / "samples.h5",
        "first_real": res / "first" / "training_set.h5",
        "first_generated_guidance0.75": res / "samples" / "first" / "guidance0.75" / "samples.h5",
    }
    for name, path in sets.items():
        out = res / "evaluation" / "pybdsf"
        out.mkdir(parents=True, exist_ok=True)
        run_shard(path, shard=0, n_shards=1, output_csv=out / f"{name}.csv",
                  output_models=out / f"{name}_models.h5", seed=1)


def _snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "snakemake"), "--configfile", "config.yaml", "test-overrides.yaml", *args],
        cwd=root, capture_output=True, text=True,
    )


@pytest.mark.slow
def test_evaluation_rules_and_single_file_report(repo_root, first_zip, lotss_dr1_dir, tmp_path):
    root = tmp_path / "wf"
    root.mkdir()
    shutil.copy(repo_root / "config.yaml", root)
    for folder in ("workflow", "envs"):
        if (repo_root / folder).exists():
            shutil.copytree(repo_root / folder, root / folder)
    (root / "Snakefile").write_text(
        'include: "workflow/rules/common.smk"\n'
        'include: "workflow/rules/evaluate.smk"\n\n\n'
        'report: "workflow/report/workflow.rst"\n\n\n'
        "rule all:\n    input:\n        ALL_TARGETS,\n"
    )
    overrides = {
        # only evaluate.smk is included: no simulated map, and the inputs made here are peak-flux sets
        "skymap": {"enabled": False},
        "lotss": {"preprocess": {"context": "peak_flux"}},
        "sample": {"first": {"guidance": 0.75, "guidance_values": [0.75]}},
        "evaluation": {
            "classes": {"threads": 1},
            "similarity": {"n_generated": 8, "n_reference": 8, "n_show": 3, "threads": 1},
            "summary": {"max_pixels": 20000},
        },
    }
    (root / "test-overrides.yaml").write_text(yaml.safe_dump(overrides))
    _make_inputs(root, first_zip, lotss_dr1_dir, [0.75])

    run = _snakemake(root, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    for target in TARGETS:
        assert (root / target).stat().st_size > 0
    summary = (root / "results/evaluation/summary/lotss.csv").read_text()
    assert "Frechet" in summary and "KID" in summary and "real_vs_classical" in summary
    assert "real_vs_real_floor" in summary and "ks_pvalue" not in summary
    overview = (root / "results/evaluation/overview.csv").read_text()
    assert "81.5" in overview and "not given" in overview

    report = _snakemake(root, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-4000:]
    page = (root / "report.html").read_text(errors="replace")
    assert len(page) > 100_000  # images and tables are embedded: one self-contained file
    for name in ("confusion.png", "first_nearest.png", "lotss_nearest.png", "lotss.html", "accuracy.html",
                 "lotss_memorisation.html", "overview.html", "0. Overview"):
        assert name in page, name
    for caption_text in ("Memorisation number", "noise floor", "Confusion matrices", "Table 7", "What this run achieved"):
        assert caption_text in page, caption_text
