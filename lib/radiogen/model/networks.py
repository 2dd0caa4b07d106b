"""The denoiser's U-Net F_theta (Vicanek Martinez et al. 2024, Sect. 4.1, Fig. 6-7).

Layout for ``channel_mults = (1, 2, 2)`` (paper configuration, 80x80 input)::

    conv3x3 -> [2 blocks @ 80x80, down] -> [2 blocks+attn @ 40x40, down]
            -> [2 blocks+attn @ 20x20] -> block, attn, block (bottleneck)
            -> [3 blocks+attn @ 20x20, up] -> [3 blocks+attn @ 40x40, up]
            -> [3 blocks @ 80x80] -> GN, SiLU, conv3x3

Every encoder output (input conv, each block, each downsampling block) is kept
and concatenated onto the input of one decoder block, so each decoder level has
one block more than the encoder level.  Resampling blocks are ordinary blocks
with the resampling placed before the first convolution and in the residual
path.  Conditioning reaches every block through FiLM from one embedding of the
noise level c_noise plus the context (peak flux or class), where a learned
null token stands for "no context" (classifier-free guidance).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from radiogen.errors import ConfigError

__all__ = [
    "UNet",
    "GroupNorm",
    "Block",
    "EfficientAttention",
    "NoiseEmbedding",
    "ConditionEmbedding",
    "Downsample",
    "check_image_size",
]


def _check_groups(channels: int, groups: int, where: str) -> None:
    if channels % groups:
        raise ConfigError(
            f"model.norm_groups={groups} does not divide the {channels} channels of {where}; "
            "choose base_channels and norm_groups so that every level's channels are a multiple"
        )


def check_image_size(height: int, width: int, n_levels: int) -> None:
    """Raise :class:`ConfigError` unless H and W halve cleanly ``n_levels - 1`` times."""
    factor = 2 ** (n_levels - 1)
    if height % factor or width % factor or height < factor or width < factor:
        raise ConfigError(
            f"image size {height}x{width} cannot pass a U-Net with {n_levels} resolution "
            f"levels: height and width must be positive multiples of {factor}"
        )


class GroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken in float32 and whose output keeps the input's dtype.

    Under CUDA autocast ``group_norm`` returns float32, which would promote the
    residual stream (and every SiLU, FiLM and dropout after it) to float32 and
    make each following convolution cast back.  Here the normalisation itself
    runs in float32 with autocast off (mean and variance of bf16 activations
    lose too much otherwise) and the result is cast back to the activation
    dtype, as Karras et al. (2022, ``torch_utils``/``networks.py``) keep
    GroupNorm in the activation dtype.  For float32 inputs outside autocast
    this is exactly :class:`torch.nn.GroupNorm` (bit for bit).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = F.group_norm(x.float(), self.num_groups, weight, bias, self.eps)
        return out.to(x.dtype)


class Downsample(nn.Module):
    """Halve H and W: pixel unshuffle into 4 sub-images stacked on channels, then 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4 * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pixel_unshuffle(x, 2))


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour repetition (each pixel becomes 2x2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Block(nn.Module):
    """Residual U-Net block with FiLM conditioning (paper Fig. 6).

    GN -> SiLU -> [resample] -> conv3x3 -> GN -> FiLM -> SiLU -> dropout -> conv3x3,
    plus a residual path that is resampled and, where channels change, 1x1-convolved.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        *,
        dropout: float = 0.0,
        norm_groups: int = 32,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        _check_groups(in_channels, norm_groups, "a block input")
        _check_groups(out_channels, norm_groups, "a block output")
        self.norm1 = GroupNorm(norm_groups, in_channels)
        if resample == "down":
            self.resample_h: nn.Module = Downsample(in_channels)
            self.resample_x: nn.Module = Downsample(in_channels)
        elif resample == "up":
            self.resample_h = Upsample()
            self.resample_x = Upsample()
        elif resample is None:
            self.resample_h = nn.Identity()
            self.resample_x = nn.Identity()
        else:
            raise ValueError(f"resample must be 'down', 'up' or None, not {resample!r}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = GroupNorm(norm_groups, out_channels)
        self.film = nn.Linear(emb_dim, 2 * out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # Zero-initialised last conv: every block starts as (resampled) identity,
        # which keeps the deep residual stack well-conditioned at initialisation.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        h = self.conv1(self.resample_h(h))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        # FiLM (Perez et al. 2018): gamma = 1 + scale so a zero embedding is the identity.
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(self.resample_x(x))


class EfficientAttention(nn.Module):
    """Multi-head efficient attention (Shen et al. 2021) with a residual connection.

    Per head, with Q, K, V of shape (c, n): A = softmax_c(Q) (softmax_n(K) V^T)^T,
    i.e. Q is normalised over channels and K over the n positions, so the cost is
    linear in n.  GroupNorm before, convs for QKV and output, and a layer norm
    over (C, H, W) of the attention output before it is added to the input.

    The paper text describes 3x3 QKV/output convolutions, but the authors'
    released network (30.85 M parameters) uses 1x1 ones; ``kernel_size``
    selects either (1 reproduces the released parameter count).
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 2,
        head_channels: int = 32,
        norm_groups: int = 32,
        kernel_size: int = 1,
    ) -> None:
        super().__init__()
        _check_groups(channels, norm_groups, "an attention layer")
        self.heads = heads
        self.head_channels = head_channels
        inner = heads * head_channels
        self.norm = GroupNorm(norm_groups, channels)
        pad = kernel_size // 2
        self.qkv = nn.Conv2d(channels, 3 * inner, kernel_size, padding=pad)
        self.proj = nn.Conv2d(inner, channels, kernel_size, padding=pad)
        self.out_norm = GroupNorm(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_channels, -1).unbind(1)
        # Softmaxes and both products in float32 with autocast off (autocast
        # would run einsum's batched products in bf16): sums over n = H W
        # positions lose too much in bf16.  The result returns to x's dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            q = q.float().softmax(dim=-2)
            k = k.float().softmax(dim=-1)
            context = torch.einsum("bhdn,bhen->bhde", k, v.float())  # (c_k x c_v) per head
            out = torch.einsum("bhde,bhdn->bhen", context, q)
        out = out.reshape(b, self.heads * self.head_channels, height, width).to(x.dtype)
        return x + self.out_norm(self.proj(out))


class NoiseEmbedding(nn.Module):
    """Sinusoidal encoding (Vaswani et al. 2017) of c_noise followed by one linear layer."""

    def __init__(self, dim: int, *, max_period: float = 1.0e4) -> None:
        super().__init__()
        if dim % 2:
            raise ConfigError(f"noise embedding dimension must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.linear = nn.Linear(dim, dim)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        phase = c_noise.float()[:, None] * self.freqs[None, :]
        return self.linear(torch.cat([phase.cos(), phase.sin()], dim=1))


def _mlp(dim_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())


class ConditionEmbedding(nn.Module):
    """Noise level + context -> the vector from which every block takes its FiLM.

    emb = MLP_2(NoiseEmbedding(c_noise) + c_emb), with c_emb = MLP_1(context) or a
    learned null token where the context is dropped (``context_mask`` True or
    ``context`` None).  During training each sample's context is additionally
    dropped with probability ``context_dropout`` (classifier-free guidance,
    Ho & Salimans 2022).
    """

    def __init__(self, emb_dim: int, *, context_dim: int = 0, context_dropout: float = 0.0) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.context_dropout = context_dropout
        self.noise = NoiseEmbedding(emb_dim)
        if context_dim:
            self.context = _mlp(context_dim, emb_dim)
            self.null_token = nn.Parameter(torch.zeros(emb_dim))
        self.mlp = _mlp(emb_dim, emb_dim)

    def forward(
        self,
        c_noise: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.noise(c_noise)
        if self.context_dim:
            batch = emb.shape[0]
            if context is None:
                drop = torch.ones(batch, dtype=torch.bool, device=emb.device)
                c_emb = torch.zeros_like(emb)
            else:
                if context.ndim == 1:
                    context = context[:, None]
                if context.shape != (batch, self.context_dim):
                    raise ValueError(
                        f"context must have shape ({batch}, {self.context_dim}), got {tuple(context.shape)}"
                    )
                c_emb = self.context(context.to(emb.dtype))
                drop = (
                    torch.zeros(batch, dtype=torch.bool, device=emb.device)
                    if context_mask is None
                    else context_mask.to(device=emb.device, dtype=torch.bool).reshape(batch)
                )
            if self.training and self.context_dropout > 0:
                drop = drop | (torch.rand(batch, device=emb.device) < self.context_dropout)
            c_emb = torch.where(drop[:, None], self.null_token.to(c_emb.dtype)[None, :], c_emb)
            emb = emb + c_emb
        return self.mlp(emb)


class UNet(nn.Module):
    """The raw network F_theta(c_in x; c_noise, context) of the EDM denoiser.

    Parameters
    ----------
    image_channels : int
        Channels C of the (C, H, W) images (1 for radio continuum images).
    base_channels : int
        Channels of the first resolution level; level i has ``base * channel_mults[i]``.
    channel_mults : sequence of int
        One multiplier per resolution level (paper: 1, 2, 2 -> 128/256/256).
    enc_blocks, dec_blocks : int
        Resolution-preserving blocks per encoder / decoder level (paper: 2 / 3).
    attention_levels : int
        Number of lowest-resolution levels whose blocks are followed by self-attention.
    attention_heads, attention_head_channels : int
        Efficient-attention heads and channels per head (paper: 2 x 32).
    attention_kernel_size : int
        Kernel of the attention QKV and output convs (1: authors' code; 3: paper text).
    norm_groups : int
        GroupNorm groups (paper: 32); must divide every level's channel count.
    dropout : float
        Dropout probability inside every block.
    context_dim : int
        Length K of the context vector (0: unconditional).
    context_dropout : float
        Probability of replacing the context by the null token in training.
    emb_mult : int
        Embedding width = ``emb_mult * base_channels``.
    """

    def __init__(
        self,
        *,
        image_channels: int = 1,
        base_channels: int = 128,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 2),
        enc_blocks: int = 2,
        dec_blocks: int = 3,
        attention_levels: int = 2,
        attention_heads: int = 2,
        attention_head_channels: int = 32,
        attention_kernel_size: int = 1,
        norm_groups: int = 32,
        dropout: float = 0.1,
        context_dim: int = 0,
        context_dropout: float = 0.1,
        emb_mult: int = 4,
    ) -> None:
        super().__init__()
        if not channel_mults:
            raise ConfigError("model.channel_mults must list at least one level")
        if dec_blocks != enc_blocks + 1:
            # Each decoder block consumes one encoder output: the input conv or
            # downsampling block plus the enc_blocks blocks of that level.
            raise ConfigError(
                f"model.dec_blocks must equal enc_blocks + 1 (got enc_blocks={enc_blocks}, "
                f"dec_blocks={dec_blocks})"
            )
        self.n_levels = len(channel_mults)
        self.image_channels = image_channels
        emb_dim = emb_mult * base_channels
        self.embed = ConditionEmbedding(
            emb_dim, context_dim=context_dim, context_dropout=context_dropout
        )
        block = dict(emb_dim=emb_dim, dropout=dropout, norm_groups=norm_groups)
        attn = dict(
            heads=attention_heads,
            head_channels=attention_head_channels,
            norm_groups=norm_groups,
            kernel_size=attention_kernel_size,
        )

        def with_attention(level: int) -> bool:
            return self.n_levels - level <= attention_levels

        self.conv_in = nn.Conv2d(image_channels, base_channels, 3, padding=1)
        ch = base_channels
        skips = [ch]
        self.encoder = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            out = base_channels * mult
            for _ in range(enc_blocks):
                self.encoder.append(self._stage(Block(ch, out, **block), out, with_attention(level), attn))
                ch = out
                skips.append(ch)
            if level < self.n_levels - 1:
                self.encoder.append(self._stage(Block(ch, ch, resample="down", **block), ch, False, attn))
                skips.append(ch)

        self.middle = nn.ModuleList(
            [Block(ch, ch, **block), EfficientAttention(ch, **attn), Block(ch, ch, **block)]
        )

        self.decoder = nn.ModuleList()
        for level in reversed(range(self.n_levels)):
            out = base_channels * channel_mults[level]
            for _ in range(dec_blocks):
                stage = Block(ch + skips.pop(), out, **block)
                self.decoder.append(self._stage(stage, out, with_attention(level), attn))
                ch = out
            if level > 0:
                up = self._stage(Block(ch, ch, resample="up", **block), ch, False, attn)
                up.is_upsample = True
                self.decoder.append(up)
        _check_groups(ch, norm_groups, "the output layer")
        self.norm_out = GroupNorm(norm_groups, ch)
        self.conv_out = nn.Conv2d(ch, image_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def context_dim(self) -> int:
        """Length K of the context vector (0: unconditional)."""
        return self.embed.context_dim

    @staticmethod
    def _stage(block: Block, ch: int, attention: bool, attn: dict) -> nn.ModuleList:
        stage = nn.ModuleList([block])
        if attention:
            stage.append(EfficientAttention(ch, **attn))
        stage.is_upsample = False
        return stage

    @staticmethod
    def _run(stage: nn.ModuleList, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = stage[0](x, emb)
        for layer in stage[1:]:
            x = layer(x)
        return x

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """F(x; c_noise, context): x (B, C, H, W), c_noise (B,) -> (B, C, H, W)."""
        check_image_size(x.shape[-2], x.shape[-1], self.n_levels)
        emb = self.embed(c_noise, context, context_mask)
        h = self.conv_in(x)
        skips = [h]
        for stage in self.encoder:
            h = self._run(stage, h, emb)
            skips.append(h)
        h = self.middle[0](h, emb)
        h = self.middle[1](h)
        h = self.middle[2](h, emb)
        for stage in self.decoder:
            if not stage.is_upsample:
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(stage, h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
