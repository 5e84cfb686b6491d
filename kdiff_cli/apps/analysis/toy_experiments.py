"""The three experiments of the paper's 1-D toy (section 3.1, supplement A) on the model of
:mod:`kdiff_cli.apps.analysis.toy_model`:

* (i) the MAP_{x,k} loss landscape along two random directions (supplement eqs. 21-22);
* (ii) MAP_k (eqs. 12-16): ``log p(sigma|y) ~ -min_{a,w} L(a, w, sigma) / (2 beta^2)`` (eq. 16),
  where the inner minimum is the non-blind solution ``x(sigma)`` of eq. 14 (here an exhaustive
  search on a fine (a, w) grid, the toy's exact non-blind solver); sigma_hat maximises it, then
  (a, w) follow from eq. 13. The exact marginal of eq. 12 (log-sum-exp over the grid) is computed
  alongside;
* (iii) MAP_{x,k} (eq. 11): ``L(a, w, sigma) = ||y - k_sigma * x_{a,w}||^2`` minimised jointly by
  *alternating* projected gradient descent (an (a, w) block, then a sigma block) from random starts.

Everything is vectorised with NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from kdiff_cli.apps.analysis.toy_model import (
    A_MAX, EDGE_STEP, SCALES, SIGMA_MAX, SIGMA_MIN, SIGMA_STEP, SURFACE_EXTENT, SURFACE_POINTS, TOL_A,
    TOL_SIGMA_REL, TOL_W, W_MAX, blurred_edge, loss, loss_grad, project,
)


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
