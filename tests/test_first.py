"""FIRST dataset: archive validation, crops, counts, balancing and the training-set contract."""

from __future__ import annotations

import io
import json
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from figures import drawn_from, shown_arrays
from radiogen.cli import main
from radiogen.errors import ConfigError, InputFileError
from radiogen.first import (
    CLASS_NAMES,
    build_training_set,
    class_counts_table,
    list_first_zip,
    read_dataset_h5,
    read_first_zip,
    undersample,
    write_training_set,
)
from radiogen.first.balance import reciprocal_frequency_weights
from radiogen.first.dataset import centre_crop, decode_png, minmax_scale

TRAIN_COUNTS = {"FRI": 395, "FRII": 824, "Compact": 291, "Bent": 248}


@pytest.fixture(scope="module")
def first_dataset(first_zip):
    return read_first_zip(first_zip)


# --- the real archive ---------------------------------------------------------------


def test_counts_per_split_and_class(first_zip):
    table = list_first_zip(first_zip)
    assert len(table) == 2158
    counts = table.groupby(["split", "class_name"]).size()
    for name, n in TRAIN_COUNTS.items():
        assert counts["train", name] == n
        assert counts["valid", name] == 50
        assert counts["test", name] == 50
    assert table["source_name"].is_unique
    assert set(table["catalogue"]) >= {"Gendre", "MiraBest", "Proctor_Tab1"}
    assert table["ra"].between(0, 360).all() and table["dec"].between(-90, 90).all()


def test_class_counts_table_matches_paper_table2(first_dataset):
    table = class_counts_table(first_dataset.table["label"], first_dataset.table["first_split"])
    assert table.loc["total", ["train", "valid", "test", "total"]].tolist() == [1758, 200, 200, 2158]
    assert table["train"].iloc[:4].tolist() == [395, 824, 291, 248]
    assert table.loc["Bent", "total"] == 348


def test_crops_are_80px_in_unit_range(first_dataset):
    images = first_dataset.images
    assert images.shape == (2158, 80, 80) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    maxima = images.max(axis=(1, 2))
    assert (maxima == 1.0).mean() > 0.99  # all but the few crops holding no emission


def test_crops_are_centred_on_compact_sources(first_dataset):
    compact = first_dataset.images[first_dataset.table["label"].to_numpy() == 2]
    peaks = np.array([np.unravel_index(np.argmax(im), im.shape) for im in compact])
    distance = np.hypot(peaks[:, 0] - 39.5, peaks[:, 1] - 39.5)
    assert np.mean(distance < 4) > 0.9


def test_crop_matches_full_image_centre(first_zip):
    with zipfile.ZipFile(first_zip) as archive:
        member = list_first_zip(first_zip)["member"].iloc[0]
        raw = decode_png(archive.read(member), name=member)
    assert raw.shape == (300, 300) and raw.dtype == np.uint8
    crop = centre_crop(raw, 80)
    np.testing.assert_array_equal(crop, raw[110:190, 110:190])
    scaled = minmax_scale(crop)
    assert scaled.min() == 0 and scaled.max() == 1


# --- balancing ------------------------------------------------------------------------


def test_undersampling_is_balanced_and_seeded(first_dataset):
    arrays = build_training_set(first_dataset, balance="undersample", validation_fraction=0.1, seed=7)
    assert len(arrays["label"]) == 1392
    assert np.bincount(arrays["label"]).tolist() == [348] * 4
    assert arrays["images"].shape == (1392, 80, 80)
    np.testing.assert_array_equal(arrays["context"].argmax(1), arrays["label"])
    assert arrays["context"].sum(1).tolist() == [1.0] * 1392
    valid = arrays["split"] == 1
    assert np.bincount(arrays["label"][valid]).tolist() == [35] * 4
    # every Bent image is kept: Bent is the smallest class
    assert (arrays["label"] == 3).sum() == (first_dataset.table["label"] == 3).sum()
    again = build_training_set(first_dataset, balance="undersample", validation_fraction=0.1, seed=7)
    np.testing.assert_array_equal(again["source_name"], arrays["source_name"])
    np.testing.assert_array_equal(again["split"], arrays["split"])
    other = undersample(first_dataset.table["label"].to_numpy(), seed=8)
    assert set(other) != set(undersample(first_dataset.table["label"].to_numpy(), seed=7))


def test_undersampling_cap_per_class(first_dataset):
    """first.max_per_class (smoke runs): a seeded subset of the balanced set, every class alike."""
    full = build_training_set(first_dataset, balance="undersample", validation_fraction=0.1, seed=7)
    small = build_training_set(first_dataset, balance="undersample", validation_fraction=0.25, seed=7,
                               max_per_class=8)
    assert np.bincount(small["label"], minlength=4).tolist() == [8] * 4
    assert np.bincount(small["label"][small["split"] == 1], minlength=4).tolist() == [2] * 4
    assert set(small["source_name"]) < set(first_dataset.table["source_name"])
    # a cap above the smallest class (Bent, 348) changes nothing
    same = build_training_set(first_dataset, balance="undersample", validation_fraction=0.1, seed=7,
                              max_per_class=10_000)
    np.testing.assert_array_equal(same["source_name"], full["source_name"])
    with pytest.raises(ConfigError, match="max_per_class"):
        build_training_set(first_dataset, balance="none", validation_fraction=0.1, seed=7, max_per_class=8)


def test_weights_mode_balances_total_weight(first_dataset):
    arrays = build_training_set(first_dataset, balance="weights", validation_fraction=0.1, seed=1)
    assert len(arrays["label"]) == 2158
    weights = arrays["sample_weight"]
    assert weights.mean() == pytest.approx(1.0, rel=1e-5)
    totals = [weights[arrays["label"] == k].sum() for k in range(4)]
    np.testing.assert_allclose(totals, 2158 / 4, rtol=1e-4)
    assert reciprocal_frequency_weights(np.array([0, 0, 1])).tolist() == pytest.approx([0.75, 0.75, 1.5])
    none = build_training_set(first_dataset, balance="none", validation_fraction=0.1, seed=1)
    assert "sample_weight" not in none and len(none["label"]) == 2158


def test_training_set_contract(first_dataset, tmp_path):
    arrays = build_training_set(first_dataset, balance="undersample", validation_fraction=0.1, seed=3)
    path = tmp_path / "training_set.h5"
    write_training_set(arrays, path, seed=3, balance="undersample")
    with h5py.File(path) as h5:
        assert h5["images"].dtype == np.float32 and h5["images"].shape == (1392, 80, 80)
        assert h5["split"].dtype == np.uint8 and set(np.unique(h5["split"][()])) == {0, 1}
        assert h5["context"].dtype == np.float32 and h5["context"].shape == (1392, 4)
        assert h5["label"].dtype == np.int64
        assert len(h5["source_name"].asstr()[()]) == 1392
        assert h5.attrs["dataset"] == "first"
        assert json.loads(h5.attrs["class_names"]) == list(CLASS_NAMES)
        assert h5.attrs["pixel_scale_arcsec"] == 1.8 and h5.attrs["beam_arcsec"] == 5.4
        assert h5.attrs["frequency_hz"] == 1.4e9 and h5.attrs["seed"] == 3
        assert 0.0 <= h5["images"][()].min() and h5["images"][()].max() <= 1.0


def test_cli_prepare_and_balance(first_zip, tmp_path, saved_figures):
    out = tmp_path / "first"
    settings = json.dumps({"crop_size": 80, "balance": "undersample", "examples_per_class": 4})
    assert main(["first", "prepare", "--zip", str(first_zip), "--output", str(out / "dataset.h5"),
                 "--counts", str(out / "class_counts.csv"), "--examples", str(out / "examples.png"),
                 "--settings", settings, "--seed", "5"]) == 0
    counts = pd.read_csv(out / "class_counts.csv", index_col=0)
    assert counts.loc["FRII", "train"] == 824 and counts.loc["total", "total"] == 2158
    assert (out / "examples.png").exists()
    dataset = read_dataset_h5(out / "dataset.h5")
    assert dataset.images.shape == (2158, 80, 80)
    # one panel per class of 4 of that class's images
    labels = dataset.table["label"].to_numpy()
    for k, panel in enumerate(saved_figures["examples.png"].subfigs):
        assert CLASS_NAMES[k] in panel.get_suptitle()
        shown = [a for ax in panel.axes for a in shown_arrays(ax)]
        assert len(shown) == 4
        of_class = dataset.images[labels == k]
        assert len(set(drawn_from(shown, of_class))) == 4
    with h5py.File(out / "dataset.h5") as h5:
        assert set(h5) >= {"images", "label", "ra", "dec", "catalogue", "first_split", "source_name"}
        assert json.loads(h5.attrs["class_names"]) == list(CLASS_NAMES)
        assert h5.attrs["pixel_scale_arcsec"] == 1.8 and h5.attrs["frequency_hz"] == 1.4e9
        assert np.bincount(h5["first_split"][()]).tolist() == [1758, 200, 200]
    assert main(["first", "balance", "--dataset", str(out / "dataset.h5"), "--output",
                 str(out / "training_set.h5"), "--settings", settings, "--seed", "5"]) == 0
    with h5py.File(out / "training_set.h5") as h5:
        assert np.bincount(h5["label"][()]).tolist() == [348] * 4


# --- bad input ------------------------------------------------------------------------


def _png(value: int = 100, size: int = 300) -> bytes:
    array = np.zeros((size, size), dtype=np.uint8)
    array[size // 2 - 3 : size // 2 + 3, size // 2 - 3 : size // 2 + 3] = value
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _make_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _valid_members() -> dict[str, bytes]:
    members = {}
    for split in ("train", "valid", "test"):
        for label, name in enumerate(CLASS_NAMES):
            members[f"galaxy_data/{split}/{name}/{10 + label}.5_{label}.25_{label}_Cat_{split}.png"] = _png()
    return members


def test_small_valid_zip_reads(tmp_path):
    path = _make_zip(tmp_path / "ok.zip", _valid_members())
    dataset = read_first_zip(path)
    assert len(dataset.table) == 12 and dataset.images.shape == (12, 80, 80)
    assert set(dataset.table["catalogue"]) == {"Cat_train", "Cat_valid", "Cat_test"}


def test_corrupt_png_names_the_file(tmp_path):
    members = _valid_members()
    bad = next(iter(members))
    members[bad] = b"\x89PNG\r\n\x1a\n" + b"garbage" * 20
    path = _make_zip(tmp_path / "corrupt.zip", members)
    with pytest.raises(InputFileError, match=rf"{bad}.*corrupt PNG"):
        read_first_zip(path)


def test_empty_and_wrong_size_png(tmp_path):
    members = _valid_members()
    bad = list(members)[3]
    members[bad] = b""
    with pytest.raises(InputFileError, match=rf"{bad}.*empty"):
        read_first_zip(_make_zip(tmp_path / "empty.zip", members))
    members[bad] = _png(size=200)
    with pytest.raises(InputFileError, match=rf"{bad}.*300x300"):
        read_first_zip(_make_zip(tmp_path / "size.zip", members))


def test_missing_png_listed_in_all_folder(tmp_path):
    members = _valid_members()
    dropped = list(members)[5]
    del members[dropped]
    filename = dropped.rsplit("/", 1)[1]
    members[f"galaxy_data/all/{dropped.split('/')[2]}/{filename}"] = _png()
    for name in list(members):
        if "/all/" not in name and name != dropped:
            members[f"galaxy_data/all/{name.split('/')[2]}/{name.rsplit('/', 1)[1]}"] = _png()
    with pytest.raises(InputFileError, match=rf"{filename}.*missing"):
        list_first_zip(_make_zip(tmp_path / "missing.zip", members))


def test_missing_class_folder(tmp_path):
    members = {k: v for k, v in _valid_members().items() if "/test/Bent/" not in k}
    with pytest.raises(InputFileError, match=r"test/Bent/ is missing"):
        list_first_zip(_make_zip(tmp_path / "nobent.zip", members))


def test_different_layout(tmp_path):
    flat = _make_zip(tmp_path / "flat.zip", {"images/a.png": _png(), "labels.csv": b"a,1\n"})
    with pytest.raises(InputFileError, match=r"flat.zip: .*expected layout"):
        list_first_zip(flat)
    members = _valid_members()
    members["galaxy_data/extra/FRI/1_2_0_X.png"] = _png()
    with pytest.raises(InputFileError, match=r"galaxy_data/extra/FRI/1_2_0_X.png: unexpected entry"):
        list_first_zip(_make_zip(tmp_path / "extra.zip", members))


def test_label_outside_range_names_the_file(tmp_path):
    members = _valid_members()
    members["galaxy_data/train/Bent/12.0_3.0_7_Cat.png"] = _png()
    with pytest.raises(InputFileError, match=r"12.0_3.0_7_Cat.png: label 7 outside 0-3"):
        list_first_zip(_make_zip(tmp_path / "label.zip", members))
    members = _valid_members()
    members["galaxy_data/train/Bent/12.0_3.0_1_Cat.png"] = _png()
    with pytest.raises(InputFileError, match=r"12.0_3.0_1_Cat.png: label 1 \(FRII\) disagrees"):
        list_first_zip(_make_zip(tmp_path / "mismatch.zip", members))
    members = _valid_members()
    members["galaxy_data/train/Bent/nonsense.png"] = _png()
    with pytest.raises(InputFileError, match=r"nonsense.png: file name does not follow"):
        list_first_zip(_make_zip(tmp_path / "name.zip", members))


def test_not_a_zip_and_missing_file(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    with pytest.raises(InputFileError, match=r"fake.zip: not a readable zip"):
        list_first_zip(fake)
    with pytest.raises(InputFileError, match=r"nothere.zip: FIRST dataset zip does not exist"):
        list_first_zip(tmp_path / "nothere.zip")
    assert main(["first", "prepare", "--zip", str(fake), "--output", str(tmp_path / "d.h5"),
                 "--counts", str(tmp_path / "c.csv"), "--seed", "1"]) == 1
    assert not (tmp_path / "d.h5").exists()
