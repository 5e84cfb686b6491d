"""Blur at photo scale: the kernel size and the scale the kernel prior runs at (``--kernel-size auto``).

The kernel prior and its guidance work on a fixed canvas (64 x 64 for the shipped weights). A
photograph's camera shake spans from a few pixels to a few hundred, so the estimate is made at the
scale where the blur fits that canvas, and the kernel is brought back to full resolution:

* **crop scale** -- images whose short side is under ``CROP_SIDE`` = 300 px (the 256 x 256 benchmark
  crops): the prior runs at full resolution; when the estimate's mass
  reaches its canvas border, once more on the image downscaled 2x (the first release's behaviour,
  kept so that the 256 x 256 benchmarks stay comparable; only the MAP_k choice rule changed there).
* **photo scale** -- larger images: a coarse pass, the classical alternating estimator on the image
  downscaled so that its short side is about ``COARSE_SIDE`` px, with a ``COARSE_CANVAS`` kernel
  (so it covers blur up to ~12% of the short side: 90 px on a 1 MP photo, 360 px on a 12 MP one;
  an image that needs no downscaling gets the prior's canvas, 64 px). With ``coarse_scales`` = 2
  (the default) the pass also runs at twice that factor, where a long blur is half as long and its
  edges twice as contrasted: the estimate whose deconvolution of the coarse window is sparsest
  (:func:`kdiff_cli.maths.choice.sparsity_scores`, the MAP_k score) is kept. Measured on 16 val
  photos with generated 31-75 px kernels (tuning set) and on lai-uniform (docs/deblur.md).
  The extent ``E`` of that kernel (full-resolution px, the side of the box holding the pixels above
  ``EXTENT_FRACTION`` of the peak) sets the estimation scale ``f = ceil(E / FIT)`` (capped at the
  coarse factor) where the blur fills at most ``FIT`` px of the canvas; the coarse kernel, brought
  to that scale, is the classical candidate of the MAP_k choice there. The estimate is upsampled
  ``f``x and returned on a canvas of ``kernel_size`` = the odd side ``>= 1.25 E + 8``.
  Measured on lai-uniform (docs/deblur.md): refining the kernel once more at full resolution
  (alternating from the upsampled estimate) lowered PSNR on 8 of 12 photos, so it is not done.
  Night photos: when several isolated light streaks agree on one shape
  (:mod:`kdiff_cli.maths.streaks`), that shape is the coarse kernel instead of the alternating
  estimate (which returns a dot on dark, noisy, clipped photos); it is still only a candidate of
  the MAP_k choice (trusted outright, the clipped, thickened streak of real-blur's street2 rang
  over the whole photo).
  When the coarse passes ran at two or more scales and the kernel of every one spreads over its
  whole canvas (extent within ``SPREAD_MARGIN`` px of the side), the alternating pass found no
  blur, only noise (a true blur is half as large at the coarser scale): the plan says so
  (``spread``) and the estimator keeps the input (the fallback) instead of deblurring with a blob.
  One filled canvas alone is not enough: lai-uniform's natural_03 (one coarse scale) with its
  65 px kernel 4 fills 42 of 45 px and its estimate still gains 3.4 dB. Measured in docs/deblur.md.
* **given** -- ``--kernel-size N``: estimated at ``f = ceil(N / canvas)`` (the classical candidate
  too) and returned on an N x N canvas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kdiff_cli import threads
from kdiff_cli.blind import window
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops, streaks

#: short side (px) of the image at the coarse pass
COARSE_SIDE = 384
#: images whose short side is below this are estimated at crop scale (the 256 x 256 benchmark crops)
CROP_SIDE = 300
#: kernel side of the coarse pass (at the coarse scale)
COARSE_CANVAS = 45
#: the coarse pass's window side (at the coarse scale)
COARSE_WINDOW = 384
#: extent (px at the estimation scale) that a 64 px canvas holds with a margin for Stage II
FIT = 48
#: kernel pixels above this fraction of the peak count towards the extent
EXTENT_FRACTION = 0.05
#: a coarser pass runs only while the image's short side stays at least this (px at that scale)
MIN_COARSE_SIDE = 160
#: a coarse kernel whose extent is within this many px of its canvas side has spread over it (no blur found)
SPREAD_MARGIN = 4


@dataclass
class ScalePlan:
    """Where and how large: the outcome of :func:`plan` (recorded in report.json)."""

    factor: int  # downscale factor at which the prior runs (1: full resolution)
    kernel_size: int | None  # side of the returned full-resolution kernel (None: canvas x factor)
    how: str  # "crop" (small image), "coarse" (photo: from the coarse pass) or "given" (--kernel-size)
    coarse_factor: int | None = None  # downscale factor of the coarse pass
    extent: int | None = None  # full-resolution extent of the coarse kernel (px)
    coarse_k: torch.Tensor | None = None  # (1, 1, s, s) the coarse kernel at the coarse scale
    streaks: int | None = None  # light streaks that agreed on the coarse kernel (None: it came from the alternating pass)
    coarse_scores: dict[int, float] | None = None  # coarse factor -> sparsity score of its estimate (several scales)
    spread: bool = False  # every coarse pass's kernel spread over its whole canvas: no blur was found
    passes: dict[int, torch.Tensor] | None = None  # coarse factor -> that pass's kernel at its scale (None: from streaks)

    def report(self) -> dict:
        return {"factor": self.factor, "kernel_size": self.kernel_size, "how": self.how,
                "coarse_factor": self.coarse_factor, "extent": self.extent, "streaks": self.streaks,
                "coarse_scores": self.coarse_scores, "spread": self.spread,
                "coarse_extents": None if self.passes is None else {f: kernel_extent(k) * f for f, k in self.passes.items()}}


def coarse_factor(H: int, W: int) -> int:
    """Downscale factor that brings the short side to about :data:`COARSE_SIDE`."""
    short = min(H, W)
    return max(1, round(short / COARSE_SIDE))


def kernel_extent(k: torch.Tensor, fraction: float = EXTENT_FRACTION) -> int:
    """Side (px) of the smallest box holding every pixel of ``k`` (.., h, w) above ``fraction`` x its peak."""
    k2 = k.reshape(k.shape[-2:])
    mask = k2 > fraction * k2.max()
    if not bool(mask.any()):
        return 1
    rows = torch.nonzero(mask.any(1)).flatten()
    cols = torch.nonzero(mask.any(0)).flatten()
    return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def spread(k: torch.Tensor, margin: int = SPREAD_MARGIN) -> bool:
    """Whether the kernel ``k`` (.., s, s) fills its canvas: extent >= s - ``margin`` (a blob of noise, not a blur path)."""
    return kernel_extent(k) >= k.shape[-1] - margin


def odd_side(extent: int) -> int:
    """The returned canvas for a blur ``extent`` px wide: the odd side >= 1.25 extent + 8."""
    s = math.ceil(1.25 * extent) + 8
    return s + 1 - s % 2


def to_scale(k: torch.Tensor, from_factor: int, to_factor: int, canvas: int) -> torch.Tensor:
    """A kernel estimated at downscale ``from_factor`` resampled to ``to_factor`` on a ``canvas`` side."""
    from kdiff_cli.maths.alternating import resample_kernel

    side = max(1, round(k.shape[-1] * from_factor / to_factor))
    k = resample_kernel(k.double(), side) if side != k.shape[-1] else k.double()
    return ops.center_kernel(ops.normalize_kernel(ops.resize_kernel_canvas(k, canvas))).to(torch.float32)


def coarse_pass(ys: torch.Tensor, side: int, callback=None, roi=None, stage: str = "coarse pass") -> torch.Tensor:
    """The classical alternating estimate with a ``side`` px kernel on the downscaled image ``ys``:
    on its strongest-edge window, or on ``roi`` (x, y, w, h in ``ys``'s pixels: ``--roi``)."""
    from kdiff_cli.maths import alternating

    x0, y0, w, h = roi if roi is not None else window.select_window(ys, COARSE_WINDOW)
    win = ys[..., y0 : y0 + h, x0 : x0 + w]
    settings = alternating.AlternatingSettings(kernel_size=min(side, h, w))

    def on_round(i, info):
        if callback:
            callback(stage, i, info["total"], {"residual": info["residual"]})

    return alternating.estimate_kernel(win, settings, on_round).k.to(torch.float32)


def coarse_factors(H: int, W: int, scales: int) -> list[int]:
    """The coarse passes' downscale factors: :func:`coarse_factor`, then doubled ``scales - 1`` times
    while the short side stays at least :data:`MIN_COARSE_SIDE` px."""
    f0 = coarse_factor(H, W)
    out = [f0]
    while len(out) < scales and min(H, W) // (2 * out[-1]) >= MIN_COARSE_SIDE:
        out.append(2 * out[-1])
    return out


def choose_coarse(ys: torch.Tensor, found: dict[int, torch.Tensor], solver, sigma, roi=None) -> tuple[int, dict[int, float]]:
    """The factor whose coarse kernel deconvolves the finest coarse window most sparsely, and every score.

    ``found``: coarse factor -> kernel at that scale; ``ys``: the image downscaled by the finest
    factor ``min(found)``. All are scored at that factor (the coarser ones upsampled to it, as the
    estimate will be) on its strongest-edge window (``roi``: x, y, w, h in ``ys``'s pixels), with
    one noise level. (Scoring at the coarsest factor instead, with the finer kernels
    area-downsampled, chose wrongly on synthetic block images.)
    """
    from kdiff_cli.maths import choice
    from kdiff_cli.maths.noise import noise_level

    f0 = min(found)
    x0, y0, w, h = roi if roi is not None else window.select_window(ys, COARSE_WINDOW)
    win = ys[..., y0 : y0 + h, x0 : x0 + w]
    side = odd_side(max(kernel_extent(k) * f // f0 for f, k in found.items()))
    factors = sorted(found)
    kernels = [to_scale(found[f], f, f0, side).to(win.dtype) for f in factors]
    with torch.no_grad():
        scores = choice.sparsity_scores(solver, win, kernels, noise_level(sigma, win)).tolist()
    best = factors[min(range(len(factors)), key=scores.__getitem__)]
    return best, {f: round(float(v), 4) for f, v in zip(factors, scores)}


def plan(y: torch.Tensor, canvas: int, kernel_size: int | None, downscale: str, callback=None, roi=None,
         scales: int = 1, solver=None, sigma=None) -> ScalePlan:
    """Decide the estimation scale and the kernel size for ``y`` (1, C, H, W) and a ``canvas`` prior
    (``roi``: the coarse pass's window, full-resolution x, y, w, h). ``scales`` > 1: the coarse pass
    at that many factors (:func:`coarse_factors`), the sparsest by ``solver`` kept (noise ``sigma``,
    None: estimated)."""
    H, W = y.shape[-2:]
    if kernel_size is not None:
        if kernel_size < 3:
            raise KdiffError(f"--kernel-size must be >= 3, got {kernel_size}")
        factor = int(downscale) if downscale != "auto" else max(1, math.ceil(kernel_size / canvas))
        return ScalePlan(factor, kernel_size, "given")
    if downscale != "auto":
        return ScalePlan(int(downscale), None, "given")
    if min(H, W) < CROP_SIDE:
        return ScalePlan(1, None, "crop")
    if scales < 1:
        raise KdiffError(f"--coarse-scales must be >= 1, got {scales}")
    factors = coarse_factors(H, W, scales)
    f0 = factors[0]
    full_roi = window.check_roi(roi, H, W) if roi is not None else None  # checked at full resolution
    scaled = {f: window.downscale(y, f) for f in factors}

    def side(f: int) -> int:  # 64 px when no downscaling is needed
        return canvas if f == 1 else COARSE_CANVAS

    def at(f: int):  # the roi at a coarse scale
        return tuple(v // f for v in full_roi) if full_roi is not None else None

    found = streaks.streak_kernel(scaled[f0], side(f0))
    scores, filled, passes = None, False, None
    if found is not None:  # several isolated lights drew the same shape: that is the kernel
        k0, count = found.k, found.count
    else:
        count = None

        def one_pass(f: int):  # the passes are independent: they run at once (kdiff_cli.threads)
            def task(check):
                stage = "coarse pass" if f == f0 else f"coarse pass x{f}"
                return coarse_pass(scaled[f], side(f), threads.checked(callback, check), at(f), stage)

            return task

        passes = dict(zip(factors, threads.concurrently(y.device, *[one_pass(f) for f in factors])))
        # at the coarser scale a true blur is half as large: filling the canvas at every scale is noise
        filled = len(passes) > 1 and all(spread(k) for k in passes.values())
        if len(passes) > 1:
            if solver is None:
                from kdiff_cli.solvers import cached_solver

                solver = cached_solver("wiener", None, str(y.device))
            f0, scores = choose_coarse(scaled[f0], passes, solver, sigma, at(f0))
        k0 = passes[f0]
    extent = kernel_extent(k0) * f0
    factor = min(f0, max(1, math.ceil(extent / FIT)))
    return ScalePlan(factor, odd_side(extent), "coarse", f0, extent, k0, count, scores, filled, passes)


__all__ = ["ScalePlan", "plan", "coarse_factor", "coarse_factors", "choose_coarse", "coarse_pass", "kernel_extent", "odd_side", "spread", "to_scale",
           "COARSE_SIDE", "COARSE_CANVAS", "FIT", "SPREAD_MARGIN"]
