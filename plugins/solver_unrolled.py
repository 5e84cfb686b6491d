"""Solver ``unrolled``: unrolled half-quadratic splitting with a small learned denoiser.

In the spirit of USRNet (Zhang et al. 2020) and photon-limited unrolling (Sanghvi et al. 2022).
HQS splits ``min_x ||M (k * x) - y||^2 + lam ||D x||^2 + R(x)`` into alternating steps

* prior step ``z_i = x_i + D(x_i, maps)``: a residual denoiser shared by all stages (a small
  ResUNet as in USRNet: 2x2 pixel-unshuffle, three levels of ``widths`` channels, pixel-shuffle
  back), told the input noise level ``sigma`` and the stage ``(i + 1) / stages``;
* data step ``x_{i+1} = argmin ||M (k * x) - y||^2 + lam_i ||D x||^2 + mu_i ||x - z_i||^2``
  (:func:`kdiff_cli.maths.deconv.prox_canvas`: the unknown-boundary model of the Wiener solver, so the
  edges do not ring, solved by a few CG steps), with learned per-stage weights
  ``lam_i = exp(a_i) lam`` and ``mu_i = exp(b_i) lam``, ``lam = lambda_scale sigma^2 + lambda_floor``.

``x_0`` is the boundary-aware Wiener estimate (:func:`kdiff_cli.maths.deconv.deconvolve_canvas`), and
it is a fixed point of every data step while ``z = x``: the denoiser's last convolution starts at
zero, so an untrained network returns the Wiener solution and training only has to learn the
improvement. The output is the last prior step. Gray images run as three equal channels.
Differentiable in ``y`` and ``k``. Trained weights: ``weights/unrolled.safetensors``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdiff_cli.maths import deconv, ops
from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths.layers import res_blocks, zero_conv

#: the denoiser sees sigma scaled by this, so its input map is O(1)
SIGMA_SCALE = 10.0


class Denoiser(nn.Module):
    """Residual U-Net ``x -> x + r(x, maps)`` on 2x2 pixel-unshuffled RGB (USRNet's ResUNet, small).

    Levels at 1/2, 1/4, 1/8 of the image size with ``widths`` channels and ``blocks`` residual
    blocks each (the last level is the bottleneck); strided-conv downsampling, transposed-conv
    upsampling, additive skips. The receptive field spans the ringing of a 64 x 64 kernel, which a
    plain stack of 3x3 convolutions does not. The output convolution starts at zero.
    """

    def __init__(self, widths=(32, 64, 128), blocks: int = 1, maps: int = 2):
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1 or blocks < 1:
            raise KdiffError(f"unrolled denoiser needs positive widths and blocks, got {widths}, {blocks}")
        self.head = nn.Conv2d(12 + maps, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(res_blocks(w, blocks) for w in widths[:-1])
        self.downs = nn.ModuleList(
            nn.Conv2d(a, b, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.bottleneck = res_blocks(widths[-1], blocks)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.up_blocks = nn.ModuleList(res_blocks(w, blocks) for w in widths[:-1])
        self.tail = zero_conv(widths[0], 12)
        self.multiple = 2 ** len(widths)  # input sizes must divide by this

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 3, H, W) with H, W multiples of :attr:`multiple`; ``levels`` (B, maps)."""
        u = F.pixel_unshuffle(x - 0.5, 2)
        maps = levels[:, :, None, None].expand(-1, -1, *u.shape[-2:])
        h = self.head(torch.cat([u, maps], dim=1))
        skips = []
        for block, down in zip(self.down_blocks, self.downs):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.bottleneck(h)
        for block, up, skip in zip(reversed(self.up_blocks), reversed(self.ups), reversed(skips)):
            h = block(up(h) + skip)
        return x + F.pixel_shuffle(self.tail(h), 2)


class UnrolledSolver(nn.Module):
    """``F(y, k, sigma)`` by ``stages`` unrolled HQS iterations with learned weights."""

    name = "unrolled"
    description = "unrolled half-quadratic splitting, FFT data steps + learned CNN denoiser (learned)"
    default_weights = "unrolled"

    def __init__(
        self,
        stages: int = 4,  # prior (denoiser) steps; a data step sits between consecutive ones
        widths=(32, 64, 128),  # denoiser U-Net channels at 1/2, 1/4, 1/8 of the image size
        blocks: int = 1,  # residual blocks per U-Net level
        log_mu: float = 0.0,  # initial b_i of the data steps' pull mu_i = exp(b_i) lam (then learned)
        lambda_scale: float = 100.0,  # lam = lambda_scale sigma^2 + lambda_floor (x_0 and data steps)
        lambda_floor: float = 1e-3,
        margin: float = 1.0,  # canvas margin, in kernel sizes
        iters: int = 12,  # CG steps of x_0 (unknown boundary)
        step_iters: int = 4,  # CG steps of each data step, warm-started
    ):
        super().__init__()
        if stages < 1:
            raise KdiffError(f"unrolled needs at least 1 stage, got {stages}")
        self.stages = int(stages)
        self.lambda_scale, self.lambda_floor = float(lambda_scale), float(lambda_floor)
        self.margin, self.iters, self.step_iters = float(margin), int(iters), int(step_iters)
        self.denoiser = Denoiser(widths, blocks, maps=2)
        steps = max(self.stages - 1, 1)
        self.log_mu = nn.Parameter(torch.full((steps,), float(log_mu)))
        self.log_lam = nn.Parameter(torch.zeros(steps))

    def forward(self, y: torch.Tensor, k: torch.Tensor, sigma=None) -> torch.Tensor:
        """Deblur ``y`` (B, C, H, W), C in {1, 3}, with ``k`` (B or 1, 1, h, w)."""
        k = deconv.check_inputs(y, k)
        channels = y.shape[1]
        y3 = deconv.as_rgb(y)
        sigma = deconv.noise_level(sigma, y)
        lam = self.lambda_scale * sigma.square() + self.lambda_floor
        canvas = deconv.deconvolve_canvas(y3, k, lam, self.margin, self.iters)
        H, W = y.shape[-2:]
        m = self.denoiser.multiple  # the denoiser works on sizes that divide by m
        ph, pw = -H % m, -W % m
        noise_map = SIGMA_SCALE * sigma
        z = canvas.image()
        for i in range(self.stages):
            x = canvas.image()
            xe = ops.pad(x, (0, ph, 0, pw), "symmetric") if (ph or pw) else x
            stage = torch.full_like(sigma, (i + 1) / self.stages)
            z = self.denoiser(xe, torch.stack([noise_map, stage], dim=1))[..., :H, :W].to(x.dtype)
            if i == self.stages - 1:
                break
            Zf = torch.fft.rfft2(deconv.embed(z, canvas))
            canvas.X = deconv.prox_canvas(canvas, y3, torch.exp(self.log_lam[i]) * lam,
                                          torch.exp(self.log_mu[i]) * lam, Zf, self.step_iters)
        return deconv.from_rgb(z, channels)


@hookimpl
def register_solvers(register):
    register(UnrolledSolver)
