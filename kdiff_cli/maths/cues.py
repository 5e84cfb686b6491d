"""Physics cues of the blur kernel in a blurred image: the autocorrelation of y's gradients.

For ``y = k * x + n`` the gradients obey ``grad y = k * grad x + grad n``. The gradients of natural
images have a roughly flat power spectrum, so ``|FFT(grad y)|^2 ~ c |K|^2 + noise floor``: the
autocorrelation of y's gradients is close to the kernel's own autocorrelation (Goldstein & Fattal,
"Blur-Kernel Estimation from Spectral Irregularities", ECCV 2012; measured in
``../shared/docs/kernel-cues.md``). It loses the phase (k and k rotated by 180 degrees share it),
which the diffusion prior and the reblur guidance resolve.

:func:`gradient_autocorrelation` turns a blurred image of any size into ``CUE_CHANNELS`` maps on
the kernel canvas (S x S, lag 0 at index S // 2, the kernel-centre convention), the condition of
the ``autocorr`` kernel prior (:class:`kdiff_cli.maths.unet.KernelUNet` with ``condition="autocorr"``):

* channels 0, 1: autocorrelation of the horizontal / vertical differences at lags -S/2..S/2-1;
* channels 2, 3: the same, smoothed, at every second lag (-S..S-2): blurs longer than S/2 px.

Each map has its median removed and is scaled to a peak magnitude of 1, so the cue does not depend
on the image's contrast, mean or range ([0, 1] or [-1, 1]).
"""

from __future__ import annotations

import torch

from kdiff_cli.maths import ops
from kdiff_cli.errors import KdiffError

#: channels of the cue map: (dx, dy) x (fine lags, coarse lags)
CUE_CHANNELS = 4
#: smallest image side the cue is computed from
MIN_SIDE = 16


def _hann(n: int, like: torch.Tensor) -> torch.Tensor:
    i = torch.arange(n, dtype=like.dtype, device=like.device)
    return 0.5 - 0.5 * torch.cos(2 * torch.pi * (i + 0.5) / n)


def _lags(acf: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """Circular autocorrelation (…, N, M) at lags ``stride * (i - size // 2)``, i in 0..size-1."""
    N, M = acf.shape[-2:]
    lag = stride * (torch.arange(size, device=acf.device) - size // 2)
    return acf[..., (lag % N)[:, None], (lag % M)[None, :]]


def gradient_autocorrelation(y: torch.Tensor, size: int) -> torch.Tensor:
    """The cue map (B, CUE_CHANNELS, size, size) of blurred images ``y`` (B, C, H, W), float32.

    The channels are averaged to grey; the differences are Hann-windowed and zero-padded by at least
    ``2 size`` before the FFT, so no lag wraps around.
    """
    if y.dim() != 4:
        raise KdiffError(f"expected images (B, C, H, W), got shape {tuple(y.shape)}")
    H, W = y.shape[-2:]
    if min(H, W) < MIN_SIDE:
        raise KdiffError(f"image {H}x{W} is too small for the kernel cue (at least {MIN_SIDE} px a side)")
    g = y.float().mean(dim=1)
    dx = g[..., :-1, 1:] - g[..., :-1, :-1]
    dy = g[..., 1:, :-1] - g[..., :-1, :-1]
    d = torch.stack([dx, dy], dim=1)
    h, w = d.shape[-2:]
    d = d * (_hann(h, d)[:, None] * _hann(w, d)[None, :])
    s = (ops.fast_fft_len(h + 2 * size), ops.fast_fft_len(w + 2 * size))
    acf = torch.fft.irfft2(torch.fft.rfft2(d, s=s).abs().square(), s=s)
    return _cue_maps(acf, size)


def _cue_maps(acf: torch.Tensor, size: int) -> torch.Tensor:
    """Circular autocorrelations (B, c, N, M) -> the fine and coarse lag maps (B, 2c, size, size)."""
    fine = _lags(acf, size, 1)
    # [1 2 1]/4 smoothing (circular) before taking every second lag
    sm = (acf.roll(1, -1) + 2 * acf + acf.roll(-1, -1)) / 4
    sm = (sm.roll(1, -2) + 2 * sm + sm.roll(-1, -2)) / 4
    coarse = _lags(sm, size, 2)
    cue = torch.cat([fine, coarse], dim=1)
    cue = cue - cue.flatten(-2).median(dim=-1).values[..., None, None]
    return cue / cue.abs().amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)


def kernel_autocorrelation(k: torch.Tensor, size: int) -> torch.Tensor:
    """What :func:`gradient_autocorrelation` would measure for kernels ``k`` (B, 1, h, w) if the sharp
    image's gradients were white: the kernel's own autocorrelation as the same maps, with the
    horizontal and vertical channels equal (B, CUE_CHANNELS, size, size)."""
    if k.dim() != 4 or k.shape[1] != 1:
        raise KdiffError(f"expected kernels (B, 1, h, w), got shape {tuple(k.shape)}")
    h, w = k.shape[-2:]
    # the kernel's autocorrelation has support |lag| < h: a period of h + size holds lags up to size
    s = (ops.fast_fft_len(h + size), ops.fast_fft_len(w + size))
    acf = torch.fft.irfft2(torch.fft.rfft2(k.float(), s=s).abs().square(), s=s)
    return _cue_maps(acf, size)[:, [0, 0, 1, 1]]

