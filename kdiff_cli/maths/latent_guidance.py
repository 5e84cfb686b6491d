"""The latent reblur loss: a guidance and Stage II objective that sees the kernel's phase.

The paper's loss ``R(k0) = ||y - k0 * F(y, k0)||^2`` with a linear solver such as ``wiener`` is a
function of the kernel's Fourier magnitude only (``k * F(y, k)`` is ``|K|^2 / (|K|^2 + lambda) Y``):
its gradient can grow or shrink a kernel but cannot turn, flip or reshape it (docs/deblur.md,
"Stage II"). ``--guidance-loss latent`` replaces ``F`` by the L0-gradient solver of the classical
estimator and reads the residual on the gradients of the luminance:

    R_latent(k0) = || M (grad y - k0 * grad x_hat) ||^2,   x_hat = argmin_x ||k0 * x - y||^2 + lam ||grad x||_0

with ``M`` the observed pixels of the window (the canvas's tapered margin is not data) and
``x_hat`` held fixed in the gradient (computed from the detached ``k0``: the gradient w.r.t. ``k0``
is the classical k-step's). The sparse latent ``x_hat`` has its edges where ``k0`` puts them, so a
kernel turned by 180 degrees, or a dot, no longer explains ``y`` as well as the true kernel
(``tests/maths/test_latent_guidance.py``). ``lam`` = 1e-3 was measured against 5e-4, 2e-3, 4e-3
and a decay from 2e-3 to 2e-4 (docs/deblur.md, "The latent loss").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import deconv, ops
from kdiff_cli.maths.alternating import AlternatingSettings
from kdiff_cli.maths.alternating_steps import _grad, luminance, window_operator, x_step
from kdiff_cli.maths.guidance import ReblurGuidance

#: the weight of ``||grad x||_0`` in ``x_hat`` (measured, docs/deblur.md)
LAM = 1e-3


@dataclass
class LatentGuidance(ReblurGuidance):
    """:class:`~kdiff_cli.maths.guidance.ReblurGuidance` with the latent reblur loss (module docstring).

    ``residual`` is per image (B,) on the luminance's gradients; ``step_size`` keeps eq. (33)'s
    ``c / R``, so the step is relative to the loss as with the paper's. ``discrepancy`` does not
    apply (``R_latent`` is not a residual of ``y`` itself).
    """

    lam: float = LAM

    def __post_init__(self) -> None:
        if self.discrepancy is not None:
            raise KdiffError("--discrepancy applies to --guidance-loss reblur only")
        self._steps = AlternatingSettings()
        self._gray = luminance(self.y.detach().float())
        self._canvas: dict[int, tuple] = {}  # kernel side -> (pads, y canvas, grad y canvas)

    def _canvases(self, size: int):
        if size not in self._canvas:
            H, W = self._gray.shape[-2:]
            pads = deconv.canvas_pads(H, W, size, size, margin=1.0)
            y_can = deconv.pad_taper(self._gray, pads)
            self._canvas[size] = (pads, y_can, _grad(y_can))
        return self._canvas[size]

    def residual(self, k: torch.Tensor) -> torch.Tensor:
        """``R_latent`` per kernel (B,) for kernels ``k`` (B, 1, S, S) on the images of ``y`` (B of
        them, or one for all kernels); differentiable in ``k``."""
        S = k.shape[-1]
        pads, y_can, (dy_h, dy_v) = self._canvases(S)
        out = []
        if y_can.shape[0] not in (1, k.shape[0]):
            raise KdiffError(f"{k.shape[0]} kernels for {y_can.shape[0]} images: give one image or one per kernel")
        for b in range(k.shape[0]):
            i = b if y_can.shape[0] > 1 else 0  # one image: every kernel on it
            kb = k[b : b + 1].to(y_can.dtype)
            with torch.no_grad():  # x_hat at the detached kernel: held fixed in the gradient
                k_fixed = ops.normalize_kernel(kb.detach().clamp(min=0))
                x_can = x_step(y_can[i : i + 1], deconv.psf2otf(k_fixed, tuple(y_can.shape[-2:])), self.lam, self._steps)
            forward, _, mask = window_operator(x_can, S, pads)
            pred_h, pred_v = forward(kb)
            r = (pred_h - mask * dy_h[i : i + 1]).square().sum() + (pred_v - mask * dy_v[i : i + 1]).square().sum()
            out.append(r.reshape(1))
        return torch.cat(out).to(k.dtype)

    def penalty(self, residual: torch.Tensor) -> torch.Tensor:
        return residual


#: ``--guidance-loss`` values
LOSSES = ("reblur", "latent")


def build_guidance(loss: str, solver: torch.nn.Module, y: torch.Tensor, sigma=None, **kw) -> ReblurGuidance:
    """The guidance object of ``loss``: the paper's :class:`ReblurGuidance` through ``solver``, or
    :class:`LatentGuidance` (its ``F`` is the L0 x-step: ``solver`` is not used)."""
    if loss == "reblur":
        return ReblurGuidance(solver, y, sigma, **kw)
    if loss == "latent":
        return LatentGuidance(solver, y, sigma, **kw)
    raise KdiffError(f"--guidance-loss must be one of {', '.join(LOSSES)}, got {loss!r}")
