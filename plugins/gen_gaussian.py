"""Kernel generator ``gaussian``: isotropic or anisotropic rotated Gaussian blur kernels.

k(p) proportional to exp(-1/2 (p - c)^T Sigma^-1 (p - c)) at the pixel centres p, centred on
c = (size // 2, size // 2), with Sigma = R(theta) diag(sigma_1^2, sigma_2^2) R(theta)^T:
sigma_1, sigma_2 ~ U(sigma_min, sigma_max) per kernel (equal when ``isotropic``), theta ~ U(0, pi).
"""

from __future__ import annotations

import math

import numpy as np

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths.kernels import check_count_size, check_range, normalize


class Gaussian:
    """Rotated anisotropic (or isotropic) Gaussian kernels."""

    name = "gaussian"
    description = "isotropic or anisotropic rotated Gaussian kernels (defocus-like blur)"
    params = {
        "sigma_min": 0.5,  # smallest std (px) along a principal axis
        "sigma_max": 4.0,  # largest std (px) along a principal axis
        "isotropic": False,  # one std for both axes
    }

    def sample(
        self,
        rng: np.random.Generator,
        count: int,
        size: int,
        sigma_min: float = 0.5,
        sigma_max: float = 4.0,
        isotropic: bool = False,
    ) -> np.ndarray:
        """``(count, size, size)`` float64 kernels, nonnegative, sum 1, centred on ``(size // 2, size // 2)``."""
        if not isinstance(rng, np.random.Generator):
            raise KdiffError("gaussian needs a numpy random Generator (np.random.default_rng(seed))")
        count, size = check_count_size(count, size)
        sigma_min = check_range("sigma_min", sigma_min, 0.0, math.inf, open_lo=True)
        sigma_max = check_range("sigma_max", sigma_max, 0.0, math.inf, open_lo=True)
        if sigma_max < sigma_min:
            raise KdiffError(f"parameter sigma_max ({sigma_max:g}) must be >= sigma_min ({sigma_min:g})")
        s1 = rng.uniform(sigma_min, sigma_max, count)
        s2 = s1 if isotropic else rng.uniform(sigma_min, sigma_max, count)
        theta = rng.uniform(0.0, math.pi, count)
        c, s = np.cos(theta), np.sin(theta)
        # inverse covariance entries (rows r, columns q)
        a = (c / s1) ** 2 + (s / s2) ** 2
        b = c * s * (1 / s1**2 - 1 / s2**2)
        d = (s / s1) ** 2 + (c / s2) ** 2
        r = (np.arange(size) - size // 2).astype(np.float64)
        q2 = r[None, None, :] ** 2
        r2 = r[None, :, None] ** 2
        rq = r[None, :, None] * r[None, None, :]
        e = -0.5 * (d[:, None, None] * r2 + 2 * b[:, None, None] * rq + a[:, None, None] * q2)
        return normalize(np.exp(e))


@hookimpl
def register_kernel_generators(register):
    register(Gaussian())
