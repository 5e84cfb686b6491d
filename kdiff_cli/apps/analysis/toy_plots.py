"""The four figures of ``kdiff toy`` (matplotlib, Agg backend): the setup, (i) the loss surface,
(ii) log p(sigma|y), (iii) the end points of both routes (see :mod:`kdiff_cli.apps.analysis.toy`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdiff_cli.apps.analysis.toy_experiments import near
from kdiff_cli.apps.analysis.toy_model import blurred_pulse, pixels, pulse

if TYPE_CHECKING:  # the result type only (toy imports this module)
    from kdiff_cli.apps.analysis.toy import ToyResult

FIGURES = ("toy_setup.png", "toy_loss_surface.png", "toy_log_p_sigma.png", "toy_false_minima.png")


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
    t = pixels(cfg.N)
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
