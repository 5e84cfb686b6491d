"""Kernel generator ``linear``: uniform linear motion blur (a line segment of given length and angle).

The segment of length L (px) at angle theta (degrees, counter-clockwise from the x axis, as seen
with rows growing downwards) is centred on pixel (size // 2, size // 2) and rasterised with
sub-pixel accuracy: points every 1/8 px along it, splatted bilinearly. L ~ U(length_min,
length_max) and theta ~ U(0, 180) per kernel unless fixed; L = 0 is the identity (a delta).
"""

from __future__ import annotations

import math

import numpy as np

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths.kernels import check_count_size, check_range, per_kernel, rasterize

#: spacing (px) of the points sampling each segment
SPACING = 0.125


class Linear:
    """Uniform linear motion: a centred, anti-aliased line segment."""

    name = "linear"
    description = "uniform linear motion blur: a centred segment of random length and angle"
    params = {
        "length_min": 1.0,  # shortest segment (px)
        "length_max": None,  # longest segment (px); None: size - 1
        "angle": None,  # fixed angle in degrees; None: U(0, 180) per kernel
    }

    def sample(
        self,
        rng: np.random.Generator,
        count: int,
        size: int,
        length_min: float = 1.0,
        length_max: float | None = None,
        angle: float | None = None,
    ) -> np.ndarray:
        """``(count, size, size)`` float64 kernels, nonnegative, sum 1, centred on ``(size // 2, size // 2)``."""
        if not isinstance(rng, np.random.Generator):
            raise KdiffError("linear needs a numpy random Generator (np.random.default_rng(seed))")
        count, size = check_count_size(count, size)
        length_min = check_range("length_min", length_min, 0.0, math.inf)
        length_max = size - 1.0 if length_max is None else check_range("length_max", length_max, 0.0, math.inf)
        if length_max < length_min:
            raise KdiffError(f"parameter length_max ({length_max:g}) must be >= length_min ({length_min:g})")
        angle = check_range("angle", angle, -360.0, 360.0)
        L = rng.uniform(length_min, length_max, count)
        theta = np.deg2rad(per_kernel(rng, angle, 0.0, 180.0, count))
        m = np.maximum(np.ceil(L / SPACING), 1).astype(np.int64)
        kid = np.repeat(np.arange(count), m)
        t = (np.arange(kid.size) - np.repeat(np.cumsum(m) - m, m) + 0.5) / m[kid] - 0.5  # in (-1/2, 1/2)
        col = size // 2 + t * L[kid] * np.cos(theta[kid])
        row = size // 2 - t * L[kid] * np.sin(theta[kid])
        return rasterize(kid, row, col, np.ones(kid.size), count, size)


@hookimpl
def register_kernel_generators(register):
    register(Linear())
