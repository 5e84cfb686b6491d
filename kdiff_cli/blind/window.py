"""Where Kernel-Diff looks: the estimation window and the scale of the estimate.

The kernel is estimated on one window of the image (``--roi`` or the strongest edges), at full
resolution or downscaled 2x when the blur outgrows the kernel canvas (``--downscale auto``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops

#: fraction of kernel mass in the outer ring that signals blur larger than the kernel canvas
BORDER_MASS = 0.02


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``--roi x,y,w,h`` as four integers (None: automatic window)."""
    if text is None:
        return None
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise KdiffError(f"--roi must be x,y,w,h (four integers), got {text!r}")
    return parts  # type: ignore[return-value]


def select_window(y: torch.Tensor, size: int, stride: int = 8) -> tuple[int, int, int, int]:
    """The ``size x size`` window (x, y, w, h) with the largest total gradient magnitude.

    Smaller images give their whole area (cropped to a multiple of 16 px). Deterministic.
    """
    H, W = y.shape[-2:]
    if H <= size or W <= size:
        h, w = min(H, size), min(W, size)
        h, w = h - h % 16, w - w % 16
        return (W - w) // 2, (H - h) // 2, w, h
    g = y.mean(1, keepdim=True)
    mag = (g[..., 1:, :-1] - g[..., :-1, :-1]).abs() + (g[..., :-1, 1:] - g[..., :-1, :-1]).abs()
    # saturated pixels violate the blur model; do not let them attract the window
    mag = mag * (g[..., :-1, :-1] < 0.98)
    sums = F.avg_pool2d(mag, kernel_size=size - 1, stride=stride)
    idx = int(torch.argmax(sums.flatten()))
    r, c = divmod(idx, sums.shape[-1])
    return c * stride, r * stride, size, size


def check_roi(roi, H: int, W: int) -> tuple[int, int, int, int]:
    """``--roi`` (x, y, w, h) checked against a ``W x H`` image; w and h cut to multiples of 16."""
    x, y0, w, h = roi
    if w < 32 or h < 32 or x < 0 or y0 < 0 or x + w > W or y0 + h > H:
        raise KdiffError(f"--roi {x},{y0},{w},{h} is not a window of at least 32x32 inside the {W}x{H} image")
    return x, y0, w - w % 16, h - h % 16


def downscale(y: torch.Tensor, factor: int) -> torch.Tensor:
    """``y`` average-pooled by ``factor`` (1: unchanged)."""
    return y if factor == 1 else F.avg_pool2d(y, factor)


def upscale_kernel(k: torch.Tensor, factor: int) -> torch.Tensor:
    """Kernel estimated at 1/factor resolution -> full resolution on a factor x larger canvas."""
    if factor == 1:
        return k
    S = k.shape[-1]
    up = F.interpolate(k, size=(S * factor, S * factor), mode="bilinear", align_corners=False)
    return ops.center_kernel(ops.normalize_kernel(up))


def border_mass(k: torch.Tensor, width: int = 2) -> float:
    """Fraction of the kernel's mass in its outer ring ``width`` pixels wide."""
    inner = k[..., width:-width, width:-width].sum()
    return float(1 - inner / k.sum().clamp(min=1e-12))
