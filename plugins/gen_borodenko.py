"""Kernel generator ``borodenko``: the random-trajectory model of L. Borodenko's ``motionblur``.

The paper's (and Blind-DPS's) kernel database is drawn from this model. Per kernel k, on a 2x
oversampled canvas of diagonal D (canvas pixels):

* path length: steps are drawn until their sum reaches L = 0.75 D (U(0, 1) + U(0, intensity^2));
  each step is Beta(1, 30) (1 - intensity + 0.1) D (steps >= L are redrawn);
* directions: max angle A ~ U(0, intensity pi), jitter J ~ Beta(2, 20); the first step's angle is
  U(-A, A), every later one Triangular(0, intensity A, A + 0.1) with the sign of the previous
  angle, flipped with probability J;
* the cumulative path (the step ends) is centred on its mean and rotated by U(0, pi);
* the path is drawn as a thin line clipped to the canvas, Gaussian-blurred and downsampled 2x.

The line is rasterised with sub-pixel accuracy straight at the output size: points every output
pixel along each segment, each spread over 3 x 3 pixels with its exact position and the variance
across the line of the reference's drawing (:func:`line_variance`, 0.29 px^2 at size 64), all
kernels of a batch at once (:func:`kdiff_cli.maths.kernels.rasterize`). Sizes whose line is wider than
three pixels can hold (>= 71 px) get the rest of the variance as a Gaussian blur.
"""

from __future__ import annotations

import math

import numpy as np

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths.kernels import SPREAD_RANGE, check_count_size, check_range, per_kernel, rasterize

#: the model's numerical-stability constant (``eps`` of the reference implementation)
EPS = 0.1
#: default intensity range, drawn per kernel when ``intensity`` is not given
INTENSITY_RANGE = (0.1, 0.95)
#: spacing (output pixels) of the points that sample each line segment
SPACING = 1.0


def line_variance(size: int) -> float:
    """Variance (output px^2) across the line of the reference's drawing, blur and downsampling.

    The reference draws a line ``int(D / 150)`` canvas pixels wide (at least 1) with whole pixels,
    blurs it with a Gaussian of std ``int(0.01 D)`` canvas pixels (PIL: three box passes) and
    downsamples 2x with a Lanczos filter (which adds no variance). The line's width and its
    rounding to whole pixels add ``width^2 / 12`` canvas px^2 each, so the variance is
    ``(blur^2 + width^2 / 6) / 4`` output px^2: 0.29 at size 64, which is also the value whose
    statistics best match the reference's (support area and maximum within 1-2%).
    """
    diagonal = 2 * size * math.sqrt(2.0)
    blur = int(0.01 * diagonal)
    width = max(1, int(diagonal / 150))
    return (blur**2 + width**2 / 6.0) / 4.0


def _extra_blur(k: np.ndarray, extra: float) -> np.ndarray:
    """Blur each kernel by a Gaussian of variance ``extra`` px^2 (sizes whose line is wide)."""
    if extra <= 1e-3:
        return k
    from scipy.ndimage import gaussian_filter

    k = gaussian_filter(k, sigma=(0.0, math.sqrt(extra), math.sqrt(extra)), mode="constant")
    return k / k.sum(axis=(1, 2), keepdims=True)


def _segment_ids(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ragged groups of the given lengths: group id and position within the group of each item."""
    ids = np.repeat(np.arange(lengths.size), lengths)
    starts = np.cumsum(lengths) - lengths
    return ids, np.arange(ids.size) - starts[ids]


def _segmented_cumsum(v: np.ndarray, ids: np.ndarray, groups: int) -> np.ndarray:
    """Inclusive cumulative sum of ``v`` within each (contiguous, sorted) group ``ids``."""
    cs = np.concatenate([np.zeros(1, dtype=np.result_type(v, np.int64)), np.cumsum(v)])
    sizes = np.bincount(ids, minlength=groups)
    starts = np.cumsum(sizes) - sizes
    return cs[1:] - cs[starts][ids]


def step_lengths(rng: np.random.Generator, intensity: np.ndarray, diagonal: float) -> tuple[np.ndarray, np.ndarray]:
    """Step lengths (canvas px) of every kernel's path; returns ``(kid, steps)`` sorted by kernel.

    Steps ``Beta(1, 30) (1 - intensity + EPS) D`` are drawn until their sum reaches
    ``L = 0.75 D (U(0, 1) + U(0, intensity^2))``; a step >= L is redrawn.
    """
    count = intensity.size
    L = 0.75 * diagonal * (rng.uniform(0.0, 1.0, count) + rng.uniform(0.0, intensity**2))
    scale = (1.0 - intensity + EPS) * diagonal
    total = np.zeros(count)
    kids, steps = [], []
    active = np.flatnonzero(L > 0)
    while active.size:
        # candidates for the active kernels: enough for the whole path with high probability
        p_accept = 1.0 - (1.0 - np.minimum(L[active] / scale[active], 1.0)) ** 30
        mean = np.minimum(scale[active] / 31.0, L[active] / 2.0)
        need = (L[active] - total[active]) / mean + 2.0
        m = np.minimum(np.ceil(1.3 * need / np.maximum(p_accept, 1e-3)) + 8, 1 << 16).astype(np.int64)
        kid = np.repeat(active, m)
        s = (1.0 - rng.uniform(0.0, 1.0, kid.size) ** (1.0 / 30.0)) * scale[kid]  # Beta(1, 30) by inversion
        ok = s < L[kid]
        kid, s = kid[ok], s[ok]
        # a step is taken while the sum of the previous ones is below L
        local = np.searchsorted(active, kid)
        before = _segmented_cumsum(s, local, active.size) - s + total[kid]
        take = before < L[kid]
        kids.append(kid[take])
        steps.append(s[take])
        total += np.bincount(kid[take], s[take], minlength=count)
        active = active[total[active] < L[active]]
    kid = np.concatenate(kids) if kids else np.zeros(0, np.int64)
    s = np.concatenate(steps) if steps else np.zeros(0)
    order = np.argsort(kid, kind="stable")
    return kid[order], s[order]


def trajectories(rng: np.random.Generator, intensity: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The paths' vertices ``(kid, z)``: kernel index and complex canvas position (x + i y)."""
    count = intensity.size
    diagonal = 2 * size * math.sqrt(2.0)
    kid, s = step_lengths(rng, intensity, diagonal)
    n = np.bincount(kid, minlength=count)
    _, pos = _segment_ids(n)
    # angles: first U(-A, A), then |Triangular(0, I A, A + EPS)| with the previous sign, flipped w.p. J
    max_angle = rng.uniform(0.0, intensity * math.pi)
    jitter = rng.beta(2.0, 20.0, count)
    first = rng.uniform(-max_angle, max_angle)
    later = rng.triangular(0.0, (intensity * max_angle)[kid], max_angle[kid] + EPS)
    flip = (rng.uniform(0.0, 1.0, kid.size) < jitter[kid]) & (pos > 0)
    parity = _segmented_cumsum(flip.astype(np.int64), kid, count) & 1
    sign = np.sign(first)[kid] * (1 - 2 * parity)
    angle = np.where(pos == 0, first[kid], sign * later)
    # vertices: cumulative sum of the steps, centred on their mean, rotated by U(0, pi)
    z = _segmented_cumsum(s * np.exp(1j * angle), kid, count)
    mean = (np.bincount(kid, z.real, minlength=count) + 1j * np.bincount(kid, z.imag, minlength=count)) / np.maximum(n, 1)
    rotation = np.exp(1j * rng.uniform(0.0, math.pi, count))
    z = (z - mean[kid]) * rotation[kid] + size * (1 + 1j)  # canvas centre (2 size / 2, 2 size / 2)
    return kid, z


def line_points(kid: np.ndarray, z: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample the polylines through each kernel's vertices: ``(kid, row, col, weight)`` in output pixels.

    Each segment of length l (output px) gets ``m = ceil(l / SPACING)`` points at the centres of
    ``m`` equal parts, each weighing ``l / m`` (a uniform line density).
    """
    # canvas pixel centres are at integers; output pixel i covers canvas [2 i - 0.5, 2 i + 1.5)
    p = (z - 0.5 * (1 + 1j)) / 2.0
    seg = np.flatnonzero(kid[1:] == kid[:-1])  # vertex j -> j + 1 within a kernel
    start, delta = p[seg], p[seg + 1] - p[seg]
    length = np.abs(delta)
    m = np.maximum(np.ceil(length / SPACING), 1).astype(np.int64)
    which, t = _segment_ids(m)
    frac = (t + 0.5) / m[which]
    q = start[which] + delta[which] * frac
    return kid[seg][which], q.imag, q.real, (length / m)[which]


class Borodenko:
    """L. Borodenko's random camera-shake trajectories (``motionblur``), vectorised over kernels."""

    name = "borodenko"
    description = "random-trajectory motion blur of L. Borodenko's motionblur (the paper's database)"
    params = {"intensity": None}  # None: U(0.1, 0.95) per kernel; else a number in [0, 1]

    def sample(self, rng: np.random.Generator, count: int, size: int, intensity: float | None = None) -> np.ndarray:
        """``(count, size, size)`` float64 kernels, nonnegative, sum 1, centred on ``(size // 2, size // 2)``."""
        if not isinstance(rng, np.random.Generator):
            raise KdiffError("borodenko needs a numpy random Generator (np.random.default_rng(seed))")
        count, size = check_count_size(count, size)
        intensity = check_range("intensity", intensity, 0.0, 1.0)
        I = per_kernel(rng, intensity, *INTENSITY_RANGE, count)
        kid, z = trajectories(rng, I, size)
        pk, row, col, w = line_points(kid, z, size)
        variance = line_variance(size)
        spread = min(max(variance, SPREAD_RANGE[0]), SPREAD_RANGE[1])
        k = rasterize(pk, row, col, w, count, size, spread=spread)
        return _extra_blur(k, variance - spread)


@hookimpl
def register_kernel_generators(register):
    register(Borodenko())
