"""The paper's 1-D toy (section 3.1, supplement A): why MAP_{x,k} by alternating minimization
falls into false minima while MAP_k (the kernel first, then the image) does not.

Model (eq. 10). A pulse ``x_{a,w}(t) = 1 for a <= t < a + w`` (start ``a``, width ``w``) is
blurred by a Gaussian ``k_sigma`` and integrated over the pixels ``[t, t+1)``, ``t = 0 .. N-1``;
Gaussian noise of standard deviation ``beta`` is added::

    y = k_sigma * x_{a,w} + beta * epsilon
    (k_sigma * x_{a,w})[t] = E(t, a) - E(t, a + w),  E(t, e) = int_t^{t+1} Phi((s - e)/sigma) ds

The convolution is exact for the continuous pulse, so the loss is smooth in a, w and sigma and
gradient descent applies; pixel integration keeps it sensitive to sigma even below a pixel
(point sampling would leave it flat there). The image is the pair (a, w), the kernel the scalar
sigma.

* MAP_{x,k} (eq. 11): minimise ``L(a, w, sigma) = ||y - k_sigma * x_{a,w}||^2`` jointly. Its
  landscape is shown along two random directions (supplement eqs. 21-22) and it is minimised by
  *alternating* projected gradient descent (an (a, w) block, then a sigma block) from random starts.
* MAP_k (eqs. 12-16): ``log p(sigma|y) ~ -min_{a,w} L(a, w, sigma) / (2 beta^2)`` (eq. 16), where
  the inner minimum is the non-blind solution ``x(sigma)`` of eq. 14 (here an exhaustive search on
  a fine (a, w) grid, the toy's exact non-blind solver); sigma_hat maximises it, then (a, w) follow
  from eq. 13. The exact marginal of eq. 12 (log-sum-exp over the grid) is computed alongside.

Everything is vectorised with NumPy; randomness comes from one seed split into independent streams
(noise, directions, starts), so the same seed gives the same numbers and changing ``starts``
changes neither ``y`` nor the directions.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import logsumexp, ndtr

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


def _t(n: int = N) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def pulse(a: float, w: float, n: int = N) -> np.ndarray:
    """The sharp signal x_{a,w} integrated over the pixels [t, t+1), t = 0 .. n-1 (area coverage)."""
    t = _t(n)
    return np.clip(np.minimum(t + 1, a + w) - np.maximum(t, a), 0.0, 1.0)


def _psi(u: np.ndarray) -> np.ndarray:
    """An antiderivative of Phi: psi(u) = u Phi(u) + phi(u)."""
    return u * ndtr(u) + np.exp(-0.5 * u**2) / np.sqrt(2 * np.pi)


def blurred_edge(e: np.ndarray, sigma: np.ndarray, n: int = N) -> np.ndarray:
    """A unit step at ``e`` blurred by ``k_sigma`` and integrated over each pixel [t, t+1): (..., n).

    ``int_t^{t+1} Phi((s - e)/sigma) ds = sigma [psi((t+1-e)/sigma) - psi((t-e)/sigma)]``.
    """
    t = _t(n)
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
    t = _t(y.shape[-1])
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


# --------------------------------------------------------------------------- (i) loss surface


def random_directions(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two directions in (a, w, sigma): ``t_i = [64 z1, 32 z2, z3]`` (eq. 21), t2 made orthogonal (eq. 22)."""
    z = rng.standard_normal((2, 3))
    t1, t2 = z[0] * SCALES, z[1] * SCALES
    t2 = t2 - (t2 @ t1) / (t1 @ t1) * t1
    return t1, t2


def loss_surface(
    y: np.ndarray, theta0: np.ndarray, t1: np.ndarray, t2: np.ndarray, points: int = SURFACE_POINTS,
    extent: float = SURFACE_EXTENT,
) -> tuple[np.ndarray, np.ndarray]:
    """``L(theta0 + alpha t1 + beta t2)`` on a ``points x points`` grid of ``[-extent, extent]^2``.

    The Gaussian depends on sigma^2 only, so sigma enters as ``max(|sigma|, 1e-3)``; a and w are
    not clipped (the formula is defined for any real a, w). Returns ``(coords, L[beta, alpha])``.
    """
    s = np.linspace(-extent, extent, points)
    theta = theta0 + s[None, :, None] * t1 + s[:, None, None] * t2
    theta[..., 2] = np.maximum(np.abs(theta[..., 2]), 1e-3)
    return s, loss(theta, y)


def grid_local_minima(values: np.ndarray) -> int:
    """Number of strict local minima of a 2-D array over its 8-neighbourhood (interior points)."""
    v = values
    c = v[1:-1, 1:-1]
    is_min = np.ones_like(c, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_min &= c < v[1 + di : v.shape[0] - 1 + di, 1 + dj : v.shape[1] - 1 + dj]
    return int(is_min.sum())


# --------------------------------------------------------------------------- (ii) MAP_k: log p(sigma|y)


@dataclass
class SigmaProfile:
    """For each sigma on the grid: the non-blind solution (eq. 14) and both log-posteriors."""

    sigma: np.ndarray  # (S,) grid of kernel widths
    a: np.ndarray  # (S,) a(sigma) of eq. 16
    w: np.ndarray  # (S,) w(sigma) of eq. 16
    min_loss: np.ndarray  # (S,) ||y - x_{a(sigma), w(sigma)} * k_sigma||^2
    log_p_approx: np.ndarray  # (S,) eq. 16, normalised to a density on the grid
    log_p_exact: np.ndarray  # (S,) eq. 12 (log-sum-exp over the (a, w) grid), normalised likewise


def sigma_grid() -> np.ndarray:
    n = int(round((SIGMA_MAX - SIGMA_MIN) / SIGMA_STEP))
    return np.round(SIGMA_MIN + SIGMA_STEP * np.arange(n + 1), 10)


def image_grid() -> tuple[np.ndarray, np.ndarray]:
    """The (a, w) grids of the exhaustive non-blind solver (step ``EDGE_STEP``)."""
    a = EDGE_STEP * np.arange(int(round(A_MAX / EDGE_STEP)) + 1)
    w = EDGE_STEP * np.arange(int(round(W_MAX / EDGE_STEP)) + 1)
    return a, w


def _grid_losses(y: np.ndarray, sigma: float) -> np.ndarray:
    """``L(a, w, sigma)`` on the whole (a, w) grid, shape (len(a), len(w)).

    With ``G[e]`` the blurred pixel step at every edge e on the grid and ``m = G[a] - G[a + w]``,
    ``||y - m||^2 = |y|^2 - 2 <y,G_a> + 2 <y,G_e> + <G_a,G_a> - 2 <G_a,G_e> + <G_e,G_e>``: one Gram
    matrix per sigma instead of one signal per (a, w).
    """
    a, w = image_grid()
    edges = EDGE_STEP * np.arange(len(a) + len(w) - 1)
    G = blurred_edge(edges, np.full_like(edges, sigma), y.shape[-1])  # (E, n)
    v = G @ y
    gram = G @ G.T
    i = np.arange(len(a))[:, None]
    e = i + np.arange(len(w))[None, :]
    diag = np.diagonal(gram)
    return y @ y - 2 * v[i] + 2 * v[e] + diag[i] - 2 * gram[i, e] + diag[e]


def sigma_profile(y: np.ndarray, noise: float) -> SigmaProfile:
    """Evaluate eq. 16 (and eq. 12) on the sigma grid with the exhaustive non-blind solver."""
    sig = sigma_grid()
    a_grid, w_grid = image_grid()
    a_s, w_s, min_l, lse = (np.empty(len(sig)) for _ in range(4))
    for j, s in enumerate(sig):
        L = _grid_losses(y, s)
        ia, iw = np.unravel_index(np.argmin(L), L.shape)
        a_s[j], w_s[j], min_l[j] = a_grid[ia], w_grid[iw], L[ia, iw]
        lse[j] = logsumexp(-L / (2 * noise**2))

    def density(logp: np.ndarray) -> np.ndarray:
        return logp - logsumexp(logp) - np.log(SIGMA_STEP)

    return SigmaProfile(sig, a_s, w_s, min_l, density(-min_l / (2 * noise**2)), density(lse))


def hill_climb(values: np.ndarray, start: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Discrete local ascent on a 1-D array from each start index; returns the end indices.

    Neighbours differing by at most ``tol`` count as level: a plateau (e.g. log p(sigma|y) for
    sigma far below a pixel, where the sampled model no longer changes) is crossed as one point
    instead of stopping the ascent on rounding noise. Ends at the largest value of its plateau.
    """
    values = np.asarray(values, dtype=np.float64)
    first = np.flatnonzero(np.r_[True, np.abs(np.diff(values)) > tol])  # first index of each plateau
    last = np.r_[first[1:], len(values)]
    run_of = np.repeat(np.arange(len(first)), last - first)
    top = np.array([f + int(np.argmax(values[f:e])) for f, e in zip(first, last)])  # best index per plateau
    run_val = values[top]
    idx = run_of[np.asarray(start)]
    n = len(first)
    while True:
        left = np.where(idx > 0, run_val[np.maximum(idx - 1, 0)], -np.inf)
        right = np.where(idx < n - 1, run_val[np.minimum(idx + 1, n - 1)], -np.inf)
        here = run_val[idx]
        nxt = np.where((right > here) & (right >= left), idx + 1, np.where(left > here, idx - 1, idx))
        if np.array_equal(nxt, idx):
            return top[idx]
        idx = nxt


def map_k(profile: SigmaProfile, sigma_starts: np.ndarray) -> np.ndarray:
    """MAP_k from random starts: ascend log p(sigma|y) (eq. 16) from each start, then (a, w) by eq. 13.

    Returns end points ``(M, 3)`` rows (a, w, sigma).
    """
    start_idx = np.clip(np.rint((sigma_starts - SIGMA_MIN) / SIGMA_STEP).astype(int), 0, len(profile.sigma) - 1)
    end = hill_climb(profile.log_p_approx, start_idx)
    return np.stack([profile.a[end], profile.w[end], profile.sigma[end]], axis=-1)


# --------------------------------------------------------------------------- (iii) alternating minimization


def random_starts(rng: np.random.Generator, m: int) -> np.ndarray:
    """``m`` starts (a, w, sigma) uniform in the box of supplement A."""
    lo = np.array([0.0, 0.0, SIGMA_MIN])
    hi = np.array([A_MAX, W_MAX, SIGMA_MAX])
    return lo + (hi - lo) * rng.random((m, 3))


def _block_step(theta, L, y, mask, step, armijo=1e-4, max_halvings=60):
    """One projected gradient step on the coordinates in ``mask`` for every row, with backtracking.

    The step is preconditioned by ``SCALES**2`` (gradient descent in the scaled coordinates
    theta / SCALES); ``step`` holds each row's last accepted step size and is updated in place.
    """
    _, g = loss_grad(theta, y)
    d = -(SCALES**2) * g * mask
    t = np.minimum(2 * step, 1.0)
    new_theta, new_L = theta.copy(), L.copy()
    todo = np.arange(len(theta))
    for _ in range(max_halvings):
        cand = project(theta[todo] + t[todo, None] * d[todo])
        Lc = loss(cand, y)
        # projected Armijo rule: L(P(theta + t d)) <= L(theta) + c * g . (P(theta + t d) - theta)
        ok = Lc <= L[todo] + armijo * np.einsum("ij,ij->i", g[todo], cand - theta[todo])
        new_theta[todo[ok]], new_L[todo[ok]] = cand[ok], Lc[ok]
        todo = todo[~ok]
        if len(todo) == 0:
            break
        t[todo] *= 0.5
    step[:] = t
    return new_theta, new_L


def alternating_minimization(
    y: np.ndarray, starts: np.ndarray, rounds: int = 1000, inner: int = 5, tol: float = 1e-6,
    ftol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAP_{x,k} by alternating projected gradient descent from each start (rows a, w, sigma).

    Each round takes ``inner`` steps on the image block (a, w) with sigma fixed, then ``inner``
    steps on the kernel block sigma with (a, w) fixed. A row stops once a whole round moves it by
    less than ``tol`` (in the scaled units theta / SCALES), or lowers its loss by less than
    ``ftol`` relative (a flat valley: collapsed pulses drift there without changing the loss), or
    after ``rounds`` rounds.
    Returns ``(end points (M, 3), final losses (M,), rounds run per row (M,))``.
    """
    theta = project(np.asarray(starts, dtype=np.float64))
    L = loss(theta, y)
    blocks = (np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    steps = np.ones((len(blocks), len(theta)))
    rounds_run = np.zeros(len(theta), dtype=int)
    active = np.arange(len(theta))
    for _ in range(rounds):
        th, Lt = theta[active], L[active]
        for b, mask in enumerate(blocks):
            st = steps[b, active]
            for _ in range(inner):
                th, Lt = _block_step(th, Lt, y, mask, st)
            steps[b, active] = st
        moved = np.max(np.abs((th - theta[active]) / SCALES), axis=-1)
        decrease = L[active] - Lt
        theta[active], L[active] = th, Lt
        rounds_run[active] += 1
        active = active[(moved >= tol) & (decrease >= ftol * Lt)]
        if len(active) == 0:
            break
    return theta, L, rounds_run


def near(theta: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """True for rows within (1 sample in a and w, 5% in sigma) of ``reference`` (a, w, sigma)."""
    theta = np.atleast_2d(theta)
    return (
        (np.abs(theta[:, 0] - reference[0]) <= TOL_A)
        & (np.abs(theta[:, 1] - reference[1]) <= TOL_W)
        & (np.abs(theta[:, 2] - reference[2]) <= TOL_SIGMA_REL * reference[2])
    )


def global_minimum(profile: SigmaProfile) -> np.ndarray:
    """The global minimiser (a, w, sigma) of the MAP_{x,k} loss on the grid.

    ``min_{a,w,sigma} L = min_sigma min_{a,w} L``: the maximiser of eq. 16 with its (a(sigma), w(sigma)).
    """
    j = int(np.argmin(profile.min_loss))
    return np.array([profile.a[j], profile.w[j], profile.sigma[j]])


# --------------------------------------------------------------------------- the whole experiment


@dataclass
class ToyResult:
    """Numbers (``summary``, JSON-ready) and arrays for the figures."""

    config: ToyConfig
    y: np.ndarray  # (N,) the measurement
    theta_star: np.ndarray  # (3,) global minimiser of the MAP_{x,k} loss (grid)
    t1: np.ndarray  # (3,) first surface direction (eq. 21)
    t2: np.ndarray  # (3,) second surface direction, orthogonalised (eq. 22)
    surface_coords: np.ndarray  # (P,) alpha = beta coordinates of the surface grid
    surface: np.ndarray  # (P, P) L(truth + alpha t1 + beta t2), rows beta
    profile: SigmaProfile
    starts: np.ndarray  # (M, 3) random starts (a, w, sigma)
    alt_end: np.ndarray  # (M, 3) end points of alternating minimization
    alt_loss: np.ndarray  # (M,) their losses
    mapk_end: np.ndarray  # (M, 3) end points of the MAP_k route from the same starts
    summary: dict[str, Any]


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the noise, the surface directions and the random starts."""
    noise, directions, starts = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(noise), np.random.default_rng(directions), np.random.default_rng(starts)


def _route_summary(end: np.ndarray, theta_star: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    false = ~near(end, theta_star)
    return {
        "false_minimum_fraction": float(false.mean()),
        "truth_recovered_fraction": float(near(end, truth).mean()),
        "collapsed_fraction": float((end[:, 1] < 0.5).mean()),  # pulse shrunk to nothing (w -> 0)
        "distinct_end_points": int(len(np.unique(np.round(end / SCALES, 2), axis=0))),
    }


def run_toy(config: ToyConfig) -> ToyResult:
    """Run (i) the loss surface, (ii) log p(sigma|y) and (iii) both routes from ``starts`` random starts.

    An end point is a *false minimum* when it is farther than (1 sample in a and w, 5% in sigma)
    from the global minimiser of the MAP_{x,k} loss (found on the grid; both routes minimise the
    same loss, they differ only in how they search).
    """
    config.check()
    rng_noise, rng_dir, rng_starts = _streams(config.seed)
    y = observe(config, rng_noise)
    truth = np.array([config.a_true, config.w_true, config.sigma_true])

    t1, t2 = random_directions(rng_dir)
    coords, surface = loss_surface(y, truth, t1, t2)

    profile = sigma_profile(y, config.noise)
    theta_star = global_minimum(profile)
    best = int(np.argmax(profile.log_p_approx))
    best_exact = int(np.argmax(profile.log_p_exact))
    sigma_hat = float(profile.sigma[best])

    starts = random_starts(rng_starts, config.starts)
    alt_end, alt_loss, rounds_run = alternating_minimization(y, starts, config.rounds, config.inner)
    mapk_end = map_k(profile, starts[:, 2])

    summary = {
        "config": asdict(config),
        "tolerances": {"a": TOL_A, "w": TOL_W, "sigma_relative": TOL_SIGMA_REL},
        "grids": {"edge_step": EDGE_STEP, "sigma_step": SIGMA_STEP, "surface_points": SURFACE_POINTS,
                  "surface_extent": SURFACE_EXTENT},
        "truth": {"a": config.a_true, "w": config.w_true, "sigma": config.sigma_true,
                  "loss": float(loss(truth, y))},
        "global_minimum": {"a": float(theta_star[0]), "w": float(theta_star[1]), "sigma": float(theta_star[2]),
                           "loss": float(profile.min_loss.min())},
        "surface": {
            "t1": t1.tolist(),
            "t2": t2.tolist(),
            "local_minima": grid_local_minima(surface),
            "min_loss": float(surface.min()),
            "max_loss": float(surface.max()),
        },
        "map_k": {
            "sigma_hat": sigma_hat,
            "sigma_relative_error": abs(sigma_hat - config.sigma_true) / config.sigma_true,
            "a_hat": float(profile.a[best]),
            "w_hat": float(profile.w[best]),
            "loss": float(profile.min_loss[best]),
            "sigma_hat_exact_marginal": float(profile.sigma[best_exact]),
            "log_p_local_maxima": int(len(np.unique(hill_climb(profile.log_p_approx, np.arange(len(profile.sigma)))))),
            **_route_summary(mapk_end, theta_star, truth),
        },
        "alternating": {
            "starts": config.starts,
            "max_rounds_run": int(rounds_run.max()),
            "converged_fraction": float((rounds_run < config.rounds).mean()),
            "median_final_loss": float(np.median(alt_loss)),
            **_route_summary(alt_end, theta_star, truth),
        },
        "log_p_sigma": {
            "sigma": profile.sigma.tolist(),
            "approx_eq16": profile.log_p_approx.tolist(),
            "exact_eq12": profile.log_p_exact.tolist(),
        },
    }
    return ToyResult(config, y, theta_star, t1, t2, coords, surface, profile, starts, alt_end, alt_loss, mapk_end,
                     summary)


# --------------------------------------------------------------------------- outputs

FIGURES = ("toy_setup.png", "toy_loss_surface.png", "toy_log_p_sigma.png", "toy_false_minima.png")
JSON_NAME = "toy.json"


def _save(fig, path: Path) -> Path:
    from kdiff_cli.files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def write_figures(result: ToyResult, out: Path) -> list[Path]:
    """Render the four PNG figures (matplotlib, Agg backend) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, s = result.config, result.summary
    t = _t(cfg.N)
    written = []

    # setup: x, k_sigma * x, y and the MAP_k reconstruction
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.step(t, pulse(cfg.a_true, cfg.w_true, cfg.N), where="post", label="x (a=64, w=10)", color="k", lw=1)
    ax.plot(t, result.y, ".", ms=3, label=f"y (sigma={cfg.sigma_true}, beta={cfg.noise})", color="tab:blue")
    est = np.array([s["map_k"]["a_hat"], s["map_k"]["w_hat"], s["map_k"]["sigma_hat"]])
    ax.plot(t, blurred_pulse(est, cfg.N), label="MAP_k reblur", color="tab:green", lw=1)
    ax.set(xlabel="t", title="Toy 1-D blind deconvolution: estimate a, w and sigma from y")
    ax.legend(fontsize=8)
    written.append(_save(fig, out / FIGURES[0]))
    plt.close(fig)

    # (i) loss surface along t1, t2 (eqs. 21-22), surface + contour
    c = result.surface_coords
    A, B = np.meshgrid(c, c)
    Z = np.log10(result.surface + 1e-12)
    fig = plt.figure(figsize=(12, 4.8))
    fig.subplots_adjust(wspace=0.35)
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax3.set_box_aspect(None, zoom=0.85)
    ax3.plot_surface(A, B, Z, cmap="viridis", linewidth=0, antialiased=True)
    ax3.set(xlabel="alpha (t1)", ylabel="beta (t2)", title="MAP_{x,k} loss along t1, t2")
    ax3.set_zlabel("log10 L", labelpad=8)
    ax2 = fig.add_subplot(1, 2, 2)
    cs = ax2.contourf(A, B, Z, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax2, label="log10 ||y - k_sigma * x_{a,w}||^2")
    ax2.plot(0, 0, "r*", ms=10, label="truth")
    ax2.set(xlabel="alpha (t1)", ylabel="beta (t2)", title=f"{s['surface']['local_minima']} grid local minima")
    ax2.legend(fontsize=8)
    written.append(_save(fig, out / FIGURES[1]))
    plt.close(fig)

    # (ii) log p(sigma|y): eq. 16 approximation and eq. 12 marginal
    p = result.profile
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(p.sigma, p.log_p_approx, label="approximation, eq. 16", color="tab:green")
    ax.plot(p.sigma, p.log_p_exact, "--", label="marginal over (a, w), eq. 12", color="tab:gray")
    ax.axvline(cfg.sigma_true, color="k", lw=0.8, label=f"true sigma = {cfg.sigma_true}")
    ax.axvline(s["map_k"]["sigma_hat"], color="tab:red", lw=0.8, ls=":", label=f"max at {s['map_k']['sigma_hat']:.2f}")
    lo = max(p.log_p_approx.max(), p.log_p_exact.max()) - 60
    ax.set_ylim(lo, max(p.log_p_approx.max(), p.log_p_exact.max()) + 5)
    n_max = s["map_k"]["log_p_local_maxima"]
    ax.set(xlabel="sigma", ylabel="log p(sigma | y)", title=f"MAP_k: {n_max} local maxim{'um' if n_max == 1 else 'a'} on the grid")
    ax.legend(fontsize=8)
    written.append(_save(fig, out / FIGURES[2]))
    plt.close(fig)

    # (iii) end points of both optimisers from the same random starts
    alt_false = ~near(result.alt_end, result.theta_star)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.plot(cfg.a_true, cfg.sigma_true, "k*", ms=14, label="truth")
    ax.scatter(result.mapk_end[:, 0], result.mapk_end[:, 2], s=90, facecolors="none", edgecolors="tab:blue", label="MAP_k")
    ax.scatter(result.alt_end[alt_false, 0], result.alt_end[alt_false, 2], s=12, c="tab:red", marker="x",
               label=f"alternating: false minimum ({alt_false.mean():.0%})")
    ax.scatter(result.alt_end[~alt_false, 0], result.alt_end[~alt_false, 2], s=20, c="tab:green",
               label=f"alternating: global minimum ({(~alt_false).mean():.0%})")
    ax.set(xlabel="a (pulse start)", ylabel="sigma", title=f"end points of {cfg.starts} random starts")
    ax.legend(fontsize=8)
    ax = axes[1]
    fracs = [s["alternating"]["false_minimum_fraction"], s["map_k"]["false_minimum_fraction"]]
    bars = ax.bar(["alternating MAP_{x,k}", "MAP_k (sigma, then a, w)"], fracs, color=["tab:red", "tab:blue"])
    for bar, f in zip(bars, fracs):
        ax.text(bar.get_x() + bar.get_width() / 2, f + 0.01, f"{f:.0%}", ha="center")
    ax.set(ylim=(0, 1.1), ylabel="fraction ending in a false minimum")
    written.append(_save(fig, out / FIGURES[3]))
    plt.close(fig)
    return written


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[tuple[str, ...]]]:
    """Columns and rows of the console summary: both routes' false-minimum fractions, sigma_hat."""
    alt, mk = summary["alternating"], summary["map_k"]
    columns = ["route", "false minima", "truth recovered", "sigma_hat"]
    rows = [
        ("alternating MAP_{x,k}", f"{alt['false_minimum_fraction']:.1%}", f"{alt['truth_recovered_fraction']:.1%}", "-"),
        ("MAP_k (sigma, then a, w)", f"{mk['false_minimum_fraction']:.1%}", f"{mk['truth_recovered_fraction']:.1%}",
         f"{mk['sigma_hat']:.3f} ({mk['sigma_relative_error']:.1%} off)"),
    ]
    return columns, rows


def write_outputs(result: ToyResult, out: str | Path) -> list[Path]:
    """Write the figures and ``toy.json`` into ``out``; returns the written paths."""
    from kdiff_cli.files import atomic_write_bytes

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KdiffError(f"--out {out} exists and is not a directory")
    written = write_figures(result, out)
    summary = dict(result.summary, files=[p.name for p in written] + [JSON_NAME])
    written.append(atomic_write_bytes(out / JSON_NAME, (json.dumps(summary, indent=2) + "\n").encode()))
    return written
