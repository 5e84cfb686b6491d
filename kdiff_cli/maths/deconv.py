"""Shared FFT deconvolution pieces used by every non-blind solver.

The forward model is ``y = ops.conv2d(x, k, "symmetric") + n``. FFT deconvolution assumes a
periodic image, so each solver works on a *canvas*: ``y`` is mirrored (symmetric reflection, the
model's own boundary) by at least the kernel size on every side up to an FFT-friendly size, and
the mirrored margin is tapered to a smooth periodic fill so that the wrap-around seam of the
canvas carries no edge for the deconvolution to ring on. The closed form on that canvas is then
refined by conjugate gradients on a model whose pixels beyond the image edges are unknowns (only
the observed window is fitted), which removes what is left of the boundary ringing; the result is
cropped back.

Pieces (all batched, differentiable in ``y`` and ``k``, any device, float32 or float64):

* :func:`noise_level` / :func:`estimate_noise` -- ``sigma`` as a (B,) tensor, estimated when absent
  by the MAD of the finest diagonal Haar sub-band (defined in :mod:`kdiff_cli.maths.noise`);
* :func:`canvas_pads`, :func:`pad_taper`, :func:`crop` -- the canvas;
* :func:`psf2otf` -- the transfer function of a ``(B, 1, h, w)`` kernel (centre pixel
  ``(h // 2, w // 2)``) on an ``(Hp, Wp)`` canvas, as an ``rfft2`` half spectrum;
* :func:`gradient_spectrum` -- ``|Dx|^2 + |Dy|^2`` of the finite-difference gradient;
* :func:`wiener` -- the closed form ``X = conj(K) Y / (|K|^2 + lambda P)`` (Tikhonov / Wiener);
* :func:`prox_canvas` -- the HQS data step ``argmin_x ||M (k * x) - y||^2 + lam ||D x||^2 + mu ||x - z||^2``
  with unknown boundaries (CG);
* :func:`deconvolve` / :func:`deconvolve_canvas` -- the complete solve with unknown boundaries:
  the closed form on the tapered canvas refined by preconditioned conjugate gradients;
* :func:`solve_tiled` -- run any solver over a large photo in overlapping, blended tiles;
* :func:`as_rgb` / :func:`from_rgb` -- gray images through RGB networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops
from kdiff_cli.maths.noise import MAD_TO_STD, estimate_noise, noise_level, working_dtype  # noqa: F401 (this module's API too)


# --------------------------------------------------------------------------- checks


def check_inputs(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Validate ``y`` (B, C, H, W) and ``k`` (B or 1, 1, h, w); return ``k`` in ``y``'s dtype.

    :func:`kdiff_cli.maths.ops.check_pair`, and the image must be at least as large as the kernel
    in both dimensions.
    """
    k = ops.check_pair(y, k)
    if y.shape[-2] < k.shape[-2] or y.shape[-1] < k.shape[-1]:
        raise KdiffError(
            f"image {y.shape[-2]}x{y.shape[-1]} is smaller than the kernel {k.shape[-2]}x{k.shape[-1]}"
        )
    return k


# --------------------------------------------------------------------------- channels


def as_rgb(y: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, H, W) -> (B, 3, H, W) for the RGB networks; other channel counts are an error."""
    if y.shape[1] == 3:
        return y
    if y.shape[1] == 1:
        return y.expand(-1, 3, -1, -1)
    raise KdiffError(f"images must have 1 (gray) or 3 (RGB) channels, got {y.shape[1]}")


def from_rgb(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Undo :func:`as_rgb`: a gray result is the mean of the three channels."""
    return x if channels == 3 else x.mean(dim=1, keepdim=True)


# --------------------------------------------------------------------------- the canvas


def fft_size(n: int) -> int:
    """The smallest even 5-smooth integer (factors 2, 3, 5 only) that is >= ``n``."""
    return ops.fast_fft_len(n, even=True)


def canvas_pads(H: int, W: int, h: int, w: int, margin: float = 1.0) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pads putting an ``H x W`` image on an FFT-friendly canvas.

    Every side gets at least ``ceil(margin * kernel size)`` pixels; the extra needed to reach
    :func:`fft_size` goes to the bottom / right.
    """
    ph, pw = math.ceil(margin * h), math.ceil(margin * w)
    Hp, Wp = fft_size(H + 2 * ph), fft_size(W + 2 * pw)
    return ph, Hp - H - ph, pw, Wp - W - pw


def _taper_weights(n: int, before: int, after: int, dtype, device) -> torch.Tensor:
    """Length ``before + n + after``: 1 on the image, a raised cosine down to 0 at each canvas edge."""
    i = torch.arange(-before, n + after, dtype=dtype, device=device)
    t_before = (i + before) / max(before, 1)  # 0 at the first canvas pixel, 1 at the image
    t_after = ((n + after - 1) - i) / max(after, 1)  # 0 at the last canvas pixel
    t = torch.where(i < 0, t_before, torch.where(i >= n, t_after, torch.ones_like(i)))
    return 0.5 - 0.5 * torch.cos(math.pi * t.clamp(0, 1))


def pad_taper(y: torch.Tensor, pads: tuple[int, int, int, int], fill: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror ``y`` onto the canvas and taper the margin to a smooth periodic fill.

    The margin is a blend ``w * mirror(y) + (1 - w) * fill`` with ``w`` a raised-cosine ramp that
    is 1 on the image and 0 at the canvas edges; ``fill`` (default: each channel's mean of ``y``,
    broadcastable to the canvas) is what the wrap-around seam sees on both sides.
    """
    top, bottom, left, right = pads
    yp = ops.pad(y, pads, "symmetric")
    H, W = y.shape[-2:]
    wr = _taper_weights(H, top, bottom, y.dtype, y.device)
    wc = _taper_weights(W, left, right, y.dtype, y.device)
    wgt = wr[:, None] * wc[None, :]
    if fill is None:
        fill = y.mean(dim=(-2, -1), keepdim=True)
    return wgt * yp + (1 - wgt) * fill


def crop(xp: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo the canvas: the ``H x W`` window at offset (top, left)."""
    top, bottom, left, right = pads
    return xp[..., top : xp.shape[-2] - bottom, left : xp.shape[-1] - right]


# --------------------------------------------------------------------------- spectra


def psf2otf(k: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``rfft2`` transfer function of ``k`` (B, 1, h, w) on an ``(Hp, Wp)`` periodic canvas.

    The kernel's centre pixel ``(h // 2, w // 2)`` goes to the origin, so multiplying spectra is
    the same convolution as :func:`kdiff_cli.maths.ops.conv2d` away from the canvas edges.
    Returns a complex tensor (B, 1, Hp, Wp // 2 + 1); differentiable in ``k``.
    """
    h, w = k.shape[-2:]
    Hp, Wp = size
    if h > Hp or w > Wp:
        raise KdiffError(f"kernel {h}x{w} does not fit the {Hp}x{Wp} canvas")
    kp = F.pad(k, (0, Wp - w, 0, Hp - h))
    kp = torch.roll(kp, shifts=(-(h // 2), -(w // 2)), dims=(-2, -1))
    return torch.fft.rfft2(kp)


def gradient_spectrum(size: tuple[int, int], dtype=torch.float32, device=None) -> torch.Tensor:
    """``|Dx|^2 + |Dy|^2`` of the forward differences on an ``(Hp, Wp)`` canvas, shape (Hp, Wp//2+1)."""
    Hp, Wp = size
    u = torch.arange(Hp, dtype=dtype, device=device)
    v = torch.arange(Wp // 2 + 1, dtype=dtype, device=device)
    dy = 2 - 2 * torch.cos(2 * math.pi * u / Hp)
    dx = 2 - 2 * torch.cos(2 * math.pi * v / Wp)
    return dy[:, None] + dx[None, :]


def _per_image(v: torch.Tensor, ndim: int = 4) -> torch.Tensor:
    """Reshape a (B,) / (B, C) tensor to broadcast over (B, C, Hp, Wf) spectra."""
    v = torch.as_tensor(v)
    return v.reshape(*v.shape, *([1] * (ndim - v.dim())))


def wiener(Yf: torch.Tensor, Kf: torch.Tensor, lam: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Closed-form Tikhonov/Wiener deconvolution, in the Fourier domain.

    ``X = conj(K) Y / (|K|^2 + lam * P)`` with ``Y = rfft2(y_canvas)``, ``K`` from :func:`psf2otf`,
    ``P`` a nonnegative prior spectrum (e.g. :func:`gradient_spectrum`) and ``lam`` a (B,) or
    (B, C) tensor. ``P``'s zero at DC is harmless because ``K(0) = 1``. Returns the spectrum ``X``.
    """
    den = Kf.real.square() + Kf.imag.square() + _per_image(lam, Yf.dim()) * prior
    return Kf.conj() * Yf / den


def _rdot(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Real inner product of two real canvases from their ``rfft2`` half spectra, per (B, C).

    Parseval up to the constant ``1 / (Hp Wp)`` (CG only uses ratios): columns other than 0 and
    the Nyquist column stand for two conjugate columns of the full spectrum.
    """
    Wf = A.shape[-1]
    wcol = torch.full((Wf,), 2.0, dtype=A.real.dtype, device=A.device)
    wcol[0] = 1.0
    wcol[-1] = 1.0  # canvases have an even width, so the last column is the Nyquist column
    return (wcol * (A.conj() * B).real).sum(dim=(-2, -1), keepdim=True)


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a / b`` with 0 where ``b`` is 0 (a converged CG stays put instead of producing NaN)."""
    ok = b.abs() > torch.finfo(b.dtype).tiny
    return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.zeros_like(a))


@dataclass
class Canvas:
    """A deconvolution in progress on the periodic canvas (see :func:`deconvolve_canvas`)."""

    X: torch.Tensor  # rfft2 spectrum of the estimate on the canvas, (B, C, Hp, Wp // 2 + 1)
    Kf: torch.Tensor  # transfer function of k on the canvas, (B or 1, 1, Hp, Wp // 2 + 1)
    pads: tuple[int, int, int, int]  # (top, bottom, left, right) around the observed window
    size: tuple[int, int]  # (Hp, Wp)

    @property
    def mask(self) -> torch.Tensor:
        """1 on the observed window, 0 on the margin, shape (1, 1, Hp, Wp)."""
        top, bottom, left, right = self.pads
        H, W = self.size[0] - top - bottom, self.size[1] - left - right
        ones = torch.ones(1, 1, H, W, dtype=self.X.real.dtype, device=self.X.device)
        return F.pad(ones, (left, right, top, bottom))

    def spatial(self) -> torch.Tensor:
        """The estimate on the whole canvas, (B, C, Hp, Wp)."""
        return torch.fft.irfft2(self.X, s=self.size)

    def image(self) -> torch.Tensor:
        """The estimate cropped to the observed window, (B, C, H, W)."""
        return crop(self.spatial(), self.pads)


def embed(x: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """The canvas image with ``x`` (B, C, H, W) in the observed window and the canvas's current
    estimate in the margin, (B, C, Hp, Wp)."""
    top, bottom, left, right = canvas.pads
    mask = canvas.mask
    return mask * F.pad(x, (left, right, top, bottom)) + (1 - mask) * canvas.spatial()


def deconvolve_canvas(
    y: torch.Tensor,
    k: torch.Tensor,
    lam: torch.Tensor,
    margin: float = 1.0,
    iters: int = 12,
) -> Canvas:
    """Wiener/Tikhonov deconvolution with a gradient prior and boundary handling, on the canvas.

    Minimises ``||M (k * x) - y||^2 + lam ||D x||^2`` over an ``x`` on the canvas, where ``M``
    keeps the observed window only: the pixels beyond the image edges are unknowns, so the image
    edges do not ring. Starts from the closed form on the mirrored, tapered canvas
    (:func:`pad_taper`, :func:`wiener`) and takes ``iters`` preconditioned conjugate-gradient steps
    (preconditioner: that closed form's denominator), all in the Fourier domain at two FFTs per
    step. ``iters=0`` is the plain closed form. ``lam``: (B,) or (B, C). Differentiable in y, k, lam.
    Half-precision inputs (e.g. features under autocast) are solved in float32.
    """
    y = y.to(working_dtype(y.dtype))
    k = check_inputs(y, k)
    H, W = y.shape[-2:]
    pads = canvas_pads(H, W, k.shape[-2], k.shape[-1], margin)
    top, bottom, left, right = pads
    size = (H + top + bottom, W + left + right)
    Kf = psf2otf(k, size)
    prior = gradient_spectrum(size, y.dtype, y.device)
    X = wiener(torch.fft.rfft2(pad_taper(y, pads)), Kf, lam, prior)  # closed form, tapered canvas
    out = Canvas(X, Kf, pads, size)
    if iters <= 0:
        return out
    mask = out.mask
    lamP = _per_image(lam, 4) * prior
    den = Kf.real.square() + Kf.imag.square() + lamP

    def normal_op(V: torch.Tensor) -> torch.Tensor:  # (K^T M K + lam D^T D) in Fourier
        return Kf.conj() * torch.fft.rfft2(mask * torch.fft.irfft2(Kf * V, s=size)) + lamP * V

    R = Kf.conj() * torch.fft.rfft2(F.pad(y, (left, right, top, bottom))) - normal_op(X)
    out.X = _pcg(normal_op, X, R, den, iters)
    return out


def _pcg(normal_op: Callable[[torch.Tensor], torch.Tensor], X: torch.Tensor, R: torch.Tensor,
         den: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` preconditioned conjugate-gradient steps on spectra from ``X`` with residual ``R``
    (= right-hand side - ``normal_op(X)``) and the diagonal preconditioner ``den``."""
    Z = R / den
    Pd = Z
    rz = _rdot(R, Z)
    for i in range(iters):
        AP = normal_op(Pd)
        alpha = _safe_div(rz, _rdot(Pd, AP))
        X = X + alpha * Pd
        if i == iters - 1:
            break
        R = R - alpha * AP
        Z = R / den
        rz_next = _rdot(R, Z)
        Pd = Z + _safe_div(rz_next, rz) * Pd
        rz = rz_next
    return X


def prox_canvas(canvas: Canvas, y: torch.Tensor, lam: torch.Tensor, mu: torch.Tensor, Z: torch.Tensor,
                iters: int = 4) -> torch.Tensor:
    """Data step with a prior pull: ``argmin_x ||M (k * x) - y||^2 + lam ||D x||^2 + mu ||x - z||^2``.

    The unknown-boundary model of :func:`deconvolve_canvas` plus a quadratic pull towards ``z``
    (spectrum ``Z`` on the same canvas), solved by ``iters`` preconditioned CG steps warm-started
    from ``canvas.X``. With ``z`` equal to the Tikhonov solution that solution is a fixed point, so
    an unrolled network whose prior steps are still the identity returns it unchanged. ``lam``,
    ``mu``: (B,) or (B, C). Returns the new spectrum.
    """
    top, bottom, left, right = canvas.pads
    Kf, size, mask = canvas.Kf, canvas.size, canvas.mask
    prior = gradient_spectrum(size, canvas.X.real.dtype, canvas.X.device)
    penalty = _per_image(lam, 4) * prior + _per_image(mu, 4)
    den = Kf.real.square() + Kf.imag.square() + penalty

    def normal_op(V: torch.Tensor) -> torch.Tensor:  # (K^T M K + lam D^T D + mu) in Fourier
        return Kf.conj() * torch.fft.rfft2(mask * torch.fft.irfft2(Kf * V, s=size)) + penalty * V

    rhs = Kf.conj() * torch.fft.rfft2(F.pad(y, (left, right, top, bottom))) + _per_image(mu, 4) * Z
    return _pcg(normal_op, canvas.X, rhs - normal_op(canvas.X), den, iters)


def deconvolve(y: torch.Tensor, k: torch.Tensor, lam: torch.Tensor, margin: float = 1.0, iters: int = 12) -> torch.Tensor:
    """:func:`deconvolve_canvas` cropped back to ``y``'s size: the Wiener solver's closed form."""
    return deconvolve_canvas(y, k, lam, margin, iters).image()


# --------------------------------------------------------------------------- large images


#: a tile is solved together with this many kernel sizes of image around it (its halo), then cropped
HALO_KERNELS = 2
#: the default blend overlap of neighbouring tiles (px)
BLEND_OVERLAP = 32


def solve_tiled(
    solver: Callable[..., torch.Tensor],
    y: torch.Tensor,
    k: torch.Tensor,
    sigma=None,
    tile: int = 512,
    overlap: int | None = None,
    callback: Callable[[int, int], None] | None = None,
    halo: int | None = None,
) -> torch.Tensor:
    """Deconvolve a large ``y`` (1, C, H, W) tile by tile so that memory stays bounded.

    Each solve covers at most ``tile x tile`` pixels (so memory is bounded by the tile): a kept
    part plus a ``halo`` of the image around it (default :data:`HALO_KERNELS` x the kernel size,
    shrunk to fit the tile, clipped at the image's own border), which is then cropped. The kept
    parts, as few as that allows and all of one size, overlap by at least ``overlap`` pixels
    (default :data:`BLEND_OVERLAP`) and are blended with raised-cosine weights. The halo exists because
    the solver does not know what lies beyond a tile's edge, and its result is wrong
    within a few kernel sizes of it (measured on lai-uniform, a 75 px kernel, tiles of 512 blended
    over the kernel size without a halo: 2.3-6 dB under the whole-image solve; docs/deblur.md).
    Each tile is solved with the same kernel. The noise level is estimated once on the whole image
    when ``sigma`` is None. ``callback(i, n)`` is called after each tile. An image no larger than
    one tile is solved directly.
    """
    k = check_inputs(y, k)
    if y.shape[0] != 1:
        raise KdiffError("solve_tiled takes one image at a time (batch size 1)")
    H, W = y.shape[-2:]
    h, w = k.shape[-2:]
    sigma = noise_level(sigma, y)
    if H <= tile and W <= tile:
        out = solver(y, k, sigma)
        if callback:
            callback(1, 1)
        return out
    overlap = BLEND_OVERLAP if overlap is None else overlap
    tile = max(tile, 2 * overlap + 1)
    halo = HALO_KERNELS * max(h, w) if halo is None else halo
    halo = max(0, min(halo, (tile - 2 * overlap - 1) // 2))  # a solve, halo included, is at most tile x tile
    tile -= 2 * halo  # the side of the part of a tile that is kept
    step = tile - overlap

    def layout(n: int) -> tuple[list[int], int]:
        """Tile starts and side along one axis: as few tiles as ``tile`` allows, all of one side, evenly
        spread (so no tile is mostly overlap), neighbours overlapping by at least ``overlap``."""
        if n <= tile:
            return [0], n
        count = math.ceil((n - overlap) / step)
        side = math.ceil((n + (count - 1) * overlap) / count)
        return [round(i * (n - side) / (count - 1)) for i in range(count)], side

    (rows, th), (cols, tw) = layout(H), layout(W)
    ramp_r = _blend_ramp(th, overlap if len(rows) > 1 else 0, y.dtype, y.device)
    ramp_c = _blend_ramp(tw, overlap if len(cols) > 1 else 0, y.dtype, y.device)
    wgt = ramp_r[:, None] * ramp_c[None, :]
    out = torch.zeros_like(y)
    norm = y.new_zeros(H, W)
    n, i = len(rows) * len(cols), 0
    for r in rows:
        r0, r1 = max(0, r - halo), min(H, r + th + halo)
        for c in cols:
            c0, c1 = max(0, c - halo), min(W, c + tw + halo)
            x = solver(y[..., r0:r1, c0:c1], k, sigma)[..., r - r0 : r - r0 + th, c - c0 : c - c0 + tw]
            out[..., r : r + th, c : c + tw] += wgt * x
            norm[r : r + th, c : c + tw] += wgt
            i += 1
            if callback:
                callback(i, n)
    return out / norm


def _blend_ramp(n: int, overlap: int, dtype, device) -> torch.Tensor:
    """Weights for one tile axis: raised cosine over ``overlap`` pixels at each end, never zero."""
    wgt = torch.ones(n, dtype=dtype, device=device)
    if overlap <= 0:
        return wgt
    t = (torch.arange(overlap, dtype=dtype, device=device) + 0.5) / overlap
    ramp = 0.5 - 0.5 * torch.cos(math.pi * t)
    wgt[:overlap] = ramp
    wgt[n - overlap :] = torch.minimum(wgt[n - overlap :], ramp.flip(0))
    return wgt


def deconvolve_numpy(y, k, sigma: float | None, solver: str = "wiener", device: str = "cpu"):
    """``F(y, k)`` with a registered solver, NumPy (H, W, C) in [0, 1] and out (for scoring)."""
    from kdiff_cli import files
    from kdiff_cli.maths.metrics import as_kernel
    from kdiff_cli.solvers import cached_solver

    F = cached_solver(solver, None, device)
    yt = files.to_tensor(y).to(device)
    kt = torch.from_numpy(as_kernel(k)).to(device=device, dtype=yt.dtype)[None, None]
    with torch.no_grad():
        x = F(yt, kt, sigma=sigma)
    return files.to_numpy(x.clamp(0, 1))
