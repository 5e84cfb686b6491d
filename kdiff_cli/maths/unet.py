"""The conditional U-Net epsilon_theta(k_t, y, t) of Kernel-Diff (paper section 3.3).

Two encoders, one shared decoder:

* the **kernel encoder** takes the noisy kernel ``k_t`` (B, 1, S, S) and the time embedding of
  ``t`` and downsamples ``S -> S / 2^(L-1)`` (``L = len(channel_mult)``), keeping skip features;
* the **image encoder** takes the blurred image ``y`` (B, C, H, W) (mapped to [-1, 1]) and
  downsamples by ``2^(Li-1)`` (``Li = len(image_channel_mult)``); it does not see ``t``, so a
  sampler can encode ``y`` once (:meth:`KernelUNet.encode_image`) and reuse it at every step;
* **fusion** (the paper's "kernel features upscaled by 4 and concatenated"): the kernel bottleneck
  is resized to the image bottleneck's size (x4 for 256 images, 64 kernels and equal depths),
  concatenated with it and mixed by a residual block; the result is average-pooled to the kernel
  bottleneck size, so any image whose sides are multiples of the image stride works (train on
  128 crops, sample on 256 images);
* **global conditioning** (an addition to the paper, ``image_global``): the spatial mean of the
  image features is added to the time embedding, so every residual block sees the blur statistics;
* the **decoder** (residual blocks, optional self-attention at low resolution, skips from the
  kernel encoder) upsamples back to ``S`` and predicts epsilon, shape (B, 1, S, S).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdiff_cli.maths import cues
from kdiff_cli.errors import KdiffError

#: what the network is conditioned on (``condition``)
CONDITIONS = ("image", "autocorr")


# --------------------------------------------------------------------------- building blocks


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``t`` (B,) -> (B, dim), float32.

    ``[cos(t w_i), sin(t w_i)]`` with ``w_i = max_period^(-i / (dim/2))``, as in Ho et al. / ADM.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding as a per-channel scale and shift (ADM)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int | None, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, 2 * out_ch) if temb_dim else None
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        out = self.norm2(out)
        if self.temb is not None:
            scale, shift = self.temb(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
            out = out * (1 + scale) + shift
        out = self.conv2(self.dropout(F.silu(out)))
        return self.skip(h) + out


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a (low-resolution) feature map, residual."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = math.gcd(heads, channels)
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(h)


class Upsample(nn.Module):
    """Double the resolution: nearest neighbour then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class Stage(nn.Sequential):
    """Blocks applied in order, each given the time embedding."""

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            h = block(h, temb)
        return h


def resize_features(h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a feature map to ``size``: nearest neighbour when enlarging both sides (the paper's
    "upscaled"), adaptive average pooling otherwise (shrinking, or a non-square image)."""
    if tuple(h.shape[-2:]) == tuple(size):
        return h
    if h.shape[-2] <= size[0] and h.shape[-1] <= size[1]:
        return F.interpolate(h, size=size, mode="nearest")
    return F.adaptive_avg_pool2d(h, size)


# --------------------------------------------------------------------------- the network


class KernelUNet(nn.Module):
    """epsilon_theta(k_t, y, t): predicts the noise in a noisy kernel given the blurred image."""

    def __init__(
        self,
        kernel_size: int = 64,  # S: side of k_t and of the predicted epsilon (paper: 64)
        image_channels: int = 3,  # channels of y (3 RGB, 1 gray)
        model_channels: int = 32,  # base width of the kernel encoder and the decoder
        channel_mult: Sequence[int] = (1, 2, 2, 2),  # kernel-branch width per level; len-1 halvings (64 -> 8)
        num_res_blocks: int = 1,  # residual blocks per kernel-encoder level (decoder: one more)
        image_model_channels: int = 16,  # base width of the image encoder
        image_channel_mult: Sequence[int] = (1, 2, 4, 4),  # image-branch width per level; len-1 halvings
        image_res_blocks: Sequence[int] | int = (0, 1, 1, 1),  # residual blocks per image level (0: stem/downsample only)
        attention_resolutions: Sequence[int] = (8,),  # kernel-branch sides with self-attention (and the bottleneck)
        num_heads: int = 4,  # attention heads
        dropout: float = 0.0,  # dropout inside residual blocks
        norm_groups: int = 8,  # GroupNorm groups (reduced to a divisor of the width when needed)
        time_embed_mult: int = 4,  # time-embedding width = time_embed_mult * model_channels
        image_global: bool = True,  # also add the image features' global mean to the time embedding
        condition: str = "image",  # "image": encode y itself (the paper); "autocorr": y's gradient-autocorrelation cue
    ):
        super().__init__()
        levels, ilevels = len(channel_mult), len(image_channel_mult)
        if levels < 1 or ilevels < 1:
            raise KdiffError("channel_mult and image_channel_mult need at least one level")
        if kernel_size % 2 ** (levels - 1):
            raise KdiffError(f"kernel_size {kernel_size} is not a multiple of the kernel stride {2 ** (levels - 1)}")
        if isinstance(image_res_blocks, int):
            image_res_blocks = [image_res_blocks] * ilevels
        if len(image_res_blocks) != ilevels:
            raise KdiffError("image_res_blocks needs one entry per image level")
        if condition not in CONDITIONS:
            raise KdiffError(f"unknown condition {condition!r} (choose from {', '.join(CONDITIONS)})")
        self.config: dict[str, Any] = {
            "kernel_size": int(kernel_size),
            "image_channels": int(image_channels),
            "model_channels": int(model_channels),
            "channel_mult": [int(m) for m in channel_mult],
            "num_res_blocks": int(num_res_blocks),
            "image_model_channels": int(image_model_channels),
            "image_channel_mult": [int(m) for m in image_channel_mult],
            "image_res_blocks": [int(n) for n in image_res_blocks],
            "attention_resolutions": [int(r) for r in attention_resolutions],
            "num_heads": int(num_heads),
            "dropout": float(dropout),
            "norm_groups": int(norm_groups),
            "time_embed_mult": int(time_embed_mult),
            "image_global": bool(image_global),
            "condition": str(condition),
        }
        self.kernel_size = int(kernel_size)
        self.image_channels = int(image_channels)
        self.condition = condition
        cue = condition == "autocorr"
        # the autocorr cue lives on the kernel canvas, so y may have any size (>= cues.MIN_SIDE)
        self.image_stride = 1 if cue else 2 ** (ilevels - 1)
        self.kernel_stride = 2 ** (levels - 1)
        g, mc = norm_groups, model_channels
        temb_dim = time_embed_mult * mc
        attn = set(int(r) for r in attention_resolutions)

        # time embedding: sinusoid -> MLP
        self.time_embed = nn.Sequential(nn.Linear(mc, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))

        # image encoder (no time input)
        ich = image_model_channels * image_channel_mult[0]
        self.image_stem = nn.Conv2d(cues.CUE_CHANNELS if cue else image_channels, ich, 3, padding=1)
        image_blocks: list[nn.Module] = []
        for level, mult in enumerate(image_channel_mult):
            if level > 0:
                image_blocks.append(Downsample(ich))
            for _ in range(image_res_blocks[level]):
                image_blocks.append(ResBlock(ich, image_model_channels * mult, None, g, dropout))
                ich = image_model_channels * mult
        self.image_encoder = Stage(*image_blocks)
        self.image_out_channels = ich
        # global conditioning: the blur is the same everywhere in y, so its spatial mean is informative
        self.image_global = nn.Linear(ich, temb_dim) if image_global else None

        # kernel encoder (skips kept for the decoder)
        ch = mc * channel_mult[0]
        # autocorr: the cue map is concatenated with k_t at the input (and encoded for the fusion)
        self.kernel_stem = nn.Conv2d(1 + (cues.CUE_CHANNELS if cue else 0), ch, 3, padding=1)
        self.kernel_encoder = nn.ModuleList()
        skip_channels = [ch]
        res = kernel_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks: list[nn.Module] = [ResBlock(ch, mc * mult, temb_dim, g, dropout)]
                ch = mc * mult
                if res in attn:
                    blocks.append(Attention(ch, num_heads, g))
                self.kernel_encoder.append(Stage(*blocks))
                skip_channels.append(ch)
            if level < levels - 1:
                self.kernel_encoder.append(Stage(Downsample(ch)))
                skip_channels.append(ch)
                res //= 2

        # fusion at the image bottleneck, then the middle at the kernel bottleneck
        self.fuse = ResBlock(ch + self.image_out_channels, ch, temb_dim, g, dropout)
        self.middle = Stage(ResBlock(ch, ch, temb_dim, g, dropout), Attention(ch, num_heads, g), ResBlock(ch, ch, temb_dim, g, dropout))

        # decoder: num_res_blocks + 1 blocks per level, each eating one kernel-encoder skip
        self.decoder = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks = [ResBlock(ch + skip_channels.pop(), mc * mult, temb_dim, g, dropout)]
                ch = mc * mult
                if res in attn:
                    blocks.append(Attention(ch, num_heads, g))
                if level > 0 and i == num_res_blocks:
                    blocks.append(Upsample(ch))
                    res *= 2
                self.decoder.append(Stage(*blocks))
        self.out = nn.Sequential(_norm(ch, g), nn.SiLU(), _zero(nn.Conv2d(ch, 1, 3, padding=1)))

    # ------------------------------------------------------------------ forward

    def encode_image(self, y: torch.Tensor) -> torch.Tensor:
        """Image-encoder features of ``y`` (B, C, H, W) in [-1, 1]; independent of ``t``.

        With ``condition="autocorr"`` these are the cue maps (B, CUE_CHANNELS, S, S) of
        :func:`kdiff_cli.maths.cues.gradient_autocorrelation` (encoded in :meth:`forward`).
        """
        if y.dim() != 4 or y.shape[1] != self.image_channels:
            raise KdiffError(f"expected images (B, {self.image_channels}, H, W), got shape {tuple(y.shape)}")
        if self.condition == "autocorr":
            return cues.gradient_autocorrelation(y, self.kernel_size)
        H, W = y.shape[-2:]
        if H % self.image_stride or W % self.image_stride:
            raise KdiffError(f"image size {H}x{W} is not a multiple of the image-encoder stride {self.image_stride}")
        return self.image_encoder(self.image_stem(y))

    def forward(
        self,
        k_t: torch.Tensor,
        y: torch.Tensor | None,
        t: torch.Tensor,
        image_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict epsilon (B, 1, S, S) from ``k_t`` (B, 1, S, S), ``y`` and timesteps ``t`` (B,) or ().

        Pass ``image_features = encode_image(y)`` (and ``y=None``) to reuse the image encoding.
        """
        S = self.kernel_size
        if k_t.dim() != 4 or tuple(k_t.shape[1:]) != (1, S, S):
            raise KdiffError(f"expected noisy kernels (B, 1, {S}, {S}), got shape {tuple(k_t.shape)}")
        B = k_t.shape[0]
        if image_features is None:
            if y is None:
                raise KdiffError("pass y or image_features")
            image_features = self.encode_image(y)
        if image_features.shape[0] not in (1, B):
            raise KdiffError(f"image batch {image_features.shape[0]} does not match kernel batch {B}")
        t = torch.as_tensor(t, device=k_t.device).reshape(-1).expand(B)
        temb = self.time_embed(timestep_embedding(t, self.config["model_channels"]))
        f = image_features.expand(B, *image_features.shape[1:])
        h = k_t
        if self.condition == "autocorr":
            h = torch.cat([k_t, f.to(k_t.dtype)], dim=1)
            f = self.image_encoder(self.image_stem(f))
        if self.image_global is not None:
            temb = temb + self.image_global(f.mean(dim=(-2, -1)).to(temb.dtype))

        h = self.kernel_stem(h)
        skips = [h]
        for stage in self.kernel_encoder:
            h = stage(h, temb)
            skips.append(h)
        bottleneck = h.shape[-2:]
        fused = torch.cat([resize_features(h, tuple(f.shape[-2:])), f.to(h.dtype)], dim=1)
        h = resize_features(self.fuse(fused, temb), tuple(bottleneck))
        h = self.middle(h, temb)
        for stage in self.decoder:
            h = stage(torch.cat([h, skips.pop()], dim=1), temb)
        return self.out(h)


def build_unet(config: dict[str, Any]) -> KernelUNet:
    """A :class:`KernelUNet` from a config dict (``KernelUNet.config``); unknown keys are an error."""
    import inspect

    known = set(inspect.signature(KernelUNet.__init__).parameters) - {"self"}
    extra = sorted(set(config) - known)
    if extra:
        raise KdiffError(f"unknown U-Net option(s): {', '.join(extra)} (known: {', '.join(sorted(known))})")
    return KernelUNet(**config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
