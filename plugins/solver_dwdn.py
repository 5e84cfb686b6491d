"""Solver ``dwdn``: a lean Deep Wiener Deconvolution Network (Dong, Roth & Schiele, NeurIPS 2020).

Written from the paper's description, sized for a CPU:

1. **feature extraction** -- a 5x5 conv and residual blocks map ``y`` to ``features`` (16) maps;
2. **Wiener deconvolution in feature space** -- every feature map is deconvolved with ``k`` in
   closed form (:func:`kdiff_cli.maths.deconv.deconvolve`, gradient prior) with a noise-to-signal ratio
   estimated from the input: ``nsr_c = exp(s_c) * (lambda_scale * sigma^2 + lambda_floor)``,
   ``sigma`` from ``y`` (MAD) when not given, ``s_c`` learned per feature. The image itself is
   also deconvolved (boundary-aware, as the ``wiener`` solver does) and travels with the features;
3. **coarse-to-fine multi-scale encoder-decoder** (``widths`` 32/64/128 at scales 1, 1/2, 1/4):
   the deconvolved features enter every encoder scale (average-pooled), and the decoder predicts
   a correction at each scale, coarse to fine; each finer scale adds its own to the upsampled
   coarser one. The result is the image-space Wiener estimate plus that correction; the last
   convolution of every scale starts at zero, so an untrained network equals ``wiener``.

Gray images run through the RGB network as three equal channels (output averaged back). Images
of any size at least the kernel's are padded (mirror) to a multiple of 4 and cropped back.
Differentiable in ``y`` and ``k``. Trained weights: ``weights/dwdn.safetensors``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdiff_cli.maths import deconv, ops
from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths.layers import res_blocks, zero_conv


def _up(r: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling of a coarser scale's correction."""
    return F.interpolate(r, scale_factor=2, mode="bilinear", align_corners=False)


def pad_to_multiple(x: torch.Tensor, m: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad the bottom/right of ``x`` to a multiple of ``m``; returns the original (H, W)."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % m, (-W) % m
    if ph or pw:
        x = ops.pad(x, (0, ph, 0, pw), "symmetric")
    return x, (H, W)


class DWDNSolver(nn.Module):
    """Deep Wiener deconvolution: features -> feature-space Wiener -> multi-scale refinement."""

    name = "dwdn"
    description = "Deep Wiener Deconvolution Network (Dong et al. 2020), lean CPU variant (learned)"
    default_weights = "dwdn"

    def __init__(
        self,
        features: int = 16,  # feature maps deconvolved in feature space
        feature_blocks: int = 2,  # residual blocks of the feature extractor
        widths: tuple[int, ...] = (32, 64, 128),  # encoder-decoder widths at scales 1, 1/2, 1/4
        blocks: tuple[int, ...] = (1, 2, 3),  # residual blocks per scale (encoder; decoder at 1, 1/2)
        lambda_scale: float = 100.0,  # Wiener regularisation lambda = lambda_scale * sigma^2 + lambda_floor
        lambda_floor: float = 1e-3,
        margin: float = 1.0,  # canvas margin, in kernel sizes
        iters: int = 12,  # CG steps of the image-space Wiener estimate (unknown boundary)
    ):
        super().__init__()
        if len(widths) != 3 or len(blocks) != 3:
            raise KdiffError(f"dwdn widths and blocks must list 3 scales, got {widths} and {blocks}")
        w1, w2, w3 = (int(w) for w in widths)
        b1, b2, b3 = (int(b) for b in blocks)
        self.lambda_scale, self.lambda_floor = float(lambda_scale), float(lambda_floor)
        self.margin, self.iters = float(margin), int(iters)
        # 1. feature extraction
        self.head = nn.Conv2d(3, features, 5, padding=2)
        self.feature_blocks = res_blocks(features, feature_blocks)
        # 2. per-feature log multiplier of the noise-to-signal ratio
        self.log_nsr = nn.Parameter(torch.zeros(features))
        # 3. encoder (inputs: deconvolved features + image-space Wiener estimate, at each scale)
        cin = features + 3
        self.enc1 = nn.Conv2d(cin, w1, 3, padding=1)
        self.enc1_blocks = res_blocks(w1, b1)
        self.down2 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.inject2 = nn.Conv2d(cin, w2, 1)
        self.enc2_blocks = res_blocks(w2, b2)
        self.down3 = nn.Conv2d(w2, w3, 3, stride=2, padding=1)
        self.inject3 = nn.Conv2d(cin, w3, 1)
        self.enc3_blocks = res_blocks(w3, b3)
        # decoder, coarse to fine; out* predict the correction at each scale
        self.out3 = zero_conv(w3, 3)
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2_blocks = res_blocks(w2, b2)
        self.out2 = zero_conv(w2, 3)
        self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1_blocks = res_blocks(w1, b1)
        self.out1 = zero_conv(w1, 3)

    def regularization(self, sigma: torch.Tensor) -> torch.Tensor:
        """Image-space ``lambda(sigma)`` per image, shape (B,)."""
        return self.lambda_scale * sigma.square() + self.lambda_floor

    def forward(self, y: torch.Tensor, k: torch.Tensor, sigma=None) -> torch.Tensor:
        """Deblur ``y`` (B, C, H, W), C in {1, 3}, with ``k`` (B or 1, 1, h, w)."""
        k = deconv.check_inputs(y, k)
        channels = y.shape[1]
        y3 = deconv.as_rgb(y)
        lam = self.regularization(deconv.noise_level(sigma, y))
        x_w = deconv.deconvolve(y3, k, lam, self.margin, self.iters)  # image-space Wiener
        f = self.feature_blocks(self.head(y3 - 0.5))
        nsr = torch.exp(self.log_nsr)[None, :] * lam[:, None]  # (B, features)
        f_d = deconv.deconvolve(f, k, nsr, self.margin, 0)  # feature-space Wiener
        z1, (H, W) = pad_to_multiple(torch.cat([f_d, x_w - 0.5], dim=1), 4)
        z2 = F.avg_pool2d(z1, 2)
        z3 = F.avg_pool2d(z2, 2)
        e1 = self.enc1_blocks(F.relu(self.enc1(z1)))
        e2 = self.enc2_blocks(F.relu(self.down2(e1) + self.inject2(z2)))
        e3 = self.enc3_blocks(F.relu(self.down3(e2) + self.inject3(z3)))
        r3 = self.out3(e3)
        d2 = self.dec2_blocks(F.relu(self.up2(e3) + e2))
        r2 = self.out2(d2) + _up(r3)
        d1 = self.dec1_blocks(F.relu(self.up1(d2) + e1))
        r1 = self.out1(d1) + _up(r2)
        return deconv.from_rgb(x_w + r1[..., :H, :W], channels)


@hookimpl
def register_solvers(register):
    register(DWDNSolver)
