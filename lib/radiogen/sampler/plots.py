"""Report figures: generated vs training images, and one sampling trajectory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from radiogen.io import open_hdf5, require_datasets, save_figure  # noqa: E402
from radiogen.sampler import generate  # noqa: E402
from radiogen.sampler.heun import StepInfo  # noqa: E402
from radiogen.sampler.solvers import solve  # noqa: E402
from radiogen.seeds import generator  # noqa: E402

__all__ = ["tile", "plot_samples_vs_training", "record_trajectory", "plot_trajectory"]


def tile(images: np.ndarray, ncols: int, *, pad: int = 2, fill: float = np.nan) -> np.ndarray:
    """Mosaic of (n, H, W) images on a grid ``ncols`` wide, ``pad`` pixels apart (NaN = blank)."""
    n, h, w = images.shape
    nrows = max(1, int(np.ceil(n / ncols)))
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), fill, dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, ncols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = images[k]
    return out


def _pick(h5, n: int, rng: np.random.Generator, *, mask: np.ndarray | None = None) -> np.ndarray:
    candidates = np.arange(h5["images"].shape[0]) if mask is None else np.flatnonzero(mask)
    chosen = np.sort(rng.choice(candidates, size=min(n, candidates.size), replace=False))
    return np.asarray(h5["images"][chosen], dtype=np.float32)


def plot_samples_vs_training(
    samples: str | Path,
    training: str | Path,
    output: str | Path,
    *,
    n_per_panel: int = 16,
    seed: int = 0,
) -> Path:
    """Random training images (left) beside random generated images (right).

    LoTSS: one pair of panels (paper Figs. 3 and 11).  FIRST: one row of
    panels per class (paper Figs. 5 and 18), training images from the
    training split only.  Images are shown in their [0, 1] scaling.
    ``seed`` is the global seed; the panels use its ``sample.figure`` stream.
    """
    rng = generator(seed, "sample.figure")
    ncols = int(np.ceil(np.sqrt(n_per_panel)))
    with open_hdf5(samples) as gen, open_hdf5(training) as real:
        require_datasets(gen, ["images"])
        require_datasets(real, ["images"])
        dataset = gen.attrs.get("dataset", "lotss")
        guidance = float(gen.attrs.get("guidance", 0.0))
        train_mask = real["split"][()] == 0 if "split" in real else np.ones(real["images"].shape[0], bool)
        rows = []
        if dataset == "first" and "label" in gen and "label" in real:
            names = json.loads(gen.attrs.get("class_names", "[]"))
            real_labels, gen_labels = real["label"][()], gen["label"][()]
            for k in range(len(names)):
                rows.append((
                    names[k],
                    _pick(real, n_per_panel, rng, mask=train_mask & (real_labels == k)),
                    _pick(gen, n_per_panel, rng, mask=gen_labels == k),
                ))
        else:
            rows.append((dataset.upper(), _pick(real, n_per_panel, rng, mask=train_mask),
                         _pick(gen, n_per_panel, rng)))
    fig, axes = plt.subplots(len(rows), 2, figsize=(8, 4 * len(rows)), squeeze=False)
    for r, (name, real_imgs, gen_imgs) in enumerate(rows):
        for c, (imgs, what) in enumerate(((real_imgs, "training"), (gen_imgs, f"generated, guidance {guidance:g}"))):
            ax = axes[r, c]
            if imgs.size:
                ax.imshow(tile(imgs, ncols), cmap="inferno", vmin=0.0, vmax=1.0)
            ax.set_title(f"{name}: {what} ({len(imgs)})")
            ax.axis("off")
    fig.tight_layout()
    output = Path(output)
    save_figure(fig, output, dpi=120)
    plt.close(fig)
    return output


def record_trajectory(
    net,
    meta: Mapping,
    *,
    seed: int,
    guidance: float,
    sampler: Mapping | None = None,
    settings: Mapping | None = None,
    index: int = 0,
    device: torch.device | str = "cpu",
    model_digest: str | None = None,
) -> list[StepInfo]:
    """Sample image ``index`` of a set and keep every step's x_i and D(x_i; sigma_i).

    ``model_digest`` checks a schedule file in ``sampler`` (:func:`~radiogen.sampler.generate.schedule_levels`).
    """
    sampler = generate.sampler_settings(sampler)
    sigmas = generate.schedule_levels(sampler, model_digest=model_digest)
    del sampler["schedule"]
    noise, generators = generate.image_noise(seed, [index], generate.image_shape(meta))
    arrays = generate.conditioning(meta, settings or {}, [index], seed=seed)
    context = torch.from_numpy(arrays["context"]).to(device)
    if getattr(net, "context_dim", None) == 0:
        context = None
    steps: list[StepInfo] = []
    with torch.no_grad():
        solve(
            net, noise.to(device), context=context,
            guidance=float(guidance), generators=generators, callback=steps.append, sigmas=sigmas, **sampler,
        )
    return steps


def plot_trajectory(steps: list[StepInfo], output: str | Path, *, n_show: int = 6) -> Path:
    """Rows: noisy state x_i and denoiser output D(x_i; sigma_i) at ``n_show`` steps, then x_N."""
    picks = np.unique(np.linspace(0, len(steps) - 1, n_show).round().astype(int))
    fig, axes = plt.subplots(2, len(picks) + 1, figsize=(2.2 * (len(picks) + 1), 4.6), squeeze=False)
    for col, i in enumerate(picks):
        step = steps[i]
        x = step.x[0, 0].float().cpu().numpy()
        d = step.denoised[0, 0].float().cpu().numpy()
        axes[0, col].imshow(x, cmap="inferno")
        axes[0, col].set_title(f"x_{i}, σ={step.sigma:.3g}", fontsize=8)
        axes[1, col].imshow(np.clip(d, -1, 1), cmap="inferno", vmin=-1, vmax=1)
        axes[1, col].set_title(f"D(x_{i}; σ)", fontsize=8)
    final = steps[-1].x_next[0, 0].float().cpu().numpy()
    axes[0, -1].imshow(np.clip(final, -1, 1), cmap="inferno", vmin=-1, vmax=1)
    axes[0, -1].set_title(f"x_{len(steps)} (σ=0)", fontsize=8)
    axes[1, -1].imshow((np.clip(final, -1, 1) + 1) / 2, cmap="inferno", vmin=0, vmax=1)
    axes[1, -1].set_title("output in [0, 1]", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    output = Path(output)
    save_figure(fig, output, dpi=120)
    plt.close(fig)
    return output
