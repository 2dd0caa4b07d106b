"""Morphology classifier: network, augmentations, metrics, classify API, resume and learning."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from radiogen.classifier import classify, load_classifier, save_classifier
from radiogen.classifier.augment import AugmentSettings, augment_batch, gaussian_blur3
from radiogen.classifier.metrics import classification_report, confusion_matrix, precision_recall
from radiogen.classifier.network import MorphologyClassifier
from radiogen.classifier.train import merged_settings, train_classifier
from radiogen.errors import ConfigError, InputFileError
from radiogen.first.dataset import CLASS_NAMES, FirstDataset, read_first_zip, write_dataset_h5
from kill_at import kill_at


def test_network_architecture():
    torch.manual_seed(0)
    model = MorphologyClassifier(dropout=0.3).eval()
    assert model.encoder.conv1.in_channels == 1
    assert isinstance(model.encoder.fc, torch.nn.Identity)
    assert isinstance(model.norm, torch.nn.BatchNorm1d) and model.norm.num_features == 512
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Dropout", "Linear", "Dropout", "Linear"]  # no non-linearity in the head
    assert (model.head[1].in_features, model.head[1].out_features) == (512, 256)
    assert (model.head[3].in_features, model.head[3].out_features) == (256, 4)
    x = torch.rand(3, 1, 80, 80) * 2 - 1
    assert model(x).shape == (3, 4)
    assert model.embed(x).shape == (3, 512)
    # torchvision resnet18 parameter count, less the RGB first conv and the 1000-way fc
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    assert encoder_params == 11_689_512 - 64 * 3 * 49 + 64 * 49 - (512 * 1000 + 1000)


def test_augmentations_are_seeded_and_as_specified():
    x = torch.rand(6, 1, 40, 40) * 2 - 1
    settings = AugmentSettings()
    a = augment_batch(x, settings=settings, generator=torch.Generator().manual_seed(1))
    b = augment_batch(x, settings=settings, generator=torch.Generator().manual_seed(1))
    c = augment_batch(x, settings=settings, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    # pure rotation of a constant image: corners rotated in from outside are filled with -1
    ones = torch.ones(64, 1, 40, 40)
    only_rotate = AugmentSettings(blur_sigma=(1e-3, 1e-3), noise_sigma=(0.0, 0.0), crop_scale=(1.0, 1.0),
                                  vflip_p=0.0)
    rotated = augment_batch(ones, settings=only_rotate, generator=torch.Generator().manual_seed(0))
    corners = rotated[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == -1).float().mean() > 0.5
    assert torch.allclose(rotated[:, 0, 20, 20], torch.ones(64))
    # a vertical flip alone reverses the rows
    flip = AugmentSettings(blur_sigma=(1e-3, 1e-3), noise_sigma=(0.0, 0.0), crop_scale=(1.0, 1.0),
                           rotate=False, vflip_p=1.0)
    ramp = torch.linspace(-1, 1, 40).view(1, 1, 40, 1).expand(2, 1, 40, 40)
    assert torch.allclose(augment_batch(ramp, settings=flip, generator=torch.Generator()), ramp.flip(-2),
                          atol=1e-5)
    # the 3x3 blur with sigma -> 0 is the identity and preserves a constant image
    assert torch.allclose(gaussian_blur3(x, torch.full((6,), 1e-3, dtype=torch.float64)), x, atol=1e-6)
    assert torch.allclose(gaussian_blur3(ones[:2], torch.tensor([0.5, 1.0], dtype=torch.float64)), ones[:2])
    # noise level within the configured range
    noise_only = AugmentSettings(blur_sigma=(1e-3, 1e-3), noise_sigma=(0.05, 0.05), crop_scale=(1.0, 1.0),
                                 rotate=False, vflip_p=0.0)
    noisy = augment_batch(torch.zeros(2, 1, 64, 64), settings=noise_only, generator=torch.Generator())
    assert float(noisy.std()) == pytest.approx(0.05, rel=0.1)


def test_metrics_on_a_known_example():
    true = np.array([0, 0, 1, 1, 2, 3])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    matrix = confusion_matrix(true, predicted, num_classes=4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    precision, recall = precision_recall(matrix)
    np.testing.assert_allclose(precision[:3], [0.5, 2 / 3, 1.0])
    assert math.isnan(precision[3]) and recall.tolist() == [0.5, 1.0, 1.0, 0.0]
    report = classification_report(true, predicted, CLASS_NAMES)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_class"]["Bent"] == {"precision": None, "recall": 0.0, "support": 1}
    json.dumps(report)


def test_classify_api_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = MorphologyClassifier()
    path = tmp_path / "classifier.pt"
    save_classifier(path, model, class_names=CLASS_NAMES, image_size=80, train_config={}, seed=1,
                    best_epoch=1, metrics={})
    loaded = load_classifier(path, device="cpu")
    assert loaded.class_names == list(CLASS_NAMES) and not loaded.training
    images = np.random.default_rng(0).random((5, 80, 80), dtype=np.float32)
    probabilities, embeddings = classify(images, model=loaded, batch_size=2)
    assert probabilities.shape == (5, 4) and embeddings.shape == (5, 512)
    assert probabilities.dtype == np.float32 and embeddings.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    p2, e2 = classify(images[:, None], model=str(path), batch_size=5)  # path and (N, 1, H, W) accepted
    np.testing.assert_allclose(p2, probabilities, atol=1e-5)
    np.testing.assert_allclose(e2, embeddings, atol=1e-4)
    with torch.no_grad():
        expected = torch.softmax(loaded(torch.from_numpy(images[:, None] * 2 - 1)), 1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classify(images * 255, model=loaded)
    with pytest.raises(ValueError, match=r"80x80"):
        classify(images[:, :40, :40], model=loaded)
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(InputFileError, match=r"bogus.pt: not a radiogen classifier"):
        load_classifier(bogus)
    with pytest.raises(InputFileError, match=r"missing.pt: classifier file does not exist"):
        load_classifier(tmp_path / "missing.pt")


def test_settings_validation():
    assert merged_settings({})["epochs"] == 200
    assert merged_settings({"augment": {"vflip_p": 0.0}})["augment"]["blur_sigma"] == [0.1, 1.0]
    with pytest.raises(ConfigError, match=r"classifier.epoch: unknown"):
        merged_settings({"epoch": 3})
    with pytest.raises(ConfigError, match=r"classifier.augment.flip: unknown"):
        merged_settings({"augment": {"flip": 1}})
    with pytest.raises(ConfigError, match=r"classifier.lr_schedule"):
        merged_settings({"lr_schedule": "step"})


def test_cosine_schedule_decays_to_min_lr(tmp_path):
    torch.set_num_threads(1)
    settings = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "min_lr": 1e-5, "lr_schedule": "cosine",
                "augment": {"enabled": False}}
    result = train_classifier(_synthetic_dataset(), settings=settings, seed=1, checkpoint_dir=tmp_path, device="cpu")
    lrs = [record["learning_rate"] for record in result["history"]]
    # lr after epoch e: min + (lr0 - min) (1 + cos(pi e / E)) / 2
    expected = [1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi * e / 3)) / 2 for e in (1, 2, 3)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)


def _synthetic_dataset(size: int = 32, per_class: tuple[int, int, int] = (8, 3, 3)) -> FirstDataset:
    """Blobs whose width encodes the class: cheap, learnable, no real data needed."""
    rng = np.random.default_rng(0)
    rows, images = [], []
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    for split, n in enumerate(per_class):
        for label in range(4):
            for i in range(n):
                width = 1.5 + 2.5 * label + rng.random()
                image = np.exp(-(xx**2 + yy**2) / (2 * width**2)) + 0.05 * rng.random((size, size))
                images.append(image / image.max())
                rows.append({"label": label, "first_split": split, "ra": 10.0 + i, "dec": 1.0,
                             "catalogue": "synthetic", "source_name": f"s{split}_{label}_{i}"})
    table = pd.DataFrame(rows)
    table["split"] = [("train", "valid", "test")[s] for s in table["first_split"]]
    table["class_name"] = [CLASS_NAMES[k] for k in table["label"]]
    return FirstDataset(images=np.asarray(images, dtype=np.float32), table=table)


def _train_command(dataset, out, checkpoints, settings, log):
    return [sys.executable, "-m", "radiogen.cli", "--log-level", "INFO", "classifier", "train",
            "--dataset", str(dataset), "--output", str(out / "classifier.pt"), "--metrics", str(out / "metrics.json"),
            "--confusion", str(out / "confusion.png"), "--curve", str(out / "curve.png"),
            "--checkpoint-dir", str(checkpoints), "--settings", json.dumps(settings), "--seed", "11",
            "--device", "cpu", "--threads", "1"]


@pytest.mark.slow
def test_resume_after_kill_repeats_no_epoch(tmp_path):
    dataset_path = tmp_path / "dataset.h5"
    write_dataset_h5(_synthetic_dataset(), dataset_path, source="synthetic")
    settings = {"epochs": 5, "batch_size": 8, "learning_rate": 1e-3, "bn_recalibration_images": 16}
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    log = tmp_path / "first.log"
    # the test hook holds the run after epoch 2's checkpoint until it is killed
    kill_at(_train_command(dataset_path, killed_dir, killed_dir / "ckpt", settings, log), "classifier.epoch", 2, log)
    epoch_done = torch.load(killed_dir / "ckpt" / "last.pt", weights_only=False)["epoch"]
    assert epoch_done == 2
    assert not (killed_dir / "classifier.pt").exists()

    resumed = subprocess.run(_train_command(dataset_path, killed_dir, killed_dir / "ckpt", settings, log),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epochs 1-{epoch_done} done, continuing at epoch {epoch_done + 1}" in resumed.stderr
    assert f"epoch {epoch_done}/5:" not in resumed.stderr  # finished epochs are not repeated
    metrics = json.loads((killed_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5]
    assert metrics["epochs_run_this_job"] == 5 - epoch_done

    clean = subprocess.run(_train_command(dataset_path, clean_dir, clean_dir / "ckpt", settings, log),
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr[-3000:]
    a = torch.load(killed_dir / "classifier.pt", weights_only=False)
    b = torch.load(clean_dir / "classifier.pt", weights_only=False)
    assert a["best_epoch"] == b["best_epoch"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=1e-5, atol=1e-6)
    clean_metrics = json.loads((clean_dir / "metrics.json").read_text())
    assert metrics["test"]["confusion_matrix"] == clean_metrics["test"]["confusion_matrix"]
    # the synthetic classes differ in width only, so five epochs learn them
    assert metrics["test_accuracy"] > 0.5
    assert (killed_dir / "confusion.png").exists() and (killed_dir / "curve.png").exists()
    # changed settings invalidate the checkpoint instead of resuming it
    changed = subprocess.run(
        _train_command(dataset_path, killed_dir, killed_dir / "ckpt", {**settings, "epochs": 1}, log),
        capture_output=True, text=True, timeout=300)
    assert changed.returncode == 0 and "starting from epoch 1" in changed.stderr


@pytest.mark.slow
def test_short_cpu_training_on_real_data_beats_chance(first_zip, tmp_path):
    torch.set_num_threads(1)  # the suite runs 2 workers on 2 cores
    full = read_first_zip(first_zip)
    table = full.table
    rng = np.random.default_rng(0)
    keep = []
    for split, per_class in ((0, 48), (1, 10), (2, 50)):  # the whole 200-image test split
        for label in range(4):
            members = np.flatnonzero((table["first_split"] == split) & (table["label"] == label))
            keep.extend(rng.choice(members, size=per_class, replace=False))
    keep = np.sort(np.asarray(keep))
    subset = FirstDataset(images=full.images[keep], table=table.iloc[keep].reset_index(drop=True))
    settings = {"epochs": 3, "batch_size": 16, "learning_rate": 3e-4, "dropout": 0.2,
                "bn_recalibration_images": 192}
    result = train_classifier(subset, settings=settings, seed=20240101, checkpoint_dir=tmp_path, device="cpu")
    test = result["metrics"]["test"]
    assert test["n_images"] == 200
    print(f"test accuracy after {len(result['history'])} short epochs: {test['accuracy']:.3f}")
    assert test["accuracy"] >= 0.35  # chance is 0.25; 0.35 is 3.3 binomial sigma above it
    assert test["per_class"]["Compact"]["recall"] > 0.5


def test_cli_score_writes_probabilities_and_embeddings(tmp_path):
    import h5py

    from radiogen.cli import main

    torch.manual_seed(1)
    model_path = tmp_path / "classifier.pt"
    save_classifier(model_path, MorphologyClassifier(), class_names=CLASS_NAMES, image_size=80, train_config={},
                    seed=1, best_epoch=1, metrics={})
    images_path = tmp_path / "images.h5"
    with h5py.File(images_path, "w") as h5:
        h5["images"] = np.random.default_rng(1).random((3, 80, 80), dtype=np.float32)
        h5["label"] = np.array([0, 1, 2])
    out = tmp_path / "scores.h5"
    assert main(["classifier", "score", "--model", str(model_path), "--images", str(images_path),
                 "--output", str(out)]) == 0
    with h5py.File(out) as h5:
        assert h5["probabilities"].shape == (3, 4) and h5["embeddings"].shape == (3, 512)
        np.testing.assert_array_equal(h5["predicted"][()], h5["probabilities"][()].argmax(1))
    assert main(["classifier", "score", "--model", str(tmp_path / "nope.pt"), "--images", str(images_path),
                 "--output", str(out)]) == 1
