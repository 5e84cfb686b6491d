"""The paper's 1-D toy (section 3.1, supplement A): why MAP_{x,k} by alternating minimization
falls into false minima while MAP_k (the kernel first, then the image) does not.

``kdiff toy`` runs :func:`run_toy` and :func:`write_outputs`. The pieces:

* :mod:`kdiff_cli.apps.analysis.toy_model`: the setup, the forward model of eq. 10 (a pulse
  ``x_{a,w}`` blurred by a Gaussian ``k_sigma``, pixel-integrated, plus noise) and the MAP_{x,k}
  loss with its gradient;
* :mod:`kdiff_cli.apps.analysis.toy_experiments`: (i) the loss surface, (ii) MAP_k through
  log p(sigma|y) (eq. 16, and the exact marginal of eq. 12), (iii) alternating minimization;
* :mod:`kdiff_cli.apps.analysis.toy_plots`: the four figures.

Randomness comes from one seed split into independent streams (noise, directions, starts), so the
same seed gives the same numbers and changing ``starts`` changes neither ``y`` nor the directions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdiff_cli.apps.analysis import toy_plots
from kdiff_cli.apps.analysis.toy_experiments import (
    SigmaProfile, alternating_minimization, global_minimum, grid_local_minima, hill_climb, loss_surface, map_k,
    near, random_directions, random_starts, sigma_profile,
)
from kdiff_cli.apps.analysis.toy_model import (
    EDGE_STEP, SCALES, SIGMA_STEP, SURFACE_EXTENT, SURFACE_POINTS, TOL_A, TOL_SIGMA_REL, TOL_W, ToyConfig,
    loss, observe,
)
from kdiff_cli.errors import KdiffError

JSON_NAME = "toy.json"


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
    written = toy_plots.write_figures(result, out)
    summary = dict(result.summary, files=[p.name for p in written] + [JSON_NAME])
    written.append(atomic_write_bytes(out / JSON_NAME, (json.dumps(summary, indent=2) + "\n").encode()))
    return written
