"""EDM training loss (Karras et al. 2022, Eq. 2 and Table 1; paper Sect. 4.2).

L = E_{sigma, x, n} [ lambda(sigma) || D(x + n; sigma) - x ||^2 ],
ln sigma ~ N(P_mean, P_std^2), n ~ N(0, sigma^2 I),
lambda(sigma) = 1 / c_out(sigma)^2 = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2.
"""

from __future__ import annotations

import torch

from radiogen.model.precond import SIGMA_DATA

__all__ = ["loss_weight", "sample_sigma", "denoising_loss", "EDMLoss"]


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2  (Karras et al. 2022, Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sample_sigma(
    batch: int, *, p_mean: float, p_std: float, device=None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw sigma with ln sigma ~ N(P_mean, P_std^2)  (Karras et al. 2022, Table 1, p_train)."""
    return torch.exp(p_mean + p_std * torch.randn(batch, device=device, generator=generator))


def denoising_loss(
    net,
    images: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    *,
    context: torch.Tensor | None = None,
    context_mask: torch.Tensor | None = None,
    sigma_data: float = SIGMA_DATA,
) -> torch.Tensor:
    """Per-sample weighted loss lambda(sigma) mean_pixels (D(x + sigma n; sigma) - x)^2.

    ``noise`` is standard normal with the shape of ``images``; the result has
    shape (B,) in float32.  The mean over pixels (not the sum) keeps the loss
    O(1) for any image size.
    """
    s = sigma.float().reshape(-1, 1, 1, 1)
    denoised = net(images + s * noise, sigma, context, context_mask).float()
    err = (denoised - images.float()) ** 2
    return loss_weight(sigma.float(), sigma_data) * err.mean(dim=(1, 2, 3))


class EDMLoss:
    """Draws sigma and noise, then evaluates :func:`denoising_loss` (mean over the batch)."""

    def __init__(self, *, p_mean: float = -2.5, p_std: float = 1.8, sigma_data: float = SIGMA_DATA) -> None:
        self.p_mean = float(p_mean)
        self.p_std = float(p_std)
        self.sigma_data = float(sigma_data)

    def __call__(self, net, images: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        sigma = sample_sigma(images.shape[0], p_mean=self.p_mean, p_std=self.p_std, device=images.device)
        noise = torch.randn_like(images)
        return denoising_loss(net, images, sigma, noise, context=context, sigma_data=self.sigma_data).mean()
