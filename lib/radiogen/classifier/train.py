"""Training of the morphology classifier with per-epoch checkpoints and resume.

Paper Sect. 5.3: cross-entropy weighted by the reciprocal class frequency of
the training split (w_k = N / n_k), Adam, ReduceLROnPlateau on the validation
loss, the augmentations of :mod:`radiogen.classifier.augment`; train on the
archive's ``train`` split, select the epoch on ``valid``, report on ``test``.

Determinism: the global seed enters as ``SeedSequence([seed, TRAIN_SEED_OFFSET])``;
weights are initialised from it, and epoch e shuffles and augments with a
generator seeded from ``(seed, TRAIN_SEED_OFFSET, e)``, so an interrupted run
that resumes from its last checkpoint continues exactly as if uninterrupted
(the torch RNG state used by dropout is checkpointed too).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from radiogen.classifier.augment import AugmentSettings, augment_batch
from radiogen.classifier.metrics import classification_report
from radiogen.classifier.network import MorphologyClassifier
from radiogen.config import section_defaults
from radiogen.errors import ConfigError, InputFileError
from radiogen.first.dataset import CLASS_NAMES, FirstDataset
from radiogen.progress import Progress
from radiogen.seeds import stream
from radiogen.testhooks import block_point

__all__ = [
    "DEFAULT_SETTINGS",
    "TRAIN_SEED_OFFSET",
    "resolve_device",
    "to_model_input",
    "train_classifier",
    "predict",
]

log = logging.getLogger(__name__)

#: Seed stream (second SeedSequence entry, radiogen.seeds) of classifier training.
TRAIN_SEED_OFFSET = stream("classifier.train")

#: Defaults of the ``classifier`` config section, from its schema (``threads`` is
#: the job's core count, handed to torch by the CLI, not a training setting).
DEFAULT_SETTINGS = {k: v for k, v in section_defaults("classifier").items() if k != "threads"}

_CHECKPOINT = "last.pt"


def merged_settings(settings: dict | None) -> dict:
    """Defaults overlaid with ``settings``; unknown keys are configuration errors."""
    merged = copy.deepcopy(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in merged:
            raise ConfigError(f"classifier.{key}: unknown setting (known: {', '.join(sorted(merged))})")
        if key == "augment":
            unknown = set(value) - set(merged["augment"])
            if unknown:
                raise ConfigError(f"classifier.augment.{sorted(unknown)[0]}: unknown setting")
            merged["augment"].update(value)
        else:
            merged[key] = value
    if merged["selection_metric"] not in ("accuracy", "loss"):
        raise ConfigError("classifier.selection_metric must be 'accuracy' or 'loss'")
    if int(merged["epochs"]) < 1:
        raise ConfigError("classifier.epochs must be at least 1")
    if merged["lr_schedule"] not in ("plateau", "cosine"):
        raise ConfigError(f"classifier.lr_schedule must be 'plateau' or 'cosine', got {merged['lr_schedule']!r}")
    return merged


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (or None) -> CUDA when available, else CPU."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"classifier.device={name}: CUDA is not available on this machine")
    return device


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images (N, H, W) or (N, 1, H, W) in [0, 1] -> float32 tensor (N, 1, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32) if not torch.is_tensor(images) else images)
    x = x.to(torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
    return 2.0 * x - 1.0


@torch.no_grad()
def predict(model: MorphologyClassifier, x: torch.Tensor, *, batch_size: int, device: torch.device,
            progress: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and embeddings (CPU tensors) of model inputs ``x`` in [-1, 1], eval mode.

    ``progress`` names the images for a progress bar (log lines in batch jobs); None: silent.
    """
    model.eval()
    logits, embeddings = [], []
    bar = Progress(len(x), progress, logger=log) if progress else None
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device)
        features = model.embed(batch)
        logits.append(model.head(features).float().cpu())
        embeddings.append(features.float().cpu())
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()
    if not logits:
        return torch.zeros(0, model.config["num_classes"]), torch.zeros(0, model.norm.num_features)
    return torch.cat(logits), torch.cat(embeddings)


@torch.no_grad()
def recalibrate_batchnorm(model: MorphologyClassifier, x: torch.Tensor, *, batch_size: int,
                          device: torch.device) -> None:
    """Replace every BatchNorm running mean/variance by the plain average over ``x``.

    Short runs change the weights faster than the exponential running averages
    (momentum 0.1) follow, which can make eval-mode predictions collapse onto one
    class; re-estimating the statistics for the current weights removes that lag.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if len(batch) > 1:
            model.embed(batch.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def _fingerprint(settings: dict, seed: int, labels: np.ndarray, splits: np.ndarray, images: np.ndarray) -> str:
    relevant = {k: v for k, v in settings.items() if k not in ("device", "eval_batch_size")}
    digest = hashlib.sha256(json.dumps({"settings": relevant, "seed": seed}, sort_keys=True).encode())
    digest.update(labels.astype(np.int64).tobytes())
    digest.update(splits.astype(np.uint8).tobytes())
    digest.update(np.ascontiguousarray(images, dtype=np.float32).tobytes())  # every pixel: any change restarts
    return digest.hexdigest()


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, TRAIN_SEED_OFFSET, epoch]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn or foreign file: start over rather than fail
        log.warning("%s: unreadable checkpoint (%s); starting from epoch 1", path, err)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("%s: checkpoint is for other settings or data; starting from epoch 1", path)
        return None
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    from radiogen.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_classifier(
    dataset: FirstDataset,
    *,
    settings: dict | None = None,
    seed: int,
    checkpoint_dir: str | Path,
    device: str | torch.device | None = None,
) -> dict:
    """Train the classifier; resume from ``checkpoint_dir/last.pt`` when it matches.

    Parameters
    ----------
    dataset : FirstDataset
        Cropped images in [0, 1] with the archive splits in ``table.first_split``
        (0 train, 1 valid, 2 test) and labels in ``table.label``.
    settings : dict
        The ``classifier`` config section (missing keys take :data:`DEFAULT_SETTINGS`).
    seed : int
        Global seed.
    checkpoint_dir : str or Path
        Directory of the per-epoch checkpoint ``last.pt`` (kept across kills).
    device : str or torch.device or None
        Overrides ``settings["device"]``.

    Returns
    -------
    dict
        ``model`` (best epoch weights loaded, eval mode), ``best_epoch``, ``history``
        (per epoch: train/valid loss and accuracy, learning rate, seconds),
        ``metrics`` (``valid`` and ``test`` classification reports of the best
        epoch), ``class_weights``, ``settings``, ``device``, ``epochs_run`` (this call).
    """
    settings = merged_settings(settings)
    device = resolve_device(device if device is not None else settings["device"])
    images = dataset.images
    labels = dataset.table["label"].to_numpy(np.int64)
    splits = dataset.table["first_split"].to_numpy(np.uint8)
    num_classes = len(CLASS_NAMES)
    index = {name: np.flatnonzero(splits == code) for code, name in enumerate(("train", "valid", "test"))}
    for name, members in index.items():
        if len(members) == 0:
            raise InputFileError(f"classifier training: the dataset has no {name!r} images")
    counts = np.bincount(labels[index["train"]], minlength=num_classes)
    if (counts == 0).any():
        raise InputFileError(f"classifier training: class {CLASS_NAMES[int(np.argmin(counts))]} has no training images")
    # reciprocal class proportion in the training split, w_k = N / n_k
    class_weights = torch.tensor(len(index["train"]) / counts, dtype=torch.float32)

    x_all = to_model_input(images)
    y_all = torch.from_numpy(labels.copy())
    x_train, y_train = x_all[index["train"]], y_all[index["train"]]
    x_valid, y_valid = x_all[index["valid"]], y_all[index["valid"]]

    base_seed = int(np.random.SeedSequence([seed, TRAIN_SEED_OFFSET]).generate_state(1)[0])
    torch.manual_seed(base_seed)
    model = MorphologyClassifier(num_classes=num_classes, hidden_units=int(settings["hidden_units"]),
                                 dropout=float(settings["dropout"])).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(settings["learning_rate"]),
                                 weight_decay=float(settings["weight_decay"]))
    if settings["lr_schedule"] == "cosine":
        # a short run ends at a low learning rate instead of wherever the plateau rule left it
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=int(settings["epochs"]), eta_min=float(settings["min_lr"]))
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=float(settings["lr_factor"]), patience=int(settings["lr_patience"]),
            min_lr=float(settings["min_lr"]))
    augment = AugmentSettings.from_dict(settings["augment"])
    weights_device = class_weights.to(device)

    checkpoint_path = Path(checkpoint_dir) / _CHECKPOINT
    fingerprint = _fingerprint(settings, seed, labels, splits, images)
    state = _load_checkpoint(checkpoint_path, fingerprint)
    history: list[dict] = []
    best = {"epoch": None, "accuracy": -1.0, "loss": float("inf"), "state_dict": None}
    start_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        best = state["best"]
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        log.info("resuming from %s: epochs 1-%d done, continuing at epoch %d of %d",
                 checkpoint_path, state["epoch"], start_epoch, settings["epochs"])

    epochs = int(settings["epochs"])
    batch_size = int(settings["batch_size"])
    per_epoch = settings["max_train_images_per_epoch"]
    n_epoch_images = len(x_train) if per_epoch is None else min(int(per_epoch), len(x_train))
    log.info("training on %s: %d train / %d valid / %d test images, %d per epoch, epochs %d-%d, class weights %s",
             device, len(x_train), len(x_valid), len(index["test"]), n_epoch_images, start_epoch, epochs,
             np.round(class_weights.numpy(), 3).tolist())
    epochs_run = 0
    for epoch in range(start_epoch, epochs + 1):
        started = time.monotonic()
        generator = _epoch_generator(seed, epoch)
        order = torch.randperm(len(x_train), generator=generator)[:n_epoch_images]
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < 2:
                continue  # BatchNorm needs more than one sample per batch in training mode
            xb = augment_batch(x_train[batch], settings=augment, generator=generator).to(device)
            yb = y_train[batch].to(device)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, weight=weights_device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(batch)
        n_recal = min(int(settings["bn_recalibration_images"]), len(x_train))
        if n_recal > 1:
            recalibrate_batchnorm(model, x_train[order[:n_recal]], batch_size=batch_size, device=device)
        logits_valid, _ = predict(model, x_valid, batch_size=int(settings["eval_batch_size"]), device=device)
        valid_loss = float(F.cross_entropy(logits_valid, y_valid, weight=class_weights))
        valid_accuracy = float((logits_valid.argmax(1) == y_valid).float().mean())
        if settings["lr_schedule"] == "cosine":
            scheduler.step()
        else:
            scheduler.step(valid_loss)
        seconds = time.monotonic() - started
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "valid_loss": valid_loss,
            "valid_accuracy": valid_accuracy,
            "learning_rate": float(optimizer.param_groups[0]["lr"]),
            "seconds": seconds,
        }
        history.append(record)
        better = (valid_accuracy, -valid_loss) > (best["accuracy"], -best["loss"]) \
            if settings["selection_metric"] == "accuracy" else valid_loss < best["loss"]
        if better:
            best = {"epoch": epoch, "accuracy": valid_accuracy, "loss": valid_loss,
                    "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        _save_checkpoint(checkpoint_path, {
            "epoch": epoch,
            "fingerprint": fingerprint,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": history,
            "best": best,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        })
        block_point("classifier.epoch", epoch)
        epochs_run += 1
        log.info("epoch %d/%d: train loss %.4f acc %.3f | valid loss %.4f acc %.3f | lr %.2e | %.1f s, %.1f img/s%s",
                 epoch, epochs, record["train_loss"], record["train_accuracy"], valid_loss, valid_accuracy,
                 record["learning_rate"], seconds, seen / max(seconds, 1e-9), " (best)" if better else "")

    model.load_state_dict(best["state_dict"])
    model.eval()
    metrics = {}
    for name in ("valid", "test"):
        logits, _ = predict(model, x_all[index[name]], batch_size=int(settings["eval_batch_size"]), device=device)
        metrics[name] = classification_report(labels[index[name]], logits.argmax(1).numpy(), CLASS_NAMES)
    log.info("selected epoch %s: valid accuracy %.3f, test accuracy %.3f", best["epoch"],
             metrics["valid"]["accuracy"], metrics["test"]["accuracy"])
    return {
        "model": model,
        "best_epoch": best["epoch"],
        "history": history,
        "metrics": metrics,
        "class_weights": class_weights.tolist(),
        "settings": settings,
        "device": str(device),
        "epochs_run": epochs_run,
    }
