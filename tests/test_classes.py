"""Class conditioning: confusion matrices, accuracy table, scoring an image set."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from radiogen.errors import InputFileError, RadiogenError
from radiogen.evaluation import classes
from figures import panels

CLASS_DIRS = {"FRI": 0, "FRII": 1, "Compact": 2, "Bent": 3}


def first_dataset(zip_path, path, *, per_split: int = 12) -> None:
    """A small FIRST ``dataset.h5`` from real PNGs: centre 80x80 crops, /label, /first_split."""
    from PIL import Image

    images, labels, splits = [], [], []
    with zipfile.ZipFile(zip_path) as zf:
        for split_value, split in enumerate(["train", "valid", "test"]):
            names = sorted(m for m in zf.namelist() if m.endswith(".png") and f"/{split}/" in m)
            for name in names[:: max(1, len(names) // per_split)][:per_split]:
                image = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L"), dtype=np.float32)
                c = (image.shape[0] - 80) // 2
                images.append(image[c : c + 80, c : c + 80] / 255.0)
                labels.append(CLASS_DIRS[name.split("/")[-2]])
                splits.append(split_value)
    with h5py.File(path, "w") as h5:
        h5["images"] = np.stack(images)
        h5["label"] = np.array(labels, dtype=np.int64)
        h5["first_split"] = np.array(splits, dtype=np.uint8)
        h5.attrs["class_names"] = json.dumps(list(CLASS_DIRS))
        h5.attrs["dataset"] = "first"


def test_confusion_matrix_and_accuracy_on_known_labels():
    true = np.array([0, 0, 1, 1, 2, 3, 3, 3])
    pred = np.array([0, 3, 1, 0, 2, 3, 0, 3])
    cm = classes.confusion_matrix(true, pred, n_classes=4)
    expected = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 2]])
    np.testing.assert_array_equal(cm, expected)
    assert classes.accuracy(true, pred) == pytest.approx(5 / 8)
    m = classes.class_metrics(true, pred, class_names=list(CLASS_DIRS))
    assert m["recall"] == pytest.approx({"FRI": 0.5, "FRII": 0.5, "Compact": 1.0, "Bent": 2 / 3})
    with pytest.raises(RadiogenError, match="outside"):
        classes.confusion_matrix(np.array([4]), np.array([0]), n_classes=4)


def test_accuracy_table_and_figure(tmp_path):
    real = classes.class_metrics([0, 1, 2, 3], [0, 1, 2, 2], class_names=list(CLASS_DIRS))
    gen = classes.class_metrics([0, 1, 2, 3, 3], [0, 1, 2, 3, 3], class_names=list(CLASS_DIRS))
    table = classes.accuracy_table([("real test split", np.nan, real), ("generated, guidance 0.75", 0.75, gen)])
    assert list(table["accuracy_percent"]) == pytest.approx([75.0, 100.0])
    # 1-sigma Wilson intervals, by hand with z = 1: 3 of 4 right -> [50, 90]%; 5 of 5 -> [100 / 1.2, 100]%
    assert list(table["accuracy_low_percent"]) == pytest.approx([50.0, 100 / 1.2])
    assert list(table["accuracy_high_percent"]) == pytest.approx([90.0, 100.0])
    assert table.loc[1, "recall_Bent_percent"] == 100.0 and table.loc[0, "recall_Bent_percent"] == 0.0
    # Bent: 0 of 1 (real) -> [0, 50]%; 2 of 2 (generated) -> centre 2.5 / 3, half-width 0.5 / 3
    assert (table.loc[0, "recall_Bent_low_percent"], table.loc[0, "recall_Bent_high_percent"]) == pytest.approx((0.0, 50.0))
    assert table.loc[1, "recall_Bent_low_percent"] == pytest.approx(100 * 2 / 3)
    path = tmp_path / "confusion.png"
    classes.plot_confusions([("real", real["confusion"]), ("generated", gen["confusion"])], list(CLASS_DIRS), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_images_selects_the_test_split(first_zip, tmp_path):
    path = tmp_path / "dataset.h5"
    first_dataset(first_zip, path)
    data = classes.read_images(path, split_dataset="first_split", split_value=2)
    assert data["images"].shape == (12, 80, 80) and data["class_names"] == list(CLASS_DIRS)
    with h5py.File(path) as h5:
        np.testing.assert_array_equal(data["label"], h5["label"][()][h5["first_split"][()] == 2])
    sub = classes.read_images(path, max_images=5, seed=3)
    assert len(sub["index"]) == 5 and np.all(np.diff(sub["index"]) > 0)
    with pytest.raises(InputFileError, match="no rows"):
        classes.read_images(path, split_dataset="first_split", split_value=7)


def test_classify_file_with_a_real_classifier_network(first_zip, tmp_path):
    """Scores real FIRST crops with an (untrained) ResNet-18 classifier file of the real format."""
    from radiogen.classifier import MorphologyClassifier, save_classifier

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = MorphologyClassifier()
    save_classifier(tmp_path / "classifier.pt", model, class_names=list(CLASS_DIRS), image_size=80,
                    train_config={}, seed=0, best_epoch=None, metrics={})
    dataset = tmp_path / "dataset.h5"
    first_dataset(first_zip, dataset, per_split=6)
    with h5py.File(dataset, "a") as h5:  # a generated set's latent attributes travel to its scores
        h5.attrs.update(LATENTS)
    out = tmp_path / "scores.h5"
    result = classes.classify_file(dataset, tmp_path / "classifier.pt", out, split_dataset="first_split",
                                   split_value=2, batch_size=4)
    scores = classes.read_scores(out)
    assert scores["probabilities"].shape == (6, 4) and scores["embeddings"].shape == (6, 512)
    np.testing.assert_allclose(scores["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(scores["predicted"], scores["probabilities"].argmax(axis=1))
    assert result["accuracy"] == pytest.approx(np.mean(scores["predicted"] == scores["label"]))
    assert scores["class_names"] == list(CLASS_DIRS)
    assert scores["latents"] == LATENTS and list(scores["index"]) == list(range(12, 18))
    assert scores["rows"] == "rows with /first_split in [2] (6 images)"

    # The held-out reference of the feature distances: valid and test splits, which the judge never trained on.
    from radiogen.cli import main

    classes.classify_file(dataset, tmp_path / "classifier.pt", tmp_path / "heldout.h5", split_dataset="first_split",
                          split_value=[1, 2], batch_size=4)
    heldout = classes.read_scores(tmp_path / "heldout.h5")
    assert list(heldout["index"]) == list(range(6, 18))
    assert heldout["rows"] == "rows with /first_split in [1, 2] (12 images)"
    assert main(["evaluate", "feature-distances", "--real", str(tmp_path / "heldout.h5"), "--generated", str(out),
                 "--settings", '{"floor_repeats": 2}', "--output", str(tmp_path / "f.csv")]) == 0
    features = pd.read_csv(tmp_path / "f.csv")
    assert (features["reference"] == f"{dataset}, rows with /first_split in [1, 2] (12 images)").all()
    assert set(features["n_reference"]) == {6} and set(features["n_compared"]) == {6}

    with h5py.File(tmp_path / "small.h5", "w") as h5:
        h5["images"] = np.zeros((2, 40, 40), dtype=np.float32)
    with pytest.raises(InputFileError, match="small.h5"):
        classes.classify_file(tmp_path / "small.h5", tmp_path / "classifier.pt", tmp_path / "x.h5")


def _scores(path, label, predicted, *, guidance=float("nan"), latents=None, index=None):
    with h5py.File(path, "w") as h5:
        probabilities = np.eye(4, dtype=np.float32)[predicted]
        h5["probabilities"] = probabilities
        h5["embeddings"] = np.zeros((len(label), 512), dtype=np.float32)
        h5["predicted"] = np.asarray(predicted, dtype=np.int64)
        h5["label"] = np.asarray(label, dtype=np.int64)
        h5["index"] = np.arange(len(label)) if index is None else np.asarray(index)
        h5.attrs["class_names"] = json.dumps(list(CLASS_DIRS))
        h5.attrs["guidance"] = guidance
        for key, value in (latents or {}).items():
            h5.attrs[key] = value


LATENTS = {"seed": 7, "model_id": "abc", "conditioning": '{"balance": "uniform"}'}


def test_class_conditioning_cli_table_and_figure(tmp_path, saved_figures):
    from radiogen.cli import main

    _scores(tmp_path / "test.h5", [0, 1, 2, 3], [0, 1, 2, 0])
    _scores(tmp_path / "w0.h5", [0, 0, 1, 1, 2, 2, 3, 3], [0, 3, 1, 0, 2, 2, 3, 0], guidance=0.0)
    _scores(tmp_path / "w075.h5", [0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 1, 1, 2, 2, 3, 0], guidance=0.75)
    args = ["evaluate", "class-conditioning", "--real", str(tmp_path / "test.h5"),
            "--generated", str(tmp_path / "w075.h5"), str(tmp_path / "w0.h5"),
            "--output-table", str(tmp_path / "a.csv"), "--output-html", str(tmp_path / "a.html"),
            "--output-figure", str(tmp_path / "c.png")]
    assert main([*args, "--main-guidance", "0.75"]) == 0
    table = pd.read_csv(tmp_path / "a.csv")
    assert list(table["set"]) == ["real test split", "generated, guidance 0", "generated, guidance 0.75"]
    assert list(table["accuracy_percent"]) == pytest.approx([75.0, 62.5, 87.5])
    # Scores without the sets' latent attributes are not paired: no McNemar test, and the reason.
    assert table["mcnemar_p_exact"].isna().all()
    assert "missing" in table.loc[1, "paired_with_main"]
    assert "Table 7" in (tmp_path / "a.html").read_text()
    # the paper's Fig. 19: real test split beside the set at the main guidance, each panel
    # showing its row percentages and accuracy
    axes = panels(saved_figures["c.png"])
    assert len(axes) == 2
    for ax, row in zip(axes, (0, 2)):
        name, accuracy = table.loc[row, "set"], table.loc[row, "accuracy_percent"]
        assert ax.get_title().startswith(name) and f"accuracy {accuracy:.1f}%" in ax.get_title()
    real_share = np.asarray(axes[0].collections[0].get_array()).reshape(4, 4)
    expected = np.eye(4) * 100
    expected[3] = [100, 0, 0, 0]  # the one Bent image was called FRI
    np.testing.assert_allclose(real_share, expected)
    main_share = np.asarray(axes[1].collections[0].get_array()).reshape(4, 4)
    np.testing.assert_allclose(np.diag(main_share), [100, 100, 100, 50])
    assert main([*args, "--main-guidance", "0.5"]) == 1  # no set sampled at the main guidance


def test_guidance_values_on_the_same_latents_get_mcnemar(tmp_path):
    """Sets of one seed, model and conditioning are paired image by image; others are not."""
    from radiogen.cli import main

    rng = np.random.default_rng(4)
    label = np.repeat(np.arange(4), 30)
    right_main = rng.random(120) < 0.8
    right_w0 = np.where(rng.random(120) < 0.7, right_main, rng.random(120) < 0.4)
    wrong = (label + 1) % 4
    _scores(tmp_path / "test.h5", [0, 1, 2, 3], [0, 1, 2, 0])
    _scores(tmp_path / "w075.h5", label, np.where(right_main, label, wrong), guidance=0.75, latents=LATENTS)
    _scores(tmp_path / "w0.h5", label, np.where(right_w0, label, wrong), guidance=0.0, latents=LATENTS)
    _scores(tmp_path / "w3.h5", label, np.where(right_w0, label, wrong), guidance=3.0, latents={**LATENTS, "seed": 8})
    assert main(["evaluate", "class-conditioning", "--real", str(tmp_path / "test.h5"), "--generated",
                 *(str(tmp_path / f"{n}.h5") for n in ("w075", "w0", "w3")), "--main-guidance", "0.75",
                 "--output-table", str(tmp_path / "a.csv"), "--output-html", str(tmp_path / "a.html"),
                 "--output-figure", str(tmp_path / "c.png")]) == 0
    table = pd.read_csv(tmp_path / "a.csv").set_index("guidance")
    b, c = int(np.sum(right_w0 & ~right_main)), int(np.sum(~right_w0 & right_main))
    row = table.loc[0.0]
    assert row["paired_with_main"] == "yes"
    assert (row["pairs_right_only_here"], row["pairs_right_only_at_main"]) == (b, c)
    assert row["mcnemar_p_exact"] == pytest.approx(scipy.stats.binomtest(b, b + c, 0.5).pvalue)
    assert "different seed" in table.loc[3.0, "paired_with_main"] and np.isnan(table.loc[3.0, "mcnemar_p_exact"])
    assert np.isnan(table.loc[0.75, "mcnemar_p_exact"])  # the main guidance itself


def test_pairing_needs_the_same_scored_images(tmp_path):
    label = np.zeros(4, dtype=np.int64)
    _scores(tmp_path / "a.h5", label, label, guidance=0.0, latents=LATENTS, index=[0, 1, 2, 3])
    _scores(tmp_path / "b.h5", label, label, guidance=1.0, latents=LATENTS, index=[0, 1, 2, 5])
    a, b = classes.read_scores(tmp_path / "a.h5"), classes.read_scores(tmp_path / "b.h5")
    assert classes.pairing_problem(a, a) is None
    assert "index" in classes.pairing_problem(a, b)
