"""EDM preconditioning of the denoiser (Karras et al. 2022, Table 1 and Eq. 7).

D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)),
with sigma_data = 0.5 (paper Sect. 4.1) so that the network's input and
training target both have unit variance at every noise level.
"""

from __future__ import annotations

import torch
from torch import nn

from radiogen.model.networks import UNet, check_image_size

__all__ = ["EDMPrecond", "c_skip", "c_out", "c_in", "c_noise", "SIGMA_DATA"]

#: Standard deviation of the training images in [-1, 1] assumed by the paper.
SIGMA_DATA = 0.5


def c_skip(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)  (Karras et al. 2022, Table 1)."""
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def c_out(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)  (Table 1)."""
    return sigma * sigma_data / torch.sqrt(sigma**2 + sigma_data**2)


def c_in(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """c_in = 1 / sqrt(sigma^2 + sigma_data^2)  (Table 1)."""
    return 1.0 / torch.sqrt(sigma**2 + sigma_data**2)


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """c_noise = ln(sigma) / 4  (Table 1)."""
    return torch.log(sigma) / 4.0


class EDMPrecond(nn.Module):
    """The preconditioned denoiser D(x; sigma) around a :class:`UNet`.

    Call as ``net(x, sigma, context=None, context_mask=None)``: x (B, C, H, W),
    sigma a scalar or (B,) tensor of noise standard deviations (image units,
    images in [-1, 1]), context (B, K), context_mask (B,) bool where True
    replaces the context by the learned null token; ``context=None`` drops it
    for all samples.  The coefficients are computed in float32 even under
    autocast; the output has the dtype of ``x``.

    Parameters
    ----------
    unet : UNet or LofarDiffusionUNet
        The raw network F.
    sigma_data : float
        Data standard deviation (paper: 0.5).
    image_size : tuple of int, optional
        (H, W) the model was built for; checked on construction.
    """

    def __init__(
        self, unet: nn.Module, *, sigma_data: float = SIGMA_DATA, image_size: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.unet = unet
        self.sigma_data = float(sigma_data)
        if image_size is not None:
            check_image_size(int(image_size[0]), int(image_size[1]), unet.n_levels)

    @property
    def context_dim(self) -> int:
        return int(self.unet.context_dim)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x32 = x.float()
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma = sigma.reshape(-1).expand(x.shape[0]) if sigma.numel() == 1 else sigma.reshape(-1)
        s = sigma[:, None, None, None]
        f = self.unet((c_in(s, self.sigma_data) * x32).to(x.dtype), c_noise(sigma), context, context_mask)
        d = c_skip(s, self.sigma_data) * x32 + c_out(s, self.sigma_data) * f.float()
        return d.to(x.dtype)
