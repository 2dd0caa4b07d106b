"""Classification metrics and figures: accuracy, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from radiogen.io import save_figure

__all__ = [
    "confusion_matrix",
    "accuracy",
    "precision_recall",
    "classification_report",
    "plot_confusion_matrix",
    "plot_training_curves",
]


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Counts C[i, j] of images of true class i predicted as class j (int64, K x K)."""
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(true * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    """Fraction of correct predictions."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    return float((true == predicted).mean()) if len(true) else float("nan")


def precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision C_kk / sum_i C_ik and recall C_kk / sum_j C_kj (NaN when undefined)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    diagonal = np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = diagonal / matrix.sum(axis=0)
        recall = diagonal / matrix.sum(axis=1)
    return precision, recall


def classification_report(true: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/support and the confusion matrix, as a JSON-able dict."""
    matrix = confusion_matrix(true, predicted, num_classes=len(class_names))
    precision, recall = precision_recall(matrix)

    def clean(value: float) -> float | None:
        return None if np.isnan(value) else float(value)

    return {
        "accuracy": accuracy(true, predicted),
        "n_images": int(len(true)),
        "per_class": {
            name: {"precision": clean(precision[k]), "recall": clean(recall[k]), "support": int(matrix[k].sum())}
            for k, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_axes": "rows: true class, columns: predicted class",
    }


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str) -> None:
    """Row-normalised confusion matrix heatmap with counts (paper Fig. 19), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    fraction = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), layout="constrained")
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{fraction[i, j]:.2f}\n({matrix[i, j]})", ha="center", va="center",
                    color="white" if fraction[i, j] > 0.5 else "black", fontsize=9)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="fraction of true class")
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_training_curves(history: list[dict], path: str | Path, *, best_epoch: int | None = None) -> None:
    """Loss, accuracy and learning rate per epoch (train vs validation), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train (augmented)")
    axes[0].plot(epochs, [h["valid_loss"] for h in history], "o-", label="validation")
    axes[0].set_ylabel("weighted cross-entropy")
    axes[1].plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train (augmented)")
    axes[1].plot(epochs, [h["valid_accuracy"] for h in history], "o-", label="validation")
    axes[1].set_ylabel("accuracy")
    axes[1].axhline(0.25, color="grey", ls=":", label="chance (4 classes)")
    axes[2].plot(epochs, [h["learning_rate"] for h in history], "o-")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="k", ls="--", lw=0.8)
    axes[0].legend()
    axes[1].legend()
    fig.suptitle("Classifier training" + (f" (selected epoch {best_epoch}, dashed)" if best_epoch else ""))
    save_figure(fig, path, dpi=110)
    plt.close(fig)
