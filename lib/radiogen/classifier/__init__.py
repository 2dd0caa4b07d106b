"""ResNet-18 morphology classifier of FIRST images (paper Sect. 5.3).

Public API for later rules (scoring generated images, feature-space distances)::

    model = load_classifier("results/classifier/classifier.pt", device="cpu")
    probabilities, embeddings = classify(images, model=model)

``images`` are (N, 80, 80) arrays in [0, 1], as in the training-set and
samples HDF5 files; they are rescaled internally to [-1, 1].
``probabilities`` is (N, 4) float32 (softmax over FRI, FRII, Compact, Bent);
``embeddings`` is (N, 512) float32: the ResNet-18 encoder output after the
batch norm (eval mode), the feature space used for Fréchet distances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from radiogen.classifier.network import EMBEDDING_DIM, MorphologyClassifier
from radiogen.errors import InputFileError

__all__ = ["EMBEDDING_DIM", "MorphologyClassifier", "load_classifier", "save_classifier", "classify"]

#: Format tag stored in classifier.pt.
FORMAT = "radiogen-classifier-1"


def save_classifier(path: str | Path, model: MorphologyClassifier, *, class_names, image_size: int,
                    train_config: dict, seed: int, best_epoch: int | None, metrics: dict) -> None:
    """Write ``classifier.pt`` atomically (torch.save of a plain dict).

    Keys: ``format``, ``model_config`` (MorphologyClassifier kwargs), ``state_dict``
    (weights of the selected epoch, CPU), ``class_names``, ``image_size`` (px),
    ``input_range`` ([0, 1]; rescaled to [-1, 1] inside), ``embedding_dim``,
    ``train_config``, ``seed``, ``best_epoch``, ``metrics`` (test/valid accuracy).
    """
    from radiogen.io import atomic_path

    payload = {
        "format": FORMAT,
        "model_config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "class_names": list(class_names),
        "image_size": int(image_size),
        "input_range": [0.0, 1.0],
        "embedding_dim": EMBEDDING_DIM,
        "train_config": train_config,
        "seed": int(seed),
        "best_epoch": best_epoch,
        "metrics": metrics,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_classifier(path: str | Path, *, device: str | torch.device = "cpu") -> MorphologyClassifier:
    """Rebuild the trained classifier from ``classifier.pt`` in eval mode.

    The returned module carries ``class_names``, ``image_size`` and ``meta``
    (the file's dict without the weights) as attributes.

    Raises
    ------
    InputFileError
        Missing file, or not a classifier file written by :func:`save_classifier`.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: classifier file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise InputFileError(f"{path}: not a readable torch file ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputFileError(f"{path}: not a radiogen classifier file (no format {FORMAT!r})")
    model = MorphologyClassifier(**payload["model_config"])
    model.load_state_dict(payload["state_dict"])
    model.eval().to(device)
    model.class_names = list(payload["class_names"])
    model.image_size = int(payload["image_size"])
    model.meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model


def classify(
    images: np.ndarray,
    *,
    model: MorphologyClassifier | str | Path,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and 512-dim embeddings of images in [0, 1].

    Parameters
    ----------
    images : numpy.ndarray
        (N, H, W) or (N, 1, H, W), values in [0, 1]; H = W = the training size (80).
    model : MorphologyClassifier or path
        A model from :func:`load_classifier`, or the path of ``classifier.pt``.
    batch_size : int
        Images per forward pass.
    device : str or torch.device or None
        Where to run; None keeps the model's device (CPU for a path).

    Returns
    -------
    probabilities : numpy.ndarray
        (N, 4) float32, softmax of the logits; columns in ``model.class_names`` order.
    embeddings : numpy.ndarray
        (N, 512) float32 encoder features after the batch norm.
    """
    from radiogen.classifier.train import predict, to_model_input

    if not isinstance(model, torch.nn.Module):
        model = load_classifier(model, device=device or "cpu")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.to(device)
    x = to_model_input(images)
    expected = getattr(model, "image_size", None)
    if expected is not None and tuple(x.shape[-2:]) != (expected, expected):
        raise ValueError(f"classifier expects {expected}x{expected} images, got {tuple(x.shape[-2:])}")
    if len(x) and (float(x.min()) < -1.0 - 1e-3 or float(x.max()) > 1.0 + 1e-3):
        raise ValueError("images must be scaled to [0, 1]")
    logits, embeddings = predict(model, x, batch_size=batch_size, device=device, progress="classifier images")
    return torch.softmax(logits, dim=1).numpy().astype(np.float32), embeddings.numpy().astype(np.float32)
