"""Solver ``wiener``: closed-form FFT Wiener/Tikhonov deconvolution with a gradient prior.

``x = argmin ||M (k * x) - y||^2 + lambda(sigma) ||D x||^2`` with ``D`` the finite-difference
gradient, ``lambda(sigma) = lambda_scale * sigma^2 + lambda_floor`` (``sigma`` given or estimated
from ``y``) and ``M`` the observed window of a larger periodic canvas: the image is mirrored and
tapered onto the canvas, solved in closed form, then refined by a few preconditioned CG steps that
treat the pixels beyond the image edges as unknowns, so large kernels do not ring at the borders
(see :mod:`kdiff_cli.maths.deconv`). No learned weights; differentiable in ``y`` and ``k``.

``lambda_scale`` and ``lambda_floor`` were tuned on training crops (Borodenko 64x64 kernels,
sigma 0 to 0.04, symmetric-boundary blur); see docs/solvers.md.
"""

from __future__ import annotations

import torch
from torch import nn

from kdiff_cli.maths import deconv
from kdiff_cli.hookspecs import hookimpl


class WienerSolver(nn.Module):
    """``F(y, k, sigma) -> x`` by regularised FFT deconvolution with unknown boundaries."""

    name = "wiener"
    description = "closed-form FFT Wiener/Tikhonov deconvolution, gradient prior, boundary-aware (no weights)"
    default_weights = None
    #: default tile side of the final deconvolution (``--tile``): FFT solver: a 4 MP piece at ~130 bytes per pixel and channel
    tile = 2048
    #: memory per pixel and channel of a tile (a bound for the memory check)
    tile_bytes_per_pixel = 256
    #: boundary CG steps of :meth:`for_guidance` (measured: docs/solvers.md)
    guidance_iters = 3

    def __init__(
        self,
        lambda_scale: float = 100.0,  # lambda = lambda_scale * sigma^2 + lambda_floor
        lambda_floor: float = 1e-3,  # regularisation kept when sigma -> 0 (quantisation, model error)
        margin: float = 1.0,  # canvas margin on each side, in kernel sizes
        iters: int = 12,  # conjugate-gradient steps for the unknown boundary (0: plain closed form)
    ):
        super().__init__()
        self.lambda_scale = float(lambda_scale)
        self.lambda_floor = float(lambda_floor)
        self.margin = float(margin)
        self.iters = int(iters)

    def regularization(self, sigma: torch.Tensor) -> torch.Tensor:
        """``lambda(sigma)`` per image, shape (B,)."""
        return self.lambda_scale * sigma.square() + self.lambda_floor

    def for_guidance(self) -> "WienerSolver":
        """The solver that Stage I's reblur guidance differentiates at every reverse step: the same
        regularisation with :attr:`guidance_iters` boundary CG steps instead of ``iters`` (the
        guidance's forward and backward solves were ~85% of the sampling time; 25 val crops: the
        same PSNR within 0.01 dB, docs/solvers.md). Stage II, the MAP_k scores and the final image
        keep this solver."""
        if self.iters <= self.guidance_iters:
            return self
        return WienerSolver(self.lambda_scale, self.lambda_floor, self.margin, self.guidance_iters)

    def forward(self, y: torch.Tensor, k: torch.Tensor, sigma=None) -> torch.Tensor:
        """Deblur ``y`` (B, C, H, W) with kernels ``k`` (B or 1, 1, h, w); output not clipped."""
        k = deconv.check_inputs(y, k)
        lam = self.regularization(deconv.noise_level(sigma, y))
        return deconv.deconvolve(y, k, lam, self.margin, self.iters)


@hookimpl
def register_solvers(register):
    register(WienerSolver)
