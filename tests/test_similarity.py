"""Similarity and memorisation (paper Appendix A) on real FIRST images."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest
import scipy.ndimage
import torch

from radiogen.evaluation import similarity as sim

torch.set_num_threads(1)


def first_crops(zip_path, split: str, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` real FIRST images of one split, centre 80x80 crop, scaled to [0, 1]."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith(".png") and f"/{split}/" in m)
        pick = np.random.default_rng(seed).choice(len(names), size=min(n, len(names)), replace=False)
        out = []
        for i in sorted(pick):
            image = np.asarray(Image.open(io.BytesIO(zf.read(names[i]))).convert("L"), dtype=np.float32)
            c0 = (image.shape[0] - 80) // 2
            c1 = (image.shape[1] - 80) // 2
            out.append(image[c0 : c0 + 80, c1 : c1 + 80] / 255.0)
    return np.stack(out)


@pytest.fixture(scope="module")
def train_images(first_zip):
    return first_crops(first_zip, "train", 160, seed=1)


@pytest.fixture(scope="module")
def test_images(first_zip):
    return first_crops(first_zip, "test", 60, seed=2)


def _ssim_direct(x, y, c1=sim.SSIM_C1, c2=sim.SSIM_C2):
    x = x.astype(np.float64).ravel()
    y = y.astype(np.float64).ravel()
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(ddof=1), y.var(ddof=1)
    cxy = np.cov(x, y)[0, 1]
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def test_global_ssim_matches_definition_and_self_is_one(train_images):
    x, y = train_images[:5], train_images[5:12]
    s = sim.ssim_global(x, y)
    assert s.shape == (5, 7)
    assert s[2, 3] == pytest.approx(_ssim_direct(x[2], y[3]), rel=1e-10)
    self_s = sim.ssim_global(x, x)
    np.testing.assert_allclose(np.diag(self_s), 1.0, rtol=1e-12)
    np.testing.assert_allclose(self_s, self_s.T, rtol=1e-12)
    assert np.all(s < 1.0)


def test_windowed_ssim_matches_filter_implementation(train_images):
    x, y = train_images[:3], train_images[3:5]
    s = sim.ssim_windowed(x, y, window="uniform", size=7)
    np.testing.assert_allclose(np.diag(sim.ssim_windowed(x, x, window="gaussian")), 1.0, rtol=1e-10)

    def direct(a, b):
        a, b = a.astype(np.float64), b.astype(np.float64)
        f = lambda z: scipy.ndimage.uniform_filter(z, size=7)[3:-3, 3:-3]  # noqa: E731 ('valid' region)
        ma, mb = f(a), f(b)
        va, vb, cab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
        c1, c2 = sim.SSIM_C1, sim.SSIM_C2
        return np.mean((2 * ma * mb + c1) * (2 * cab + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))

    assert s[1, 0] == pytest.approx(direct(x[1], y[0]), rel=1e-8)


def test_principal_axis_of_an_elongated_source_is_levelled():
    y, x = np.mgrid[:80, :80] - 39.5
    for degrees in (35.0, -60.0):
        a = math.radians(degrees)
        u = x * math.cos(a) + y * math.sin(a)
        v = -x * math.sin(a) + y * math.cos(a)
        image = np.exp(-(u**2 / (2 * 10**2) + v**2 / (2 * 2.5**2)))
        tau = sim.pca_threshold(image[None])[0]
        assert math.degrees(sim.principal_angle(image, tau)) == pytest.approx(degrees, abs=1.0)
        aligned, _ = sim.align_images(image[None])
        level = sim.principal_angle(aligned[0], sim.pca_threshold(aligned)[0])
        assert abs(math.degrees(level)) < 1.0


def test_rotated_copy_matches_after_alignment(train_images):
    # The most elongated of the sample, so that the principal axis is well defined.
    tau = sim.pca_threshold(train_images)
    spread = [np.ptp(np.nonzero(im > t)[1]) if np.any(im > t) else 0 for im, t in zip(train_images, tau)]
    image = train_images[int(np.argmax(spread))]
    rotated = scipy.ndimage.rotate(image, 40.0, reshape=False, order=1, mode="constant", cval=float(np.median(image)))
    raw = sim.ssim_global(image[None], rotated[None])[0, 0]
    aligned, _ = sim.align_images(np.stack([image, rotated]))
    s = sim.nearest_training(aligned[:1], aligned[1:], k=1, flips=True)[0][0, 0]
    assert s > 0.9
    assert s > raw + 0.2


def test_nearest_training_finds_copies_with_batches(train_images):
    picks = np.array([3, 50, 151])
    generated = train_images[picks][:, ::-1, :]  # mirrored copies
    s, idx = sim.nearest_training(generated, train_images, k=5, flips=True, batch_size=37)
    np.testing.assert_array_equal(idx[:, 0], picks)
    np.testing.assert_allclose(s[:, 0], 1.0, rtol=1e-12)
    assert np.all(np.diff(s, axis=1) <= 0)
    variants = [generated, generated[:, ::-1], generated[:, :, ::-1], generated[:, ::-1, ::-1]]
    full = np.max([sim.ssim_global(v, train_images) for v in variants], axis=0)
    np.testing.assert_allclose(s[:, 1], np.sort(full, axis=1)[:, -2], rtol=1e-12)


def test_memorisation_number_high_for_copies_low_for_unseen(train_images, test_images):
    aligned_train, _ = sim.align_images(train_images)
    ref, chosen = sim.reference_nearest(aligned_train, n_reference=None, seed=0)
    assert len(ref) == len(train_images) and np.all(ref < 1.0)

    copies, _ = sim.align_images(train_images[:40])
    s_copy, _ = sim.nearest_training(copies, aligned_train, k=1)
    high = sim.memorisation_number(s_copy[:, 0], ref)
    assert high["fraction"] > 0.9

    unseen, _ = sim.align_images(test_images)
    s_new, _ = sim.nearest_training(unseen, aligned_train, k=1)
    low = sim.memorisation_number(s_new[:, 0], ref)
    assert low["fraction"] < 0.15
    assert low["threshold_ssim"] == pytest.approx(np.percentile(ref, 99))


def test_reference_excludes_duplicates(train_images):
    training = np.concatenate([train_images[:20], train_images[:1]])  # image 0 duplicated as 20
    ref, _ = sim.reference_nearest(training, n_reference=None, seed=0)
    assert np.all(ref < 1.0)


def test_threshold_is_lowered_for_faint_images_like_snr_sigma():
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, (1, 40, 40))
    image[0, 20, 20] = 3.2  # only a ~3 sigma peak: nothing above 5 sigma
    tau = sim.pca_threshold(image, n_sigma=5.0)[0]
    assert np.count_nonzero(image > tau) >= 3
    assert tau < 3.2


def test_intensity_weights_resist_faint_background_pixels():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:80, :80] - 39.5
    a = math.radians(-50.0)
    u = x * math.cos(a) + y * math.sin(a)
    v = -x * math.sin(a) + y * math.cos(a)
    image = np.exp(-(u**2 / (2 * 9**2) + v**2 / (2 * 2**2)))
    # Faint smooth background bumps, as on simulated or deconvolved images.
    background = scipy.ndimage.gaussian_filter(rng.normal(size=(80, 80)), 3)
    image += 0.04 * background / background.std()
    tau = 0.05  # ~1.2 background sigma: many background pixels pass
    weighted = math.degrees(sim.principal_angle(image, tau, weights="intensity"))
    bare = math.degrees(sim.principal_angle(image, tau, weights="none"))
    assert weighted == pytest.approx(-50.0, abs=3.0)
    assert abs(bare + 50.0) > 20.0
