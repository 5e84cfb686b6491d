"""Functional blur operators and kernel utilities (torch, batched, differentiable, any device).

Conventions
-----------
* images ``x`` / ``y``: ``(B, C, H, W)``; kernels ``k``: ``(B, 1, h, w)`` or ``(1, 1, h, w)``
  (broadcast over the batch). ``h``/``w`` may be even or odd.
* ``conv2d`` is a true convolution whose centre is pixel ``(h // 2, w // 2)``: a kernel with a
  single 1 at that pixel is the identity. The output has the input's size ("same").
* boundaries: ``symmetric`` (MATLAB-style half-sample mirror, the paper's: x[-1] = x[0]),
  ``reflect`` (whole-sample mirror: x[-1] = x[1]), ``circular`` and ``zero``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdiff_cli.errors import KdiffError

BOUNDARIES = ("symmetric", "reflect", "circular", "zero")
#: kernels with more taps than this use the FFT path when ``method="auto"``
FFT_THRESHOLD = 15 * 15


# --------------------------------------------------------------------------- padding


def _pad_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    i = torch.arange(-before, n + after, device=device)
    if mode == "circular":
        return torch.remainder(i, n)
    if mode == "symmetric":
        m = torch.remainder(i, 2 * n)
        return torch.where(m < n, m, 2 * n - 1 - m)
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(i)
        m = torch.remainder(i, 2 * n - 2)
        return torch.where(m < n, m, 2 * n - 2 - m)
    raise KdiffError(f"unknown boundary {mode!r} (choose from {', '.join(BOUNDARIES)})")


def kernel_pads(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding so that a valid convolution returns the input size."""
    return (h - 1) // 2, h // 2, (w - 1) // 2, w // 2


def pad(x: torch.Tensor, pads: tuple[int, int, int, int], boundary: str = "symmetric") -> torch.Tensor:
    """Pad the last two dims by ``(top, bottom, left, right)``; pads may exceed the image size."""
    top, bottom, left, right = pads
    if boundary == "zero":
        return F.pad(x, (left, right, top, bottom))
    ih = _pad_index(x.shape[-2], top, bottom, boundary, x.device)
    iw = _pad_index(x.shape[-1], left, right, boundary, x.device)
    return x.index_select(-2, ih).index_select(-1, iw)


def pad_adjoint(xp: torch.Tensor, pads: tuple[int, int, int, int], boundary: str = "symmetric") -> torch.Tensor:
    """Adjoint of :func:`pad`: folds the padded border back onto the pixels it copied."""
    top, bottom, left, right = pads
    H = xp.shape[-2] - top - bottom
    W = xp.shape[-1] - left - right
    if boundary == "zero":
        return xp[..., top : top + H, left : left + W]
    ih = _pad_index(H, top, bottom, boundary, xp.device)
    iw = _pad_index(W, left, right, boundary, xp.device)
    out = xp.new_zeros(*xp.shape[:-2], H, xp.shape[-1]).index_add(xp.dim() - 2, ih, xp)
    return out.new_zeros(*xp.shape[:-2], H, W).index_add(xp.dim() - 1, iw, out)


# --------------------------------------------------------------------------- convolution


def check_pair(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Validate images ``x`` (B, C, H, W) and kernels ``k`` (B or 1, 1, h, w) or (h, w); return ``k``
    as (B or 1, 1, h, w) in ``x``'s dtype."""
    if x.dim() != 4:
        raise KdiffError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    if k.dim() == 2:
        k = k[None, None]
    if k.dim() != 4 or k.shape[1] != 1:
        raise KdiffError(f"kernels must be (B, 1, h, w), got shape {tuple(k.shape)}")
    if k.shape[0] not in (1, x.shape[0]):
        raise KdiffError(f"kernel batch {k.shape[0]} does not match image batch {x.shape[0]}")
    return k.to(x.dtype)


def _grouped(x: torch.Tensor, k: torch.Tensor):
    """Reshape so that one grouped conv applies kernel b to every channel of image b."""
    B, C = x.shape[:2]
    if k.shape[0] == 1:
        return x, k.expand(C, 1, *k.shape[-2:]), C, (B, C)
    return x.reshape(1, B * C, *x.shape[-2:]), k.repeat_interleave(C, dim=0), B * C, (B, C)


def fast_fft_len(n: int, even: bool = False) -> int:
    """The smallest ``m >= n`` of the form 2^a 3^b 5^c (FFTs of such lengths are several times
    faster than of lengths with large prime factors, e.g. 319 = 11 x 29); ``even``: also even."""
    m = max(2, n + (n & 1)) if even else max(1, int(n))
    step = 2 if even else 1
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += step


def _fft_valid(xp: torch.Tensor, k: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Valid convolution of a padded image by FFT (exact: the circular wrap falls outside)."""
    h, w = k.shape[-2:]
    Hp, Wp = fast_fft_len(xp.shape[-2]), fast_fft_len(xp.shape[-1])
    Xf = torch.fft.rfft2(xp, s=(Hp, Wp))
    Kf = torch.fft.rfft2(k, s=(Hp, Wp))
    full = torch.fft.irfft2(Xf * Kf, s=(Hp, Wp))
    return full[..., h - 1 : h - 1 + H, w - 1 : w - 1 + W]


def conv2d(x: torch.Tensor, k: torch.Tensor, boundary: str = "symmetric", method: str = "auto") -> torch.Tensor:
    """Blur ``x`` by ``k``: ``y = k * x`` with the given boundary; output has ``x``'s size.

    ``method``: ``direct`` (grouped conv2d), ``fft`` or ``auto`` (FFT above ``FFT_THRESHOLD`` taps).
    """
    k = check_pair(x, k)
    h, w = k.shape[-2:]
    H, W = x.shape[-2:]
    xp = pad(x, kernel_pads(h, w), boundary)
    if method == "auto":
        method = "fft" if h * w > FFT_THRESHOLD else "direct"
    if method == "fft":
        return _fft_valid(xp, k, H, W)
    if method != "direct":
        raise KdiffError(f"unknown convolution method {method!r}")
    xg, kg, groups, (B, C) = _grouped(xp, k)
    y = F.conv2d(xg, kg.flip(-2, -1), groups=groups)
    return y.reshape(B, C, H, W)


def conv2d_adjoint(y: torch.Tensor, k: torch.Tensor, boundary: str = "symmetric") -> torch.Tensor:
    """The adjoint of ``x -> conv2d(x, k, boundary)``: ``<conv2d(x), y> == <x, conv2d_adjoint(y)>``."""
    k = check_pair(y, k)
    h, w = k.shape[-2:]
    H, W = y.shape[-2:]
    pads = kernel_pads(h, w)
    yg, kg, groups, (B, C) = _grouped(y, k)
    xp = F.conv_transpose2d(yg, kg.flip(-2, -1), groups=groups)
    xp = xp.reshape(B, C, H + h - 1, W + w - 1)
    return pad_adjoint(xp, pads, boundary)


def add_noise(y: torch.Tensor, sigma, generator: torch.Generator | None = None) -> torch.Tensor:
    """``y + sigma * n`` with ``n ~ N(0, I)``; ``sigma`` a float or a per-image tensor of shape (B,)."""
    n = torch.randn(y.shape, generator=generator, dtype=y.dtype, device="cpu").to(y.device)
    s = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).reshape(-1, *([1] * (y.dim() - 1)))
    return y + s * n


# --------------------------------------------------------------------------- kernel utilities


def normalize_kernel(k: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Clamp to nonnegative and scale each kernel to sum 1 (an all-zero kernel becomes a delta)."""
    k = k.clamp(min=0)
    s = k.sum(dim=(-2, -1), keepdim=True)
    delta = torch.zeros_like(k)
    delta[..., k.shape[-2] // 2, k.shape[-1] // 2] = 1
    return torch.where(s > eps, k / s.clamp(min=eps), delta)


def center_of_mass(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass (row, col) of each kernel over the last two dims (kernels assumed >= 0)."""
    h, w = k.shape[-2:]
    s = k.sum(dim=(-2, -1)).clamp(min=1e-12)
    rows = torch.arange(h, dtype=k.dtype, device=k.device)
    cols = torch.arange(w, dtype=k.dtype, device=k.device)
    r = (k.sum(-1) * rows).sum(-1) / s
    c = (k.sum(-2) * cols).sum(-1) / s
    return r, c


def shift(k: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift the last two dims by integers, filling with zeros (no wrap-around)."""
    h, w = k.shape[-2:]
    out = torch.zeros_like(k)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = k[..., ys, xs]
    return out


def center_kernel(k: torch.Tensor) -> torch.Tensor:
    """Move each kernel's centre of mass to the nearest pixel of the convolution centre."""
    h, w = k.shape[-2:]
    flat = k.reshape(-1, h, w)
    r, c = center_of_mass(flat.clamp(min=0))
    out = [
        shift(flat[i], int(round(h // 2 - float(r[i]))), int(round(w // 2 - float(c[i]))))
        for i in range(flat.shape[0])
    ]
    return torch.stack(out).reshape(k.shape) if out else k


#: where a kernel file puts its centre: ``ndimage`` (kdiff's: index ``size // 2``, as MATLAB's
#: ``conv2(..., 'same')`` and ``scipy.ndimage``) or ``signal`` (``scipy.signal``'s ``'same'``:
#: index ``(size - 1) // 2``, one pixel earlier for an even side)
KERNEL_CENTERS = ("ndimage", "signal")


def from_center_convention(k: torch.Tensor, center: str = "ndimage") -> torch.Tensor:
    """``k`` (..., h, w) with its centre at index ``size // 2`` (kdiff's convention), given the
    convention ``center`` it was written in. ``signal``: an even side gets one zero row (column)
    in front, so the pixel scipy.signal treats as the centre lands at ``size // 2`` (the side
    becomes odd; nothing is cut or wrapped). Odd sides are the same in both conventions."""
    if center not in KERNEL_CENTERS:
        raise KdiffError(f"unknown kernel centre convention {center!r} (choose from {', '.join(KERNEL_CENTERS)})")
    h, w = k.shape[-2:]
    if center == "ndimage" or (h % 2 and w % 2):
        return k
    return F.pad(k, (1 - w % 2, 0, 1 - h % 2, 0))


def resize_kernel_canvas(k: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad or crop the last two dims to ``size x size`` keeping the centre pixel aligned."""
    h, w = k.shape[-2:]
    out = k.new_zeros(*k.shape[:-2], size, size)
    c = size // 2
    # source and destination windows, aligned on the centre pixels (h//2, w//2) -> (c, c)
    r0, r1 = max(0, h // 2 - c), min(h, h // 2 + size - c)
    c0, c1 = max(0, w // 2 - c), min(w, w // 2 + size - c)
    out[..., r0 - h // 2 + c : r1 - h // 2 + c, c0 - w // 2 + c : c1 - w // 2 + c] = k[..., r0:r1, c0:c1]
    return out


def mnc(k_est: torch.Tensor, k_true: torch.Tensor) -> torch.Tensor:
    """Maximum of normalised cross-correlation over all shifts (Hu & Yang; the paper's Table 2).

    Accepts ``(h, w)`` or ``(B, 1, h, w)`` tensors (sizes may differ); returns a scalar or ``(B,)``.
    Equal to 1 exactly when one kernel is a shifted, scaled copy of the other.
    """
    squeeze = k_est.dim() == 2
    a = k_est.reshape(-1, 1, *k_est.shape[-2:]).double()
    b = k_true.reshape(-1, 1, *k_true.shape[-2:]).double()
    if a.shape[0] != b.shape[0]:
        n = max(a.shape[0], b.shape[0])
        a, b = a.expand(n, *a.shape[1:]), b.expand(n, *b.shape[1:])
    # the full cross-correlation by FFT on a canvas holding every shift without wrap-around
    # (a direct conv2d of two 64 x 64 kernels took 0.3 s on one CPU core, this about 5 ms)
    size = (a.shape[-2] + b.shape[-2] - 1, a.shape[-1] + b.shape[-1] - 1)
    corr = torch.fft.irfft2(torch.fft.rfft2(a, s=size) * torch.fft.rfft2(b, s=size).conj(), s=size)
    norm = a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1)
    out = (corr.flatten(1).amax(1) / norm.clamp(min=1e-30)).to(k_est.dtype if k_est.is_floating_point() else torch.float64)
    return out[0] if squeeze else out
