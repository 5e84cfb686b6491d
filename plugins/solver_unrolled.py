"""Solver ``unrolled``: unrolled half-quadratic splitting with a small learned denoiser.

In the spirit of USRNet (Zhang et al. 2020) and photon-limited unrolling (Sanghvi et al. 2022).
HQS splits ``min_x ||y - k * x||^2 / (2 sigma^2) + R(x)`` into alternating steps

* prior step ``z_i = x_{i-1} + D(x_{i-1}, level maps)``: a residual CNN denoiser, shared by all
  stages (FFDNet-like: 2x2 pixel-unshuffle, ``depth`` 3x3 convolutions of ``width`` channels,
  pixel-shuffle back), told the input noise level ``sigma`` and the stage's level
  ``1 / sqrt(exp(w_i))``;
* data step ``x_i = argmin ||M (k * x) - y||^2 + mu_i ||x - z_i||^2``, in closed form on the
  periodic canvas (:func:`kdiff_cli.deconv.quadratic_step`), with a learned per-stage penalty
  ``mu_i = exp(w_i) * (sigma^2 + sigma_floor^2)``. The canvas margin beyond the image edges is
  unobserved: before each data step it is filled with the current estimate reblurred by ``k``,
  and the estimate's own margin carries over, so the edges do not ring.

``x_0`` is the boundary-aware Wiener estimate (:func:`kdiff_cli.deconv.deconvolve_canvas`); the
network runs ``stages`` prior steps with a data step between consecutive ones and returns the last
prior step's output. The denoiser's last convolution starts at zero and the initial penalties
are large, so an untrained network stays close to ``x_0``. Gray images run as three equal channels. Differentiable in ``y`` and ``k``. Trained weights: ``weights/unrolled.safetensors``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdiff_cli import deconv, ops
from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl

#: the denoiser sees sigma scaled by this, so its input map is O(1)
SIGMA_SCALE = 10.0


class Denoiser(nn.Module):
    """Residual CNN ``x -> x + r(x, maps)`` working on 2x2 pixel-unshuffled RGB."""

    def __init__(self, width: int = 48, depth: int = 5, maps: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(12 + maps, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        last = nn.Conv2d(width, 12, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 3, H, W) with H, W even; ``levels`` (B, maps) constant maps."""
        u = F.pixel_unshuffle(x - 0.5, 2)
        maps = levels[:, :, None, None].expand(-1, -1, *u.shape[-2:])
        return x + F.pixel_shuffle(self.body(torch.cat([u, maps], dim=1)), 2)


class UnrolledSolver(nn.Module):
    """``F(y, k, sigma)`` by ``stages`` unrolled HQS iterations with learned penalties."""

    name = "unrolled"
    description = "unrolled half-quadratic splitting, FFT data steps + learned CNN denoiser (learned)"
    default_weights = "unrolled"

    def __init__(
        self,
        stages: int = 4,  # prior (denoiser) steps; a data step sits between consecutive ones
        width: int = 64,  # denoiser channels
        depth: int = 6,  # denoiser 3x3 convolutions
        log_mu_first: float = 6.0,  # initial log penalty weight w_i of the first data step ...
        log_mu_last: float = 8.0,  # ... and of the last (linear in between), then learned
        sigma_floor: float = 0.03,  # mu_i = exp(w_i) (sigma^2 + sigma_floor^2)
        lambda_scale: float = 100.0,  # x_0: Wiener with lambda = lambda_scale sigma^2 + lambda_floor
        lambda_floor: float = 1e-3,
        margin: float = 1.0,  # canvas margin, in kernel sizes
        iters: int = 12,  # CG steps of x_0 (unknown boundary)
    ):
        super().__init__()
        if stages < 1:
            raise KdiffError(f"unrolled needs at least 1 stage, got {stages}")
        self.stages = int(stages)
        self.sigma_floor = float(sigma_floor)
        self.lambda_scale, self.lambda_floor = float(lambda_scale), float(lambda_floor)
        self.margin, self.iters = float(margin), int(iters)
        self.denoiser = Denoiser(width, depth, maps=2)
        steps = max(self.stages - 1, 1)
        self.log_mu = nn.Parameter(torch.linspace(log_mu_first, log_mu_last, steps))

    def forward(self, y: torch.Tensor, k: torch.Tensor, sigma=None) -> torch.Tensor:
        """Deblur ``y`` (B, C, H, W), C in {1, 3}, with ``k`` (B or 1, 1, h, w)."""
        k = deconv.check_inputs(y, k)
        channels = y.shape[1]
        y3 = deconv.as_rgb(y)
        sigma = deconv.noise_level(sigma, y)
        lam = self.lambda_scale * sigma.square() + self.lambda_floor
        canvas = deconv.deconvolve_canvas(y3, k, lam, self.margin, self.iters)
        pads, size, Kf = canvas.pads, canvas.size, canvas.Kf
        top, bottom, left, right = pads
        mask = canvas.mask
        y_obs = F.pad(y3, (left, right, top, bottom))  # observed window, zero margin
        x_canvas = canvas.spatial()
        H, W = y.shape[-2:]
        ph, pw = H % 2, W % 2  # the denoiser works on even sizes
        noise_map = SIGMA_SCALE * sigma
        for i in range(self.stages):
            x = deconv.crop(x_canvas, pads)
            level = torch.exp(-0.5 * self.log_mu[min(i, len(self.log_mu) - 1)]).expand_as(sigma)
            xe = ops.pad(x, (0, ph, 0, pw), "symmetric") if (ph or pw) else x
            z = self.denoiser(xe, torch.stack([noise_map, level], dim=1))[..., :H, :W].to(x.dtype)
            if i == self.stages - 1:
                break
            # data step on the canvas: z inside, the previous estimate in the margin
            z_canvas = mask * F.pad(z, (left, right, top, bottom)) + (1 - mask) * x_canvas
            Zf = torch.fft.rfft2(z_canvas)
            y_fill = y_obs + (1 - mask) * torch.fft.irfft2(Kf * Zf, s=size)
            mu = torch.exp(self.log_mu[i]) * (sigma.square() + self.sigma_floor**2)
            x_canvas = torch.fft.irfft2(deconv.quadratic_step(torch.fft.rfft2(y_fill), Kf, Zf, mu), s=size)
        return deconv.from_rgb(z, channels)


@hookimpl
def register_solvers(register):
    register(UnrolledSolver)
