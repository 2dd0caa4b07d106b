"""The seed paper's own U-Net ("lofar-diffusion" architecture), written for radiogen.

Vicanek Martinez et al. (2024) describe their denoiser network in Sect. 4.1 and
publish its code and trained weights (repository tmartinezML/LOFAR-Diffusion).
radiogen's default :class:`~radiogen.model.networks.UNet` follows the paper text;
this module is the function their published weights compute, so that the
weights run in radiogen unchanged (:mod:`radiogen.model.lofar_import` maps their
parameter names onto the ones here).  What differs from radiogen's network:

* the 3x3 convolutions of the input layer and of every block standardise their
  weights per output channel in the forward pass (Qiao et al. 2019,
  "weight standardisation"): W' = (W - mean W) / sqrt(var W + eps), biased
  variance over (in, kh, kw), eps 1e-5 in float32 and 1e-3 in lower precision;
* the noise level enters through a fixed sinusoidal code of c_noise only (no
  learned layer before the sum); a class enters as one-hot through a linear
  map without bias, a continuous context (peak flux) through two linear layers
  each followed by GELU; the sum passes two more such layers;
* "no context" (unconditional pass, classifier-free guidance) leaves the
  context term out of the sum: there is no learned null token;
* the self-attention is Shen et al.'s efficient attention with a GroupNorm of
  32 groups before it (whatever ``norm_groups`` says) and a GroupNorm of one
  group after its output convolution, added to its input;
* every block's output is clamped to the finite range of its dtype.

The block layout (encoder, bottleneck, decoder with one skip per block,
pixel-unshuffle downsampling, nearest upsampling) is the same as radiogen's.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from radiogen.errors import ConfigError
from radiogen.model.networks import check_image_size

__all__ = ["LofarDiffusionUNet", "StandardisedConv2d", "LinearAttention", "ResBlock", "CONTEXT_KINDS"]

#: How the context vector enters: ``values`` a continuous vector (LoTSS peak
#: flux, MLP), ``labels`` a one-hot class vector (FIRST, linear without bias).
CONTEXT_KINDS = ("values", "labels")

#: GroupNorm groups before every attention layer: fixed in the authors' network.
ATTENTION_NORM_GROUPS = 32


def _finite(x: torch.Tensor) -> torch.Tensor:
    """Clamp +-inf (and overflowing values) to the largest finite value of x's dtype."""
    limit = torch.finfo(x.dtype).max
    return x.clamp(min=-limit, max=limit)


class StandardisedConv2d(nn.Conv2d):
    """Conv2d whose kernel is standardised per output channel in every forward pass.

    W' = (W - mean(W)) / sqrt(var(W) + eps), mean and biased variance over the
    (in_channels, kh, kw) entries of each output channel (Qiao et al. 2019);
    eps = 1e-5 for float32 inputs and 1e-3 otherwise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        w = (w - mean) * torch.rsqrt(var + eps)
        out = F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return _finite(out)


class _GeluMLP(nn.Module):
    """Two linear layers, each followed by GELU."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.first = nn.Linear(dim_in, dim_out)
        self.second = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.second(F.gelu(self.first(x))))


def sinusoidal_code(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(c f_k), cos(c f_k)], f_k = 1e5^(-k/(dim/2 - 1)), k = 0..dim/2-1: (B,) -> (B, dim)."""
    half = dim // 2
    k = torch.arange(half, device=c_noise.device)
    freqs = torch.exp(k * (-math.log(1e5) / (half - 1)))
    angles = c_noise[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class LinearAttention(nn.Module):
    """Efficient attention (Shen et al. 2021) with residual: x + GN_1(conv(A(GN_32(x)))).

    Per head with Q, K, V of shape (c, n): A = (softmax_n(K) V^T)^T softmax_c(Q / sqrt(c)).
    """

    def __init__(self, channels: int, *, heads: int, head_channels: int) -> None:
        super().__init__()
        if channels % ATTENTION_NORM_GROUPS:
            raise ConfigError(
                f"model.architecture lofar-diffusion: attention layers normalise over "
                f"{ATTENTION_NORM_GROUPS} groups, which does not divide their {channels} channels; "
                "use base_channels * channel_mults that are multiples of 32 at attention levels"
            )
        self.heads = heads
        self.head_channels = head_channels
        hidden = heads * head_channels
        self.norm = nn.GroupNorm(ATTENTION_NORM_GROUPS, channels)
        self.qkv = nn.Conv2d(channels, 3 * hidden, 1)
        self.proj = nn.Conv2d(hidden, channels, 1)
        self.norm_out = nn.GroupNorm(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, self.head_channels, height * width).unbind(1)
        q = (q * self.head_channels**-0.5).softmax(dim=-2)  # over channels
        k = k.softmax(dim=-1)  # over positions
        summary = torch.einsum("bhcn,bhen->bhce", k, v)  # (c x c) per head
        out = torch.einsum("bhce,bhcn->bhen", summary, q).reshape(batch, -1, height, width)
        return self.norm_out(self.proj(out)) + x


class ResBlock(nn.Module):
    """Residual block: GN, SiLU, [resample], WS-conv3x3, GN, scale/shift, SiLU, dropout, WS-conv3x3.

    The scale/shift is h * (1 + scale) + shift with (scale, shift) = Linear(SiLU(emb)).
    Down-sampling: pixel unshuffle into 4 sub-images, then a 1x1 conv back to the
    input channels (on both the main and the residual path); up-sampling:
    nearest-neighbour doubling.  A 1x1 conv maps the residual where channels change.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *, dropout: float,
                 norm_groups: int, resample: str | None = None) -> None:
        super().__init__()
        for ch in (in_channels, out_channels):
            if ch % norm_groups:
                raise ConfigError(f"model.norm_groups={norm_groups} does not divide {ch} channels of a block")
        self.resample = resample
        self.norm_in = nn.GroupNorm(norm_groups, in_channels)
        self.conv_in = StandardisedConv2d(in_channels, out_channels, 3, padding=1)
        if resample == "down":
            self.down_h = nn.Conv2d(4 * in_channels, in_channels, 1)
            self.down_x = nn.Conv2d(4 * in_channels, in_channels, 1)
        elif resample not in (None, "up"):
            raise ValueError(f"resample must be 'down', 'up' or None, not {resample!r}")
        self.film = nn.Linear(emb_dim, 2 * out_channels)
        self.norm_out = nn.GroupNorm(norm_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = StandardisedConv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _resample(self, x: torch.Tensor, conv: nn.Module | None) -> torch.Tensor:
        if self.resample == "down":
            return conv(F.pixel_unshuffle(x, 2))
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm_in(x))
        h = self.conv_in(self._resample(h, getattr(self, "down_h", None)))
        x = self._resample(x, getattr(self, "down_x", None))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm_out(h) * (scale + 1) + shift
        h = self.conv_out(self.dropout(F.silu(h)))
        if self.skip is not None:
            x = self.skip(x)
        return _finite(h + x)


class LofarDiffusionUNet(nn.Module):
    """F_theta(x; c_noise, context) of the authors' published network.

    Call as ``net(x, c_noise, context=None, context_mask=None)`` like radiogen's
    :class:`~radiogen.model.networks.UNet`; ``context`` (B, K) is the peak-flux
    context (``context_kind="values"``) or the one-hot class (``"labels"``), a
    True in ``context_mask`` (or ``context=None``) leaves the context out.

    Parameters
    ----------
    image_channels : int
        Image channels (1).
    base_channels : int
        Channels of the first level (authors: ``init_channels`` 128).
    channel_mults : sequence of int
        Per-level multipliers (authors: 1, 2, 2).
    enc_blocks : int
        Blocks per encoder level (authors: 2); each decoder level has one more.
    attention_levels, attention_heads, attention_head_channels : int
        Attention on the lowest ``attention_levels`` levels and in the bottleneck.
    norm_groups : int
        GroupNorm groups of the blocks and the output layer.
    dropout : float
        Dropout inside every block.
    context_dim : int
        K, the context length (0: unconditional network).
    context_kind : {"values", "labels"}
        How the context enters (see :data:`CONTEXT_KINDS`).
    context_dropout : float
        Probability of leaving a sample's context out in training.
    emb_mult : int
        Embedding width in units of ``base_channels`` (authors: 4).
    """

    def __init__(self, *, image_channels: int = 1, base_channels: int = 128, channel_mults=(1, 2, 2),
                 enc_blocks: int = 2, attention_levels: int = 2, attention_heads: int = 2,
                 attention_head_channels: int = 32, norm_groups: int = 32, dropout: float = 0.1,
                 context_dim: int = 0, context_kind: str = "values", context_dropout: float = 0.1,
                 emb_mult: int = 4) -> None:
        super().__init__()
        if not channel_mults:
            raise ConfigError("model.channel_mults must list at least one level")
        if context_kind not in CONTEXT_KINDS:
            raise ConfigError(f"context_kind must be one of {CONTEXT_KINDS}, not {context_kind!r}")
        self.n_levels = len(channel_mults)
        self.context_dim = int(context_dim)
        self.context_kind = context_kind
        self.context_dropout = float(context_dropout)
        self.emb_dim = emb_dim = emb_mult * base_channels
        if emb_dim % 2 or emb_dim < 4:
            raise ConfigError(f"embedding width emb_mult * base_channels = {emb_dim} must be even and >= 4")
        if self.context_dim:
            self.context_embed = (nn.Linear(self.context_dim, emb_dim, bias=False) if context_kind == "labels"
                                  else _GeluMLP(self.context_dim, emb_dim))
        self.embed_mlp = _GeluMLP(emb_dim, emb_dim)
        block = dict(dropout=dropout, norm_groups=norm_groups)
        attn = dict(heads=attention_heads, head_channels=attention_head_channels)

        def stage(in_ch: int, out_ch: int, level: int) -> nn.ModuleList:
            layers = nn.ModuleList([ResBlock(in_ch, out_ch, emb_dim, **block)])
            if self.n_levels - level <= attention_levels:
                layers.append(LinearAttention(out_ch, **attn))
            return layers

        self.conv_in = StandardisedConv2d(image_channels, base_channels, 3, padding=1)
        ch = base_channels
        skips = [ch]
        self.encoder = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(enc_blocks):
                self.encoder.append(stage(ch, base_channels * mult, level))
                ch = base_channels * mult
                skips.append(ch)
            if level < self.n_levels - 1:
                self.encoder.append(nn.ModuleList([ResBlock(ch, ch, emb_dim, resample="down", **block)]))
                skips.append(ch)
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, **block), LinearAttention(ch, **attn),
                                     ResBlock(ch, ch, emb_dim, **block)])
        self.decoder = nn.ModuleList()
        self._upsample_at: list[bool] = []
        for level in reversed(range(self.n_levels)):
            for _ in range(enc_blocks + 1):
                self.decoder.append(stage(ch + skips.pop(), base_channels * channel_mults[level], level))
                self._upsample_at.append(False)
                ch = base_channels * channel_mults[level]
            if level > 0:
                self.decoder.append(nn.ModuleList([ResBlock(ch, ch, emb_dim, resample="up", **block)]))
                self._upsample_at.append(True)
        if ch % norm_groups:
            raise ConfigError(f"model.norm_groups={norm_groups} does not divide the {ch} output channels")
        self.norm_out = nn.GroupNorm(norm_groups, ch)
        self.conv_out = nn.Conv2d(ch, image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embedding(self, c_noise: torch.Tensor, context: torch.Tensor | None,
                  context_mask: torch.Tensor | None) -> torch.Tensor:
        """The vector every block takes its scale/shift from: MLP(code(c_noise) + context term)."""
        emb = sinusoidal_code(c_noise, self.emb_dim)
        if self.context_dim and context is not None:
            batch = emb.shape[0]
            if context.ndim == 1:
                context = context[:, None]
            if context.shape != (batch, self.context_dim):
                raise ValueError(f"context must have shape ({batch}, {self.context_dim}), got {tuple(context.shape)}")
            term = self.context_embed(context.to(emb.dtype))
            keep = torch.ones(batch, dtype=torch.bool, device=emb.device)
            if context_mask is not None:
                keep = ~context_mask.to(device=emb.device, dtype=torch.bool).reshape(batch)
            if self.training and self.context_dropout > 0:
                keep = keep & (torch.rand(batch, device=emb.device) >= self.context_dropout)
            emb = emb + term * keep[:, None].to(term.dtype)
        return self.embed_mlp(emb)

    @staticmethod
    def _run(stage: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = stage[0](h, emb)
        for layer in stage[1:]:
            h = layer(h)
        return h

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """F(x; c_noise, context): x (B, C, H, W), c_noise (B,) -> (B, C, H, W)."""
        check_image_size(x.shape[-2], x.shape[-1], self.n_levels)
        emb = self.embedding(c_noise, context, context_mask)
        h = self.conv_in(x)
        skips = [h]
        for stage in self.encoder:
            h = self._run(stage, h, emb)
            skips.append(h)
        h = self.middle[2](self.middle[1](self.middle[0](h, emb)), emb)
        for stage, is_upsample in zip(self.decoder, self._upsample_at):
            if not is_upsample:
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(stage, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
