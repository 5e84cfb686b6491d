"""The noise level of a blurred image: ``sigma`` given, or estimated from the image.

:func:`noise_level` turns ``sigma`` (None, a number, or one value per image) into a (B,) tensor,
estimating it with :func:`estimate_noise` when absent; every solver and the guidance use it
(through :mod:`kdiff_cli.maths.deconv`, which re-exports these names).
"""

from __future__ import annotations

import torch

from kdiff_cli.errors import KdiffError

#: 0.6745 = Phi^-1(3/4): the MAD of a standard normal variable
MAD_TO_STD = 1.0 / 0.6745


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half precision (FFTs need it), else the dtype itself (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def estimate_noise(y: torch.Tensor) -> torch.Tensor:
    """Noise std per image, shape (B,): MAD of the finest diagonal Haar sub-band over all channels.

    The orthonormal Haar HH coefficient ``(a - b - c + d) / 2`` of white noise of std ``sigma``
    has std ``sigma``; blur removes almost all image content from this band.
    """
    H, W = y.shape[-2] // 2 * 2, y.shape[-1] // 2 * 2
    if H == 0 or W == 0:
        return y.new_zeros(y.shape[0])
    v = y[..., :H, :W].detach().to(working_dtype(y.dtype))
    hh = (v[..., 0::2, 0::2] - v[..., 0::2, 1::2] - v[..., 1::2, 0::2] + v[..., 1::2, 1::2]) / 2
    return hh.flatten(1).abs().median(dim=1).values * MAD_TO_STD


def noise_level(sigma, y: torch.Tensor) -> torch.Tensor:
    """``sigma`` (None, a float, a 0-d or (B,) tensor) as a (B,) tensor on ``y``'s device."""
    dtype = working_dtype(y.dtype)
    if sigma is None:
        return estimate_noise(y).to(dtype)
    s = torch.as_tensor(sigma, dtype=dtype, device=y.device).reshape(-1)
    if s.numel() == 1:
        s = s.expand(y.shape[0])
    if s.numel() != y.shape[0]:
        raise KdiffError(f"sigma must be a number or have one value per image ({y.shape[0]}), got {s.numel()}")
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise KdiffError("sigma must be finite and nonnegative")
    return s
