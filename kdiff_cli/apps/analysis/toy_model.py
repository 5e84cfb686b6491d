"""The model of the paper's 1-D toy (section 3.1, supplement A, eq. 10): the setup, the forward
model and the MAP_{x,k} loss with its gradient. The experiments are in
:mod:`kdiff_cli.apps.analysis.toy_experiments`, the whole run in :mod:`kdiff_cli.apps.analysis.toy`.

A pulse ``x_{a,w}(t) = 1 for a <= t < a + w`` (start ``a``, width ``w``) is blurred by a Gaussian
``k_sigma`` and integrated over the pixels ``[t, t+1)``, ``t = 0 .. N-1``; Gaussian noise of
standard deviation ``beta`` is added::

    y = k_sigma * x_{a,w} + beta * epsilon
    (k_sigma * x_{a,w})[t] = E(t, a) - E(t, a + w),  E(t, e) = int_t^{t+1} Phi((s - e)/sigma) ds

The convolution is exact for the continuous pulse, so the loss is smooth in a, w and sigma and
gradient descent applies; pixel integration keeps it sensitive to sigma even below a pixel
(point sampling would leave it flat there). The image is the pair (a, w), the kernel the scalar
sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from kdiff_cli.errors import KdiffError

# --------------------------------------------------------------------------- setup (supplement A)

N = 128  #: signal length
A_MAX = 96.0  #: 0 <= a <= A_MAX (pulse start)
W_MAX = 32.0  #: 0 <= w <= W_MAX (pulse width)
SIGMA_MIN = 0.05  #: the open bound 0 < sigma, as a small positive floor
SIGMA_MAX = 3.0  #: sigma <= SIGMA_MAX (kernel width)
A_TRUE, W_TRUE, SIGMA_TRUE = 64.0, 10.0, 1.5  #: the ground truth
SCALES = np.array([64.0, 32.0, 1.0])  #: scale of (a, w, sigma): directions of eq. 21, gradient preconditioner

EDGE_STEP = 0.25  #: grid step of a and w for the exhaustive non-blind solver (eq. 14)
SIGMA_STEP = 0.02  #: grid step of sigma for log p(sigma|y)
SURFACE_POINTS = 121  #: grid points per direction of the loss-surface plot
SURFACE_EXTENT = 1.0  #: the surface spans [-extent, extent] along t1 and t2

#: an end point is *correct* when it is this close to the truth (else a false minimum)
TOL_A, TOL_W, TOL_SIGMA_REL = 1.0, 1.0, 0.05


@dataclass(frozen=True)
class ToyConfig:
    """Options of one toy run (saved beside its outputs)."""

    seed: int = 0  # one seed for the noise, the directions and the starts
    starts: int = 200  # M random starts of each optimiser
    noise: float = 0.01  # beta: standard deviation of the additive Gaussian noise
    rounds: int = 1000  # at most this many alternating rounds (an (a, w) block then a sigma block)
    inner: int = 5  # projected gradient steps per block and round
    N: int = N
    a_true: float = A_TRUE
    w_true: float = W_TRUE
    sigma_true: float = SIGMA_TRUE
    bounds: dict = field(
        default_factory=lambda: {"a": [0.0, A_MAX], "w": [0.0, W_MAX], "sigma": [SIGMA_MIN, SIGMA_MAX]}
    )

    def check(self) -> None:
        if self.starts < 1:
            raise KdiffError(f"--starts must be at least 1, got {self.starts}")
        if not np.isfinite(self.noise) or self.noise <= 0:
            raise KdiffError(f"--noise must be a positive standard deviation, got {self.noise}")
        if self.noise > 1:
            raise KdiffError(f"--noise {self.noise} exceeds the pulse height 1; use a value in (0, 1]")
        if self.seed < 0:
            raise KdiffError(f"--seed must be nonnegative, got {self.seed}")


# --------------------------------------------------------------------------- forward model


def pixels(n: int = N) -> np.ndarray:
    """The pixel positions t = 0 .. n-1."""
    return np.arange(n, dtype=np.float64)


def pulse(a: float, w: float, n: int = N) -> np.ndarray:
    """The sharp signal x_{a,w} integrated over the pixels [t, t+1), t = 0 .. n-1 (area coverage)."""
    t = pixels(n)
    return np.clip(np.minimum(t + 1, a + w) - np.maximum(t, a), 0.0, 1.0)


def _psi(u: np.ndarray) -> np.ndarray:
    """An antiderivative of Phi: psi(u) = u Phi(u) + phi(u)."""
    return u * ndtr(u) + np.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)


def blurred_edge(e: np.ndarray, sigma: np.ndarray, n: int = N) -> np.ndarray:
    """A unit step at ``e`` blurred by ``k_sigma`` and integrated over each pixel [t, t+1): (..., n).

    ``int_t^{t+1} Phi((s - e)/sigma) ds = sigma [psi((t+1-e)/sigma) - psi((t-e)/sigma)]``.
    """
    t = pixels(n)
    e, sigma = np.asarray(e, dtype=np.float64)[..., None], np.asarray(sigma, dtype=np.float64)[..., None]
    return sigma * (_psi((t + 1 - e) / sigma) - _psi((t - e) / sigma))


def blurred_pulse(theta: np.ndarray, n: int = N) -> np.ndarray:
    """``k_sigma * x_{a,w}`` per pixel for ``theta = (..., 3)`` rows (a, w, sigma) -> (..., n).

    The pulse is the difference of two blurred steps, at ``a`` and at ``a + w``.
    """
    theta = np.asarray(theta, dtype=np.float64)
    a, w, sigma = theta[..., 0], theta[..., 1], theta[..., 2]
    return blurred_edge(a, sigma, n) - blurred_edge(a + w, sigma, n)


def observe(config: ToyConfig, rng: np.random.Generator) -> np.ndarray:
    """The measurement y of eq. 10 for the configured truth and noise."""
    clean = blurred_pulse(np.array([config.a_true, config.w_true, config.sigma_true]), config.N)
    return clean + config.noise * rng.standard_normal(config.N)


def loss(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The MAP_{x,k} data term ``||y - k_sigma * x_{a,w}||^2`` for every row of ``theta (..., 3)``."""
    r = blurred_pulse(theta, y.shape[-1]) - y
    return np.einsum("...t,...t->...", r, r)


def loss_grad(theta: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(L, dL/dtheta)`` for rows ``theta = (a, w, sigma)``.

    With ``F(s, e) = sigma psi((s - e)/sigma)``: ``dF/de = -Phi((s - e)/sigma)`` and
    ``dF/dsigma = phi((s - e)/sigma)``; each pixel value is ``F(t+1, e) - F(t, e)`` per edge.
    """
    theta = np.asarray(theta, dtype=np.float64)
    a, w, sigma = (theta[..., i, None] for i in range(3))
    t = pixels(y.shape[-1])
    r = blurred_pulse(theta, y.shape[-1]) - y

    def edge_terms(e):
        u1, u0 = (t + 1 - e) / sigma, (t - e) / sigma
        d_phi = (np.exp(-0.5 * u1**2) - np.exp(-0.5 * u0**2)) / np.sqrt(2 * np.pi)
        return ndtr(u1) - ndtr(u0), d_phi  # (-d/de, d/dsigma) of the blurred pixel step

    neg_de_a, ds_a = edge_terms(a)
    neg_de_e, ds_e = edge_terms(a + w)
    dm = np.stack([neg_de_e - neg_de_a, neg_de_e, ds_a - ds_e], axis=-2)  # (..., 3, n)
    return np.einsum("...t,...t->...", r, r), 2 * np.einsum("...it,...t->...i", dm, r)


def project(theta: np.ndarray) -> np.ndarray:
    """Clip rows (a, w, sigma) to the box of supplement A."""
    lo = np.array([0.0, 0.0, SIGMA_MIN])
    hi = np.array([A_MAX, W_MAX, SIGMA_MAX])
    return np.clip(theta, lo, hi)
