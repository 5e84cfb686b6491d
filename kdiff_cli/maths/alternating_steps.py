"""The building blocks of the ``alternating`` method (:mod:`kdiff_cli.maths.alternating`).

Luminance, the kernel pyramid, the L0 x-step, the closed-form and windowed k-steps, and the
kernel clean-up; the method's loop and settings are in :mod:`kdiff_cli.maths.alternating`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import deconv, ops

if TYPE_CHECKING:
    from kdiff_cli.maths.alternating import AlternatingSettings

#: luminance weights (ITU-R BT.601) for the gray image the kernel is estimated on
LUMA = (0.299, 0.587, 0.114)
INITS = ("gaussian", "delta", "random")


# --------------------------------------------------------------------------- building blocks


def luminance(y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): BT.601 luma for RGB, the image itself for gray."""
    if y.shape[1] == 1:
        return y
    if y.shape[1] != 3:
        raise KdiffError(f"images must have 1 (gray) or 3 (RGB) channels, got {y.shape[1]}")
    w = torch.tensor(LUMA, dtype=y.dtype, device=y.device).reshape(1, 3, 1, 1)
    return (y * w).sum(dim=1, keepdim=True)


def pyramid_kernel_sizes(kernel_size: int, ratio: float, min_kernel: int = 3) -> list[int]:
    """Kernel sides from coarse to fine: ``kernel_size * ratio^l`` rounded to odd, >= ``min_kernel``."""
    sizes = [kernel_size]
    s = float(kernel_size)
    while True:
        s *= ratio
        n = max(min_kernel, int(round(s)) | 1)
        if n >= sizes[-1] or s < min_kernel:
            break
        sizes.append(n)
    return sizes[::-1]


def initial_kernel(size: int, init: str, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """The coarsest level's starting kernel (1, 1, size, size): nonnegative, sum 1, centred."""
    c = size // 2
    if init == "delta":
        k = torch.zeros(1, 1, size, size, dtype=dtype)
        k[..., c, c] = 1
        return k
    if init == "random":
        k = torch.rand(1, 1, size, size, generator=generator, dtype=dtype)
        return ops.center_kernel(ops.normalize_kernel(k))
    r = torch.arange(size, dtype=dtype) - c
    g = torch.exp(-0.5 * r**2 / 0.5**2)  # a narrow Gaussian, sigma = 0.5 px
    return ops.normalize_kernel((g[:, None] * g[None, :])[None, None])


def upsample_kernel(k: torch.Tensor, size: int) -> torch.Tensor:
    """Stretch a kernel onto a larger canvas (bilinear), then project: nonnegative, sum 1, centred."""
    k = F.interpolate(k, size=(size, size), mode="bilinear", align_corners=True)
    return ops.center_kernel(ops.normalize_kernel(k))


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular forward differences (horizontal, vertical)."""
    return torch.roll(x, -1, dims=-1) - x, torch.roll(x, -1, dims=-2) - x


def _grad_adjoint(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grad` (the negative divergence)."""
    return (torch.roll(h, 1, dims=-1) - h) + (torch.roll(v, 1, dims=-2) - v)


def x_step(y_canvas: torch.Tensor, Kf: torch.Tensor, lam: float, settings: AlternatingSettings) -> torch.Tensor:
    """``argmin_x ||k * x - y||^2 + lam ||grad x||_0`` on the periodic canvas (half-quadratic, FFT)."""
    size = y_canvas.shape[-2:]
    numer_data = torch.conj(Kf) * torch.fft.rfft2(y_canvas)
    denom_data = Kf.abs().square()
    denom_grad = deconv.gradient_spectrum(tuple(size), y_canvas.dtype, y_canvas.device)
    x = y_canvas
    beta = 2 * lam
    while beta < settings.beta_max:  # (in place where it can: this loop is the method's inner loop)
        h, v = _grad(x)
        keep = (h.square() + v.square()) >= lam / beta  # the L0 proximal step: hard threshold
        numer = torch.fft.rfft2(_grad_adjoint(h.mul_(keep), v.mul_(keep))).mul_(beta).add_(numer_data)
        x = torch.fft.irfft2(numer.div_(denom_grad * beta + denom_data), s=size)
        beta *= settings.kappa
    return x


def alternations(y_canvas: torch.Tensor, k: torch.Tensor, pads: tuple[int, int, int, int], rounds: int, lam: float,
                 settings: AlternatingSettings, window: bool = False):
    """``rounds`` alternations at one kernel size: the x-step with weight ``lam`` (then decaying by
    ``settings.lambda_decay`` down to ``lambda_min``), then the k-step (the window fit on the
    observed pixels inside ``pads`` when ``window``, else the closed form). Yields ``(round,
    x_canvas, k)`` after each round (the method's pyramid levels and polish, and the photo
    polish of :mod:`kdiff_cli.blind.polish`)."""
    size = k.shape[-1]
    for it in range(rounds):
        Kf = deconv.psf2otf(k, tuple(y_canvas.shape[-2:]))
        x_canvas = x_step(y_canvas, Kf, lam, settings)
        k = k_step(x_canvas, y_canvas, size, settings, window=pads if window else None, k0=k)
        lam = max(lam / settings.lambda_decay, settings.lambda_min)
        yield it, x_canvas, k


def k_step(
    x_canvas: torch.Tensor,
    y_canvas: torch.Tensor,
    size: int,
    settings: AlternatingSettings,
    window: tuple[int, int, int, int] | None = None,
    k0: torch.Tensor | None = None,
) -> torch.Tensor:
    """One kernel update from the latent ``x_canvas`` and the data ``y_canvas`` (1, 1, Hp, Wp).

    Without ``window``: ``argmin_k sum_d ||d x * k - d y||^2 + gamma P ||k||^2`` over the whole
    canvas in closed form by FFT, then cropped to the kernel. With ``window = (top, bottom, left,
    right)``, the canvas pads around the observed pixels, and ``k0`` (1, 1, size, size): the same
    gradient fit on the observed pixels only, the kernel confined to its support (the tapered
    margin of the canvas is not data, and fitting it biases the closed form: a true kernel came
    back with MNC 0.93 from the *true* sharp image, 0.99 when fitted on the window only), by
    ``cg_iters`` conjugate-gradient steps from ``k0`` (the early stop regularises, as does
    ``gamma_window``). Either way the result is projected: values below ``threshold * max``
    zeroed, small pieces removed, nonnegative, sum 1, centred. Returns (1, 1, size, size).
    """
    if window is not None:
        if k0 is None:
            raise KdiffError("the window k-step starts from a kernel: pass k0")
        k = _k_window(x_canvas, y_canvas, size, settings, window, k0)
    else:
        k = _k_fft(x_canvas, y_canvas, size, settings)
    return ops.center_kernel(sparse_projection(k, settings.threshold, settings.min_component))


def _k_fft(x_canvas, y_canvas, size, settings) -> torch.Tensor:
    Hp, Wp = x_canvas.shape[-2:]
    num = torch.zeros_like(torch.fft.rfft2(x_canvas))
    den = torch.zeros(num.shape, dtype=x_canvas.dtype, device=x_canvas.device)
    for dx, dy in zip(_grad(x_canvas), _grad(y_canvas)):
        Xf, Yf = torch.fft.rfft2(dx), torch.fft.rfft2(dy)
        num = num + torch.conj(Xf) * Yf
        den = den + Xf.abs().square()
    k_full = torch.fft.irfft2(num / (den + settings.gamma * Hp * Wp), s=(Hp, Wp))
    # the kernel's centre pixel (size // 2) sits at the origin of the periodic canvas
    return torch.roll(k_full, shifts=(size // 2, size // 2), dims=(-2, -1))[..., :size, :size]


def window_operator(x_canvas: torch.Tensor, size: int, window: tuple[int, int, int, int]):
    """``(A, A_T, mask)`` of the window k-step: ``A k = (M (d_h x * k), M (d_v x * k))``.

    ``k`` (1, 1, size, size) with its centre pixel at the convolution centre; ``M`` keeps the
    canvas pixels inside ``window = (top, bottom, left, right)`` pads. ``A_T`` is the exact adjoint.
    """
    Hp, Wp = x_canvas.shape[-2:]
    top, bottom, left, right = window
    c = size // 2
    mask = torch.zeros_like(x_canvas)
    mask[..., top : Hp - bottom, left : Wp - right] = 1
    Xs = [torch.fft.rfft2(g) for g in _grad(x_canvas)]

    def forward(k):  # the support embedded on the canvas, centre pixel at the origin
        Kf = torch.fft.rfft2(torch.roll(F.pad(k, (0, Wp - size, 0, Hp - size)), shifts=(-c, -c), dims=(-2, -1)))
        return [mask * torch.fft.irfft2(X * Kf, s=(Hp, Wp)) for X in Xs]

    def adjoint(rs):  # correlate each masked residual with its gradient image, keep the support
        full = sum(torch.fft.irfft2(torch.conj(X) * torch.fft.rfft2(mask * r), s=(Hp, Wp)) for X, r in zip(Xs, rs))
        return torch.roll(full, shifts=(c, c), dims=(-2, -1))[..., :size, :size]

    return forward, adjoint, mask


def _k_window(x_canvas, y_canvas, size, settings, window, k0) -> torch.Tensor:
    """CG on ``(A^T A + g I) k = A^T M d y`` from ``k0`` (``A`` from :func:`window_operator`)."""
    forward, adjoint, mask = window_operator(x_canvas, size, window)
    # the diagonal of A^T A is the fitted gradient energy: gamma_window is relative to it
    g = settings.gamma_window * sum((d * mask).square().sum() for d in _grad(x_canvas))

    def normal(k):
        return adjoint(forward(k)) + g * k

    b = adjoint(list(_grad(y_canvas)))
    k = k0.to(b.dtype).reshape(b.shape).clone()
    r = b - normal(k)
    p, rr = r.clone(), r.square().sum()
    for _ in range(settings.cg_iters):
        if rr <= 0:
            break
        Ap = normal(p)
        a = rr / (p * Ap).sum()
        k, r = k + a * p, r - a * Ap
        rr_new = r.square().sum()
        p, rr = r + (rr_new / rr) * p, rr_new
    return k


def sparse_projection(k: torch.Tensor, threshold: float, min_mass: float) -> torch.Tensor:
    """The kernel clean-up of the k-step, not centred: values of ``k`` (1, 1, h, w) below
    ``threshold * max`` zeroed, pieces holding less than ``min_mass`` removed, nonnegative, sum 1
    (also the clean-up of Kernel-Diff's Stage II result, :func:`kdiff_cli.maths.guidance.clean_kernel`)."""
    k = torch.where(k >= threshold * k.max(), k, torch.zeros_like(k))
    k = drop_small_components(ops.normalize_kernel(k), min_mass)
    return ops.normalize_kernel(k)


def drop_small_components(k: torch.Tensor, min_mass: float) -> torch.Tensor:
    """Zero the 8-connected pieces of a kernel (1, 1, h, w), sum 1, holding less than ``min_mass``.

    (Pan et al.'s clean-up; the largest piece is always kept.)
    """
    if min_mass <= 0:
        return k
    from scipy import ndimage

    a = k[0, 0].detach().cpu().numpy()
    labels, n = ndimage.label(a > 0, structure=np.ones((3, 3)))
    if n <= 1:
        return k
    mass = ndimage.sum(a, labels, index=np.arange(1, n + 1))
    keep = (mass >= min_mass) | (mass == mass.max())
    mask = np.concatenate([[False], keep])[labels]
    return k * torch.from_numpy(mask).to(device=k.device, dtype=k.dtype)


def residual_rms(y: torch.Tensor, x: torch.Tensor, k: torch.Tensor) -> float:
    """``||y - k * x|| / sqrt(numel)`` with the project's symmetric-boundary forward model."""
    r = y - ops.conv2d(x, k, "symmetric")
    return float(r.square().mean().sqrt())
