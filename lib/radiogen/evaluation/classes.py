"""Class conditioning judged by the morphology classifier (paper Sects. 5.3, 6.3).

The ResNet-18 classifier trained on the FIRST training split scores the real
test split and every class-conditioned generated set: overall accuracy (the
fraction of images whose predicted class equals the class they were drawn
from / labelled with), per-class recall, and the confusion matrix
``C[i, j] = #{true class i, predicted class j}`` (paper Fig. 19, Table 7:
81.5% on the real test split, 83.4% on images generated at guidance 0.75).

Accuracies and recalls carry 1-sigma Wilson score intervals
(:mod:`radiogen.evaluation.proportions`); generated sets of different guidance
that share their latents are compared image by image with McNemar's test.

The same pass keeps the classifier's penultimate-layer embeddings, which
:mod:`radiogen.evaluation.distances` turns into the Frechet distance and
the KID.
"""

from __future__ import annotations

import json
import logging
import time

import h5py
import numpy as np
import pandas as pd

from radiogen.errors import InputFileError, RadiogenError
from radiogen.evaluation.proportions import mcnemar_test, wilson_interval
from radiogen.io import atomic_path, open_hdf5, require_datasets, save_figure
from radiogen.surveys import FIRST_CLASS_NAMES

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "read_images",
    "classify_file",
    "read_scores",
    "confusion_matrix",
    "accuracy",
    "class_metrics",
    "LATENT_ATTRS",
    "pairing_problem",
    "paired_tests",
    "PAIRED_COLUMNS",
    "accuracy_table",
    "plot_confusions",
]

log = logging.getLogger(__name__)

DEFAULT_CLASS_NAMES = list(FIRST_CLASS_NAMES)

#: Image-set attributes that fix the latents of a generated set: image i's noise and
#: class come from (seed, i) under these conditioning settings (radiogen.sampler.generate).
#: Scores files copy them, so sets of different guidance can be paired image by image.
LATENT_ATTRS = ("seed", "model_id", "conditioning")


def read_images(
    path, *, split_dataset: str | None = None, split_value=None, max_images: int | None = None, seed: int = 0
) -> dict:
    """Read ``/images`` (and ``/label`` when present) from an image-set HDF5 file.

    Parameters
    ----------
    path : path-like
        Training set, FIRST ``dataset.h5`` or samples file (``/images`` (N, H, W) in [0, 1]).
    split_dataset, split_value : keyword-only
        Keep only rows where ``/<split_dataset>`` equals ``split_value`` (an
        int, or a sequence of ints: any of them) (e.g.
        ``first_split`` 2 = the FIRST test split).
    max_images : int, optional, keyword-only
        Keep a seeded random subset of at most this many rows (sorted).
    seed : int, keyword-only
        Seed of that subset.

    Returns
    -------
    dict
        ``images`` float32 (n, H, W), ``label`` int64 (n,) or None,
        ``index`` int64 (n,) rows of the file, ``class_names`` list or None,
        ``attrs`` dict of the file's attributes.
    """
    with open_hdf5(path) as h5:
        require_datasets(h5, ["images"])
        n = h5["images"].shape[0]
        rows = np.arange(n)
        if split_dataset is not None:
            require_datasets(h5, [split_dataset])
            rows = rows[np.isin(h5[split_dataset][()], np.atleast_1d(split_value))]
            if rows.size == 0:
                raise InputFileError(f"{path}: no rows with /{split_dataset} in {np.atleast_1d(split_value).tolist()}")
        if max_images is not None and rows.size > max_images:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_images, replace=False))
        images = h5["images"][()][rows] if rows.size > n // 2 else h5["images"][np.sort(rows)]
        label = h5["label"][()][rows].astype(np.int64) if "label" in h5 else None
        attrs = {key: _attr(value) for key, value in h5.attrs.items()}
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise InputFileError(f"{path}: /images must have shape (N, H, W), got {images.shape}")
    class_names = attrs.get("class_names")
    if isinstance(class_names, str):
        class_names = json.loads(class_names)
    return {"images": images, "label": label, "index": rows.astype(np.int64), "class_names": class_names, "attrs": attrs}


def _rows_text(split_dataset, split_value, max_images, n: int) -> str:
    """Which rows of an image set were scored, in words (kept with the scores)."""
    text = "all rows" if split_dataset is None else \
        f"rows with /{split_dataset} in {np.atleast_1d(split_value).tolist()}"
    if max_images is not None and n >= max_images:
        text += f", a seeded subset of {n}"
    return f"{text} ({n} images)"


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def classify_file(
    images_path,
    classifier_path,
    output_path,
    *,
    split_dataset: str | None = None,
    split_value=None,
    max_images: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict:
    """Score one image set with the classifier and store probabilities and embeddings.

    Output HDF5: ``/probabilities`` float32 (n, K), ``/embeddings`` float32
    (n, D), ``/predicted`` int64 (n,), ``/label`` int64 (n,) (-1 where the set
    has no labels), ``/index`` int64 (n,) rows of the input file; attrs
    ``class_names`` (JSON), ``source``, ``guidance`` (guidance, NaN when absent),
    ``accuracy`` (NaN without labels), ``rows`` (which rows were scored, as
    text: the split filter and subset) and, where the image set has them, the
    :data:`LATENT_ATTRS` of a generated set.
    """
    from radiogen.classifier import classify, load_classifier

    data = read_images(images_path, split_dataset=split_dataset, split_value=split_value, max_images=max_images, seed=seed)
    model = load_classifier(classifier_path, device=device)
    started = time.monotonic()
    try:
        probabilities, embeddings = classify(data["images"], model=model, batch_size=batch_size, device=device)
    except ValueError as err:  # wrong image size or range for this classifier
        raise InputFileError(f"{images_path}: cannot classify these images ({err})") from err
    elapsed = time.monotonic() - started
    log.info("classified %d images in %.1f s (%.1f images/s)", len(data["images"]), elapsed, len(data["images"]) / max(elapsed, 1e-9))
    probabilities = np.asarray(probabilities, dtype=np.float32)
    predicted = probabilities.argmax(axis=1).astype(np.int64)
    label = data["label"] if data["label"] is not None else np.full(len(predicted), -1, dtype=np.int64)
    class_names = data["class_names"] or DEFAULT_CLASS_NAMES[: probabilities.shape[1]]
    acc = accuracy(label, predicted) if data["label"] is not None else float("nan")
    with atomic_path(output_path) as tmp:
        with h5py.File(tmp, "w") as out:
            out.create_dataset("probabilities", data=probabilities)
            out.create_dataset("embeddings", data=np.asarray(embeddings, dtype=np.float32))
            out.create_dataset("predicted", data=predicted)
            out.create_dataset("label", data=label)
            out.create_dataset("index", data=data["index"])
            out.attrs["class_names"] = json.dumps(list(class_names))
            out.attrs["source"] = str(images_path)
            out.attrs["guidance"] = float(data["attrs"].get("guidance", float("nan")))
            out.attrs["accuracy"] = acc
            out.attrs["n_images"] = len(predicted)
            out.attrs["rows"] = _rows_text(split_dataset, split_value, max_images, len(predicted))
            for key in LATENT_ATTRS:
                if key in data["attrs"]:
                    out.attrs[key] = data["attrs"][key]
    return {"n_images": len(predicted), "accuracy": acc}


def read_scores(path) -> dict:
    """Read a file written by :func:`classify_file`."""
    with open_hdf5(path) as h5:
        require_datasets(h5, ["probabilities", "embeddings", "predicted", "label"])
        out = {name: h5[name][()] for name in ("probabilities", "embeddings", "predicted", "label")}
        out["index"] = h5["index"][()] if "index" in h5 else None
        out["latents"] = {key: _attr(h5.attrs[key]) for key in LATENT_ATTRS if key in h5.attrs}
        out["class_names"] = json.loads(h5.attrs.get("class_names", json.dumps(DEFAULT_CLASS_NAMES)))
        out["guidance"] = float(h5.attrs.get("guidance", float("nan")))
        out["source"] = str(h5.attrs.get("source", ""))
        out["rows"] = str(h5.attrs.get("rows", "rows not recorded"))
    return out


def confusion_matrix(true, predicted, *, n_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of images of true class i predicted as class j (int64, (K, K))."""
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape:
        raise RadiogenError(f"label arrays differ in shape: {true.shape} vs {predicted.shape}")
    bad = (true < 0) | (true >= n_classes) | (predicted < 0) | (predicted >= n_classes)
    if np.any(bad):
        raise RadiogenError(f"{int(bad.sum())} labels outside 0..{n_classes - 1}")
    return np.bincount(true * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(true, predicted) -> float:
    """Fraction of images whose predicted class equals the true class."""
    true = np.asarray(true)
    if true.size == 0:
        raise RadiogenError("accuracy of an empty set is undefined")
    return float(np.mean(true == np.asarray(predicted)))


def class_metrics(true, predicted, *, class_names) -> dict:
    """Accuracy, confusion matrix and per-class recall of one scored set.

    Returns
    -------
    dict
        ``n_images``, ``n_correct``, ``accuracy``, ``confusion``, ``recall``
        (class -> share of that class's images predicted as it, NaN for an
        absent class), ``class_counts`` (class -> images of that class),
        ``class_correct`` (class -> of them predicted as that class) and
        ``correct`` (bool per image, for paired tests).
    """
    k = len(class_names)
    cm = confusion_matrix(true, predicted, n_classes=k)
    totals = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), totals, out=np.full(k, np.nan), where=totals > 0)
    return {
        "n_images": int(cm.sum()),
        "n_correct": int(np.trace(cm)),
        "accuracy": accuracy(true, predicted),
        "confusion": cm,
        "recall": dict(zip(class_names, recall.tolist())),
        "class_counts": dict(zip(class_names, totals.tolist())),
        "class_correct": dict(zip(class_names, np.diag(cm).tolist())),
        "correct": np.asarray(true) == np.asarray(predicted),
    }


def pairing_problem(first: dict, second: dict) -> str | None:
    """Why two scored generated sets are not paired image by image, or None when they are.

    They are paired when they share the :data:`LATENT_ATTRS` (seed, model,
    conditioning settings; present in both), the scored rows (``/index``) and
    the requested classes: then image i started from the same noise in both.
    """
    for key in LATENT_ATTRS:
        if key not in first["latents"] or key not in second["latents"]:
            return f"attribute {key!r} missing (not a generated set, or scored before it was recorded)"
        if str(first["latents"][key]) != str(second["latents"][key]):
            return f"different {key} ({first['latents'][key]!r} vs {second['latents'][key]!r})"
    if first["index"] is None or second["index"] is None or not np.array_equal(first["index"], second["index"]):
        return "different scored images (/index)"
    if not np.array_equal(first["label"], second["label"]):
        return "different requested classes"
    return None


def paired_tests(scores: dict, *, main_guidance: float) -> dict:
    """McNemar's test of every guidance against the main one, on the same latents.

    Parameters
    ----------
    scores : dict
        Guidance -> :func:`read_scores` output of that generated set.
    main_guidance : float, keyword-only
        The guidance the others are compared with.

    Returns
    -------
    dict
        Guidance -> :func:`radiogen.evaluation.proportions.mcnemar_test`
        result (``first_only``: right at this guidance only, ``second_only``:
        right at the main guidance only) or ``{"unpaired": reason}``; the
        main guidance itself is left out.
    """
    main = [w for w in scores if np.isclose(w, main_guidance)]
    if not main:
        raise RadiogenError(f"no scored set at the main guidance {main_guidance}")
    reference = scores[main[0]]
    out = {}
    for guidance, other in scores.items():
        if guidance == main[0]:
            continue
        problem = pairing_problem(other, reference)
        if problem is not None:
            out[guidance] = {"unpaired": problem}
            continue
        out[guidance] = mcnemar_test(other["label"] == other["predicted"], reference["label"] == reference["predicted"])
    return out


#: Columns of the McNemar comparison with the main guidance in :func:`accuracy_table`.
PAIRED_COLUMNS = ["pairs_right_only_here", "pairs_right_only_at_main", "mcnemar_p_exact", "mcnemar_p_mid"]


def accuracy_table(entries, *, paired: dict | None = None) -> pd.DataFrame:
    """Table 7 of the paper: accuracy per scored set, with Wilson intervals.

    ``entries``: iterable of (set name, guidance or NaN, metrics from
    :func:`class_metrics`); ``paired``: guidance -> result of
    :func:`paired_tests`.  Columns: set, guidance, n_images,
    accuracy_percent with its 1-sigma Wilson score interval
    (``accuracy_low_percent``, ``accuracy_high_percent``), then per class
    ``recall_<class>_percent`` and its interval (``_low``/``_high``), then,
    with ``paired``, :data:`PAIRED_COLUMNS` (images right only at this
    guidance, right only at the main one, McNemar's exact and mid-p values;
    empty for the main guidance, the real split and unpaired sets) and
    ``paired_with_main`` ("yes", or the reason the sets are not paired).
    """
    rows = []
    for name, guidance, metrics in entries:
        n = metrics["n_images"]
        low, high = wilson_interval(metrics["n_correct"], n)
        row = {
            "set": name,
            "guidance": guidance,
            "n_images": n,
            "accuracy_percent": 100.0 * metrics["accuracy"],
            "accuracy_low_percent": 100.0 * float(low),
            "accuracy_high_percent": 100.0 * float(high),
        }
        for cls, value in metrics["recall"].items():
            count = metrics["class_counts"][cls]
            row[f"recall_{cls}_percent"] = 100.0 * value
            if count > 0:
                low, high = wilson_interval(metrics["class_correct"][cls], count)
                row[f"recall_{cls}_low_percent"], row[f"recall_{cls}_high_percent"] = 100.0 * float(low), 100.0 * float(high)
            else:
                row[f"recall_{cls}_low_percent"] = row[f"recall_{cls}_high_percent"] = np.nan
        if paired is not None:
            test = next((t for w, t in paired.items() if np.isfinite(guidance) and np.isclose(w, guidance)), None)
            for column in PAIRED_COLUMNS:
                row[column] = np.nan
            row["paired_with_main"] = None
            if test is not None and "unpaired" in test:
                row["paired_with_main"] = test["unpaired"]
            elif test is not None:
                row.update({"pairs_right_only_here": test["first_only"], "pairs_right_only_at_main": test["second_only"],
                            "mcnemar_p_exact": test["p_exact"], "mcnemar_p_mid": test["p_mid"],
                            "paired_with_main": "yes"})
        rows.append(row)
    return pd.DataFrame(rows)


def plot_confusions(panels, class_names, path) -> None:
    """Confusion matrices side by side (paper Fig. 19).

    ``panels``: list of (title, confusion matrix).  Cells show the row
    percentage (share of the true class) and the count.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    for ax, (title, cm) in zip(axes[0], panels):
        cm = np.asarray(cm)
        totals = cm.sum(axis=1, keepdims=True)
        share = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
        labels = np.array([[f"{100 * s:.1f}%\n({c})" for s, c in zip(rs, rc)] for rs, rc in zip(share, cm)])
        sns.heatmap(
            100 * share, annot=labels, fmt="", cmap="Blues", vmin=0, vmax=100, cbar=False,
            xticklabels=class_names, yticklabels=class_names, ax=ax, square=True,
        )
        acc = np.trace(cm) / max(cm.sum(), 1)
        ax.set_title(f"{title}\naccuracy {100 * acc:.1f}% (n={cm.sum()})", fontsize=9)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true / conditioned class")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
