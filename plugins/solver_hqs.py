"""Solver ``hqs``: deconvolution with a hyper-Laplacian gradient prior (half-quadratic splitting).

``x = argmin 1/2 ||M (k * x) - y||^2 + rho(sigma) sum |grad x|^p`` (:mod:`kdiff_cli.maths.hqs`,
Krishnan & Fergus 2009), ``rho(sigma) = rho_scale * sigma^2 + rho_floor``, started from the
``wiener`` solution with the same unknown-boundary canvas. Sparser gradients than the quadratic
prior: sharper edges, less ringing from kernel error and noise. No learned weights. Used as the
final-image solver of blind deblurring (``kdiff deblur --final-solver``); its shrinkage is not a
useful gradient for the guidance, which keeps ``--solver``. Recorded values at or above ``clip``
(clipped highlights: street lights, specular spots) are left out of the data term and filled by
the estimate's own reblur, so lights do not ring (:func:`kdiff_cli.maths.hqs.deconvolve`).

``rho_scale``, ``p`` and ``beta0`` were chosen on 12 val crops (256x256, ``borodenko`` 64x64,
sigma 0.01) with kernels estimated by ``alternating`` and with the true kernels (docs/solvers.md).
"""

from __future__ import annotations

import torch
from torch import nn

from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths import deconv, hqs


class HQSSolver(nn.Module):
    """``F(y, k, sigma) -> x`` with a hyper-Laplacian prior: the Wiener start, then HQS iterations."""

    name = "hqs"
    description = "hyper-Laplacian gradient prior by half-quadratic splitting from the Wiener start, boundary-aware (no weights)"
    default_weights = None
    #: default tile side of the final deconvolution (``--tile``): FFT solver: a 4 MP piece at ~130 bytes per pixel and channel (measured 1.2 GB for 3 MP)
    tile = 2048
    #: memory per pixel and channel of a tile (a bound for the memory check)
    tile_bytes_per_pixel = 256

    def __init__(
        self,
        rho_scale: float = 10.0,  # rho = rho_scale * sigma^2 + rho_floor
        rho_floor: float = 0.0,
        p: float = 0.8,  # the prior's exponent (1: total variation)
        beta0: float = 0.01,  # first splitting weight, doubled every iteration
        iters: int = 8,
        lambda_scale: float = 100.0,  # the Wiener start (as the wiener solver)
        lambda_floor: float = 1e-3,
        margin: float = 1.0,
        clip: float | None = 0.98,  # recorded values at or above this are clipped: left out of the data term (None: keep all)
    ):
        super().__init__()
        self.rho_scale, self.rho_floor, self.p = float(rho_scale), float(rho_floor), float(p)
        self.beta0, self.iters = float(beta0), int(iters)
        self.lambda_scale, self.lambda_floor, self.margin = float(lambda_scale), float(lambda_floor), float(margin)
        self.clip = None if clip is None else float(clip)

    def forward(self, y: torch.Tensor, k: torch.Tensor, sigma=None) -> torch.Tensor:
        """Deblur ``y`` (B, C, H, W) with kernels ``k`` (B or 1, 1, h, w); output not clipped."""
        k = deconv.check_inputs(y, k)
        s = deconv.noise_level(sigma, y)
        lam = self.lambda_scale * s.square() + self.lambda_floor
        rho = self.rho_scale * s.square() + self.rho_floor
        valid = None
        if self.clip is not None and bool((y >= self.clip).any()):
            valid = y < self.clip
        return hqs.deconvolve(y, k, lam, rho, p=self.p, beta0=self.beta0, iters=self.iters, margin=self.margin,
                              valid=valid)


@hookimpl
def register_solvers(register):
    register(HQSSolver)
