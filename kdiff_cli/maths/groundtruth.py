"""Ground-truth kernels checked against their image pairs: orientation and shift fitted.

Public copies of benchmark sets do not all store kernels the same way: some are stored rotated by
180 degrees (correlation orientation) relative to the blur in the images, and captured pairs can sit
a few pixels off their kernel's centre. Scored against such a kernel, the true-kernel oracle, the
error ratio's denominator and MNC are all wrong. For an item with sharp ``x``, blurred ``y`` and
kernel ``k``, :func:`fit_kernel` tries ``k`` as stored and rotated by 180 degrees, each at every
integer shift within ``max_shift`` pixels, and keeps the one that best explains ``y`` from ``x``:
the smallest ``||y - k * x||^2`` over the interior (where the image boundary does not reach,
with kdiff's convolution, centre pixel ``(h // 2, w // 2)``). Intensities are not rescaled.

The fit's *relative residual* is the part of ``y`` the kernel leaves unexplained beyond the noise:
``sqrt(max(mean (y - k * x)^2 - sigma^2, 0)) / std(y)`` over the interior's unclipped pixels
(``y`` strictly inside (0, 1)), ``sigma`` the noise level of ``y`` (:func:`kdiff_cli.maths.noise.estimate_noise`).
On 528 synthetic pairs from 22 ``train/`` photos (kernels of 3, 15 and 31 px, noise 0-0.03, 8 bits)
it was 0 (median; at most 0.12) for the right kernel and 0.17-0.30 (median) for another kernel, a
Gaussian in its place or a blur that changes half-way across. Above ``threshold`` (0.15: no false
alarm there; 76-88% of the wrong pairs of full-size kernels caught, 59% of 3-px ones) neither orientation
explains the pair and :func:`check_item` warns (one line, :class:`~kdiff_cli.errors.KdiffWarning`);
the fitted kernel is still the better of the two.

Datasets that *synthesise* their pairs (``bsd100``, :mod:`kdiff_cli.maths.protocol`: ``y = k * x +
noise`` with the same operator) are consistent by construction and are not fitted; ``levin`` and
``folder`` (stored triples) are.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from kdiff_cli.errors import KdiffError, KdiffWarning
from kdiff_cli.items import Item
from kdiff_cli.maths import ops
from kdiff_cli.maths.metrics import align
from kdiff_cli.maths.noise import estimate_noise

#: search the kernel's shift within this many pixels
FIT_MAX_SHIFT = 10
#: relative residual above which neither orientation explains the pair (a warning)
FIT_THRESHOLD = 0.15
#: the smallest interior (pixels per side) the fit is scored on
MIN_INTERIOR = 8


@dataclass(frozen=True)
class KernelFit:
    """The kernel that best explains ``y`` from ``x``, and how it differs from the one stored."""

    k: np.ndarray  # (h', w') float64, sum 1: as stored, or rotated, re-centred (a border added if needed)
    rotated: bool  # rotated by 180 degrees
    shift: tuple[int, int]  # (dy, dx) the kernel was moved by (rows down, columns right)
    residual: float | None  # relative residual of the fitted kernel (None: image too small to check)
    residual_as_stored: float | None  # relative residual of the kernel as stored, unshifted
    noise: float | None = None  # the noise level of y the residuals discount
    threshold: float = FIT_THRESHOLD

    @property
    def corrected(self) -> bool:
        return self.rotated or self.shift != (0, 0)

    @property
    def explained(self) -> bool | None:
        return None if self.residual is None else self.residual <= self.threshold

    def record(self) -> dict:
        """What ``metrics.json`` keeps (``ground_truth``)."""
        r = lambda v: None if v is None else round(float(v), 6)  # noqa: E731
        return {
            "corrected": self.corrected, "rotated": self.rotated, "shift": list(self.shift),
            "residual": r(self.residual), "residual_as_stored": r(self.residual_as_stored), "noise": r(self.noise),
            "explained": self.explained,
        }


def rotate180(k: np.ndarray) -> np.ndarray:
    """``k`` rotated by 180 degrees (convolution <-> correlation orientation)."""
    return np.ascontiguousarray(np.asarray(k)[::-1, ::-1])


def shift_kernel(k: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``k`` moved by ``(dy, dx)`` pixels: the same canvas when its mass stays inside, else a canvas
    grown by ``2 max(|dy|, |dx|)`` (the centre convention ``size // 2`` kept, nothing cut)."""
    p = max(abs(int(dy)), abs(int(dx)))
    if p == 0:
        return np.array(k, dtype=np.float64)
    big = np.roll(np.pad(np.asarray(k, dtype=np.float64), p), (int(dy), int(dx)), axis=(0, 1))
    ring = big.copy()
    ring[p:-p, p:-p] = 0
    return big[p:-p, p:-p].copy() if not ring.any() else big


def _blur(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float64))[None]
    return ops.conv2d(xt, torch.from_numpy(np.ascontiguousarray(k, dtype=np.float64))[None, None])[0].numpy().transpose(1, 2, 0)


def fit_kernel(
    x: np.ndarray, y: np.ndarray, k: np.ndarray, max_shift: int = FIT_MAX_SHIFT, threshold: float = FIT_THRESHOLD,
) -> KernelFit:
    """The orientation (as stored or rotated 180 degrees) and integer shift of ``k`` that best
    explain ``y = k * x`` over the interior; ``x``, ``y`` (H, W[, C]) in [0, 1], ``k`` (h, w).

    The interior leaves out ``max_shift + max(h, w) // 2 + 1`` pixels per side (fewer shifts are
    searched on a small image); an image too small for any check keeps ``k`` with residual None.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x, y = (x[..., None] if x.ndim == 2 else x), (y[..., None] if y.ndim == 2 else y)
    k = np.asarray(k, dtype=np.float64)
    if x.shape != y.shape or k.ndim != 2:
        raise KdiffError(f"kernel fit needs x and y of one shape and a 2-D kernel, got {x.shape}, {y.shape}, {k.shape}")
    k = k / k.sum()
    H, W = y.shape[:2]
    reach = max(k.shape) // 2 + 1  # pixels the boundary reaches into k * x
    s = min(int(max_shift), (min(H, W) - 2 * MIN_INTERIOR) // 2 - reach)
    if s < 0:
        return KernelFit(k, False, (0, 0), None, None, None, threshold)
    border = s + reach
    sigma = float(estimate_noise(torch.from_numpy(np.ascontiguousarray(y.transpose(2, 0, 1)))[None])[0])
    # y[i] ~ (k * x)[i + d] = (shift(k, -d) * x)[i]: align k * x onto y, then move k the other way
    fits = []
    for rotated, kk in ((False, k), (True, rotate180(k))):
        z = _blur(x, kk)
        fits.append((align(z, y, s, border), rotated, kk, z))
    z0 = fits[0][3][border : H - border, border : W - border]
    interior = y[border : H - border, border : W - border]
    as_stored = relative_residual(interior, z0, sigma)
    # the rotated kernel only when clearly better (a symmetric kernel stays as stored)
    al, rotated, kk, _ = fits[1] if fits[1][0].ssd < fits[0][0].ssd * (1 - 1e-6) else fits[0]
    dy, dx = -al.dy, -al.dx
    return KernelFit(shift_kernel(kk, dy, dx), rotated, (dy, dx), relative_residual(al.reference, al.estimate, sigma),
                     as_stored, sigma, threshold)


def relative_residual(y: np.ndarray, z: np.ndarray, sigma: float = 0.0) -> float:
    """``sqrt(max(mean (y - z)^2 - sigma^2, 0)) / std(y)`` over the pixels where ``y`` is not
    clipped (all channels strictly inside (0, 1); all pixels if fewer than a quarter are)."""
    ok = ((y > 0) & (y < 1)).all(axis=2)
    if ok.sum() < ok.size / 4:
        ok[:] = True
    yy, zz = y[ok], z[ok]
    spread = float(np.sqrt(np.mean((yy - yy.mean(axis=0)) ** 2)))
    excess = float(np.mean((yy - zz) ** 2)) - float(sigma) ** 2
    return float(np.sqrt(max(excess, 0.0))) / max(spread, 1e-12)


def fit_protocol(max_shift: int = FIT_MAX_SHIFT, threshold: float = FIT_THRESHOLD) -> dict:
    """How a dataset's kernels are fitted, for its ``protocol()`` (so a cached run of the
    uncorrected kernels is not reused)."""
    return {"orientation": ["as stored", "rotated 180"], "max_shift": int(max_shift), "threshold": float(threshold)}


def checked(loader: Callable[[], Item], max_shift: int = FIT_MAX_SHIFT, threshold: float = FIT_THRESHOLD) -> Callable[[], Item]:
    """``loader`` whose items come with their kernels fitted (:func:`check_item`)."""
    return lambda: check_item(loader(), max_shift, threshold)


def check_item(item: Item, max_shift: int = FIT_MAX_SHIFT, threshold: float = FIT_THRESHOLD) -> Item:
    """``item`` with its kernel replaced by the fitted one (:func:`fit_kernel`) and the fit in
    ``item.meta["kernel_fit"]``; a one-line :class:`KdiffWarning` when it does not explain the pair."""
    if item.k is None:
        return item
    fit = fit_kernel(item.x, item.y, item.k, max_shift, threshold)
    if fit.explained is False:
        warnings.warn(
            f"{item.id}: neither orientation of the kernel explains the pair (relative residual "
            f"{fit.residual:.3f} > {threshold}): wrong kernel or spatially varying blur",
            KdiffWarning, stacklevel=2,
        )
    item.k = fit.k
    item.meta["kernel_fit"] = fit.record()
    return item
