"""The camera between the scene and the file: sRGB encoding and clipped highlights.

Blur happens to light, before the camera's tone curve: an 8-bit JPEG or PNG holds
``encode(clip(k * x_linear))``. :func:`to_linear` / :func:`to_encoded` are the sRGB transfer
function (IEC 61966-2-1) and its inverse; ``kdiff deblur --linear`` estimates and deconvolves in
linear light and encodes the result back. :func:`clipped` marks the pixels a saturated highlight
touches (a street light, a specular spot): there ``y`` is not ``k * x``, so they are kept out of
the kernel choice's score and the estimation window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: an encoded value at or above this counts as clipped (8-bit: 250 and up)
CLIP_LEVEL = 0.98


def to_linear(y: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light in [0, 1]."""
    y = y.clamp(0, 1)
    return torch.where(y <= 0.04045, y / 12.92, ((y + 0.055) / 1.055) ** 2.4)


def to_encoded(x: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-encoded values in [0, 1] (the inverse of :func:`to_linear`)."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def clipped(y: torch.Tensor, grow: int = 0, level: float = CLIP_LEVEL) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels with a channel at or above ``level``, grown by ``grow`` px (a square).

    ``grow`` is the kernel's side: a clipped pixel corrupts every pixel its blur reaches.
    """
    m = (y >= level).any(1, keepdim=True).float()
    if grow > 0 and bool(m.any()):
        r = grow // 2
        m = F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)
    return m > 0


__all__ = ["to_linear", "to_encoded", "clipped", "CLIP_LEVEL"]
