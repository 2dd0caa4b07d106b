"""Figure of a training run's loss curves (from the history stored in the model file)."""

from __future__ import annotations

import os

import numpy as np

from radiogen.io import save_figure

__all__ = ["plot_loss_curves"]


def plot_loss_curves(history: dict, path: str | os.PathLike, *, title: str = "") -> None:
    """Training loss and validation loss (raw and EMA weights, per sigma) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    ax = axes[0]
    if history.get("train_step"):
        ax.plot(history["train_step"], history["train_loss"], label="training (mean per log interval)")
    if history.get("val_step"):
        ax.plot(history["val_step"], [np.mean(v) for v in history["val_raw"]], "o-", label="validation, raw")
        ax.plot(history["val_step"], [np.mean(v) for v in history["val_ema"]], "s--", label="validation, EMA")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$\lambda(\sigma)\,\|D(x+n;\sigma)-x\|^2$ (mean)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("loss")
    ax = axes[1]
    if history.get("val_step"):
        raw = np.asarray(history["val_raw"])
        avg = np.asarray(history["val_ema"])
        colors = plt.cm.viridis(np.linspace(0, 0.9, raw.shape[1]))
        for j, sigma in enumerate(history["val_sigmas"]):
            ax.plot(history["val_step"], raw[:, j], "-", color=colors[j], label=rf"$\sigma$={sigma:g}")
            ax.plot(history["val_step"], avg[:, j], "--", color=colors[j])
        ax.set_yscale("log")
        ax.legend(fontsize="small", title="solid raw, dashed EMA")
    ax.set_xlabel("step")
    ax.set_title("validation loss per noise level")
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=120)
    plt.close(fig)
