"""Kernel generator ``boracchi-foi``: camera-shake trajectories of Boracchi & Foi (IEEE TIP 2012).

"Modeling the performance of image restoration from motion blur" (``createTrajectory.m`` and
``createPSFs.m``). A particle with velocity v of constant speed moves for ``samples`` steps with a
total length of ``length`` px (60 px at size 64, scaled with the size); each step

    dv = big_shake + anxiety * (gaussian * (n1 + i n2) - centripetal * x) * length / (samples - 1)

with n1, n2 ~ N(0, 1) and, with probability ``big_shakes * anxiety``, an impulsive shake
``big_shake = 2 v exp(i (pi + U(-1/2, 1/2)))`` (mostly reversing the motion); then
``v <- (v + dv) / |v + dv| * length / (samples - 1)`` and ``x <- x + v``. Per kernel:
anxiety 0.1 U, centripetal 0.7 U, gaussian 10 U, big_shakes 0.2 U, initial direction U(0, 2 pi).

The PSF is the trajectory sampled over the exposure fraction T (``exposure``): sample t (of
``samples``) weighs ``clip(T * samples - t, 0, 1)``, splatted bilinearly, then re-centred on its
centre of mass and normalised. Every kernel of a batch advances together (one NumPy step per
sample).
"""

from __future__ import annotations

import math

import numpy as np

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths.kernels import check_count_size, check_range, rasterize

#: total trajectory length (px) at size 64 in the paper's setting; scaled with the kernel size
LENGTH_AT_64 = 60.0
#: steps whose random numbers are drawn at once
BLOCK = 250


def trajectories(rng: np.random.Generator, count: int, samples: int, length: float) -> np.ndarray:
    """``(samples, count)`` complex positions ``x`` (col + i row, px) of ``count`` trajectories."""
    anxiety = 0.1 * rng.uniform(size=count)
    centripetal = 0.7 * rng.uniform(size=count)
    gaussian = 10.0 * rng.uniform(size=count)
    big_shakes = 0.2 * rng.uniform(size=count)
    speed = length / (samples - 1)  # step length: the total length is exactly `length`
    v = np.exp(1j * rng.uniform(0.0, 2 * math.pi, count)) * anxiety  # as the reference: v0 * anxiety
    x = np.zeros((samples, count), dtype=np.complex128)
    p_shake = big_shakes * anxiety
    for b0 in range(0, samples - 1, BLOCK):
        b1 = min(b0 + BLOCK, samples - 1)
        shake = rng.uniform(size=(b1 - b0, count)) < p_shake
        turn = np.exp(1j * (math.pi + rng.uniform(-0.5, 0.5, size=(b1 - b0, count))))
        noise = rng.standard_normal(size=(b1 - b0, count)) + 1j * rng.standard_normal(size=(b1 - b0, count))
        drift = (anxiety * speed * gaussian) * noise
        kick = np.where(shake, 2.0 * turn, 0.0)  # impulsive shakes (rare): v -> v + 2 v turn
        any_kick = shake.any(axis=1)
        pull = anxiety * speed * centripetal
        for t in range(b0, b1):
            j = t - b0
            dv = drift[j] - pull * x[t]
            if any_kick[j]:
                dv += v * kick[j]
            v = v + dv
            v *= speed / np.maximum(np.abs(v), 1e-300)
            np.add(x[t], v, out=x[t + 1])
    return x


class BoracchiFoi:
    """Boracchi & Foi (2012) random camera-shake trajectories and their PSFs, vectorised."""

    name = "boracchi-foi"
    description = "camera-shake trajectories of Boracchi & Foi (IEEE TIP 2012), bilinear PSFs"
    params = {
        "exposure": 1.0,  # exposure fraction T in (0, 1] of the trajectory
        "samples": 2000,  # trajectory samples
        "length": None,  # total length (px); None: 60 * size / 64
    }

    def sample(
        self,
        rng: np.random.Generator,
        count: int,
        size: int,
        exposure: float = 1.0,
        samples: int = 2000,
        length: float | None = None,
    ) -> np.ndarray:
        """``(count, size, size)`` float64 kernels, nonnegative, sum 1, centred on ``(size // 2, size // 2)``."""
        if not isinstance(rng, np.random.Generator):
            raise KdiffError("boracchi-foi needs a numpy random Generator (np.random.default_rng(seed))")
        count, size = check_count_size(count, size)
        exposure = check_range("exposure", exposure, 0.0, 1.0, open_lo=True)
        if int(samples) != samples or samples < 2:
            raise KdiffError(f"parameter samples must be an integer >= 2, got {samples}")
        samples = int(samples)
        length = LENGTH_AT_64 * size / 64 if length is None else check_range("length", length, 0.0, math.inf, open_lo=True)
        x = trajectories(rng, count, samples, length)
        # exposure: sample t weighs clip(T * samples - t, 0, 1); later samples weigh nothing
        w = np.clip(exposure * samples - np.arange(samples), 0.0, 1.0)
        used = np.flatnonzero(w > 0)
        x = x[used] - x[used].mean(axis=0) + (size - 1) / 2 * (1 + 1j)  # barycentre at the centre
        kid = np.broadcast_to(np.arange(count), x.shape).T.ravel()
        z = x.T.ravel()
        weight = np.broadcast_to(w[used], (count, used.size)).ravel()
        return rasterize(kid, z.imag, z.real, weight, count, size)


@hookimpl
def register_kernel_generators(register):
    register(BoracchiFoi())
