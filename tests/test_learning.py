"""The training + sampling path learns class-conditional structure, end to end.

A two-class toy survey (one compact central source vs a double source
symmetric about the centre) is small enough to learn in a couple of minutes
on one CPU thread.  The judge is a physical measure the model never sees: the
share of the image's flux inside the central disc.  A model trained through
:func:`radiogen.model.train.train` and sampled through
:func:`radiogen.sampler.generate.generate_images` with classifier-free
guidance must make the judge tell its two classes apart; the untrained
network, run through the same path, must not.  (The demo's FIRST model is
judged the same way by the ResNet-18 classifier in the workflow.)
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from radiogen.model import load_model
from radiogen.model.train import train
from radiogen.sampler.generate import generate_images

SIZE = 32
CLASSES = ["Compact", "Double"]
#: Radius (px) of the central disc of the judge.
CORE_RADIUS = 5.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _toy_image(label: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) - (SIZE - 1) / 2
    if label == 0:
        centres = [(0.0, 0.0)]
    else:
        angle = rng.uniform(0, np.pi)
        r = rng.uniform(0.28, 0.36) * SIZE
        centres = [(r * np.cos(angle), r * np.sin(angle)), (-r * np.cos(angle), -r * np.sin(angle))]
    img = np.zeros((SIZE, SIZE), np.float32)
    for cx, cy in centres:
        width = rng.uniform(1.5, 2.5)
        img += rng.uniform(0.7, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)
    return (img - img.min()) / (img.max() - img.min())


def _write_toy_set(path, *, n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.stack([_toy_image(int(lab), rng) for lab in labels])
    with h5py.File(path, "w") as h5:
        h5["images"] = images
        h5["split"] = (np.arange(n) % 10 == 9).astype(np.uint8)
        h5["context"] = np.eye(2, dtype=np.float32)[labels]
        h5["label"] = labels.astype(np.int64)
        h5.attrs.update(dataset="first", class_names=json.dumps(CLASSES), pixel_scale_arcsec=1.8,
                        beam_arcsec=5.4, frequency_hz=1.4e9)
    return images, labels


def core_fraction(images: np.ndarray) -> np.ndarray:
    """Share of each image's flux (pixels above the image median) inside the central disc."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    core = np.hypot(xx, yy) <= CORE_RADIUS
    flux = np.clip(images - np.median(images, axis=(1, 2), keepdims=True), 0, None)
    return (flux * core).sum(axis=(1, 2)) / np.maximum(flux.sum(axis=(1, 2)), 1e-12)


def _judge_accuracy(images, labels, threshold) -> float:
    predicted = (core_fraction(images) < threshold).astype(int)  # 0 compact, 1 double
    return float((predicted == labels).mean())


@pytest.mark.slow
def test_trained_model_makes_both_classes_untrained_does_not(tmp_path):
    data = tmp_path / "toy.h5"
    real, labels = _write_toy_set(data, n=320, seed=5)
    # The judge's threshold comes from the real images, halfway between the classes.
    frac = core_fraction(real)
    threshold = 0.5 * (np.median(frac[labels == 0]) + np.median(frac[labels == 1]))
    assert _judge_accuracy(real, labels, threshold) > 0.95  # the judge itself can tell

    settings = {
        "lr": 2e-3, "ema_decay": 0.999, "ema_rampup_ratio": 0.1, "p_mean": -1.2, "p_std": 1.2,
        "channels_last": False, "log_every": 100, "val_sigmas": [0.1], "val_max_images": 16,
        "first": {"batch_size": 16, "steps": 600, "val_every": 1000, "checkpoint_every": 1000},
    }
    model_settings = {"base_channels": 8, "norm_groups": 4, "attention_head_channels": 8, "dropout": 0.0}
    out = tmp_path / "model.pt"
    train(data_path=data, out_path=out, train_settings=settings, model_settings=model_settings, seed=1)
    net, meta = load_model(out)
    net.eval()
    n_per_class = 40
    sample_labels = np.repeat(np.arange(2), n_per_class)

    def judged(network) -> float:
        result = generate_images(network, meta, np.arange(sample_labels.size), seed=2, guidance=1.0,
                                 sampler={"num_steps": 12}, settings={"n_per_class": n_per_class},
                                 batch_size=40)
        np.testing.assert_array_equal(result["label"], sample_labels)
        return _judge_accuracy(result["images"], result["label"], threshold)

    trained = judged(net)
    torch.manual_seed(0)
    untrained = judged(_untrained_like(meta))
    # 80 images: the binomial standard error at 50% is 5.6%, so 0.75 is > 4 sigma above chance.
    print(f"judge accuracy: trained {trained:.3f}, untrained {untrained:.3f}")
    assert trained >= 0.75, (trained, untrained)
    assert untrained <= 0.65, (trained, untrained)


def _untrained_like(meta):
    from radiogen.model import build_network

    net = build_network(meta["model_config"])
    return net.eval()
