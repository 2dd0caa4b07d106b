"""Seeded training augmentations of the classifier (paper Sect. 5.3).

Applied in this order to images in [-1, 1], all parameters drawn per image
from a :class:`torch.Generator` so that a given (seed, epoch) gives the same batch:

1. 3x3 Gaussian blur, sigma ~ U(blur_sigma) (pixels);
2. additive Gaussian noise, sigma ~ U(noise_sigma) (in [-1, 1] units);
3. random crop of side s ~ U(crop_scale) times the image side, at a uniform
   position inside the image, resampled (bilinear) to the full size;
4. rotation by an angle ~ U(0, 360) deg; pixels that come from outside the
   crop are filled with ``fill`` (-1, the image minimum);
5. vertical flip with probability ``vflip_p``.

Steps 3 and 4 are one resampling: output pixel v maps to crop coordinate
u = R(theta) v and to image coordinate s u + c (normalised coordinates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from radiogen.config import section_defaults

__all__ = ["AugmentSettings", "augment_batch"]

#: ``classifier.augment`` defaults (the schema is their only source).
_DEFAULTS = section_defaults("classifier.augment")


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random augmentations (see module docstring); defaults from the schema."""

    blur_sigma: tuple[float, float] = tuple(_DEFAULTS["blur_sigma"])
    noise_sigma: tuple[float, float] = tuple(_DEFAULTS["noise_sigma"])
    crop_scale: tuple[float, float] = tuple(_DEFAULTS["crop_scale"])
    rotate: bool = _DEFAULTS["rotate"]
    fill: float = _DEFAULTS["fill"]
    vflip_p: float = _DEFAULTS["vflip_p"]
    enabled: bool = _DEFAULTS["enabled"]

    @classmethod
    def from_dict(cls, settings: dict | None) -> "AugmentSettings":
        settings = dict(settings or {})
        for key in ("blur_sigma", "noise_sigma", "crop_scale"):
            if key in settings:
                settings[key] = tuple(float(v) for v in settings[key])
        return cls(**settings)


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def gaussian_blur3(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (B, 1, H, W) with its own normalised 3x3 Gaussian kernel."""
    offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    k1 = torch.exp(-(offsets[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    kernels = (k1[:, :, None] * k1[:, None, :]).to(x)  # (B, 3, 3)
    batch = x.shape[0]
    padded = F.pad(x.reshape(1, batch, *x.shape[-2:]), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernels[:, None], groups=batch).reshape_as(x)


def augment_batch(x: torch.Tensor, *, settings: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Randomly augment a batch ``x`` (B, 1, H, W) in [-1, 1]; returns a new tensor.

    The random draws happen on the CPU generator, so results do not depend on
    the device ``x`` lives on.
    """
    if not settings.enabled:
        return x
    batch = x.shape[0]
    device = x.device
    sigma_blur = _uniform(batch, settings.blur_sigma, generator)
    x = gaussian_blur3(x, sigma_blur)
    sigma_noise = _uniform(batch, settings.noise_sigma, generator).to(x)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=device, dtype=x.dtype)
    x = x + sigma_noise[:, None, None, None] * noise

    scale = _uniform(batch, settings.crop_scale, generator)
    # crop centre in normalised coordinates, uniform over positions keeping the crop inside
    centre = (1.0 - scale)[:, None] * (2.0 * torch.rand(batch, 2, generator=generator, dtype=torch.float64) - 1.0)
    angle = 2.0 * math.pi * torch.rand(batch, generator=generator, dtype=torch.float64)
    if not settings.rotate:
        angle = torch.zeros_like(angle)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    theta_u = torch.cat([rotation, torch.zeros(batch, 2, 1, dtype=torch.float64)], dim=2)
    grid_u = F.affine_grid(theta_u.to(torch.float32), list(x.shape), align_corners=False).to(device)
    outside = (grid_u.abs() > 1.0).any(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    grid = grid_u * scale.to(device=device, dtype=grid_u.dtype)[:, None, None, None] \
        + centre.to(device=device, dtype=grid_u.dtype)[:, None, None, :]
    # sampling x - fill with zero padding makes out-of-image pixels equal to fill
    shifted = F.grid_sample(x - settings.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = torch.where(outside, torch.zeros_like(shifted), shifted) + settings.fill

    flip = torch.rand(batch, generator=generator) < settings.vflip_p
    if flip.any():
        flip = flip.to(device)
        x = torch.where(flip[:, None, None, None], x.flip(-2), x)
    return x
