"""The paper's Figure 5: the reblur residual over iterations, Kernel-Diff against alternating MAP_{x,k}.

For each trial (a seeded val-style item: 256x256 crop, borodenko 64x64 kernel, sigma 0.01) both
methods run from scratch and record, at every iteration, the root-mean-square reblur residual
``||y - k0_hat * x0_hat|| / sqrt(#values)``: Kernel-Diff's guided reverse steps then its Stage II
steps; the alternating baseline's rounds (coarse to fine, on each level's luminance). Iterations are
drawn on a 0-1 progress axis because the two methods take different numbers of steps; the curve
is the median over trials and the shaded band their range (min-max).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kdiff_cli import files, plugins
from kdiff_cli.errors import KdiffError


def _rms(values, n_values: int) -> list[float]:
    return [math.sqrt(max(v, 0.0) / n_values) for v in values]


def residual_traces(items, methods=("kernel-diff", "alternating"), options: dict | None = None, callback=None) -> dict:
    """Per method, one residual trace (list of floats) per item; kernel-diff also gives Stage II."""
    options = options or {}
    traces: dict[str, list[list[float]]] = {m: [] for m in methods}
    for i, it in enumerate(items):
        y = files.to_tensor(it.y)
        n = y.numel()
        for m in methods:
            runner = plugins.get("method", m)
            if m == "alternating":
                _, _, info = runner.run(y, seed=i)
                traces[m].append([float(v) for v in info["residual"]])
            else:
                # the paper's pipeline as the paper ran it: the reblur loss (the residual the figure
                # plots, not --guidance-loss auto's latent one), J = 20 reblur gradient steps, whose
                # iterations the figure follows, and no classical candidate in the MAP_k choice
                opts = {"refiner": "reblur", "classical": False, "guidance_loss": "reblur", "refine_steps": 20, **options.get(m, {})}
                _, _, info = runner.run(y, seed=i, downscale="1", **opts)
                chosen = info["chosen"]
                guided = [step[chosen] for step in info["trace"]]
                traces[m].append(_rms(guided + list(info.get("refine_trace", [])), n))
        if callback:
            callback(i + 1, len(items))
    return traces


def plot_traces(traces: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.linspace(0, 1, 101)
    for (name, runs), color in zip(traces.items(), ("tab:blue", "tab:red", "tab:green")):
        if not runs:
            continue
        curves = np.stack([np.interp(grid, np.linspace(0, 1, len(r)), r) for r in runs])
        ax.plot(grid, np.median(curves, 0), color=color, label=f"{name} (median of {len(runs)})")
        ax.fill_between(grid, curves.min(0), curves.max(0), color=color, alpha=0.2)
    ax.set_xlabel("progress (fraction of iterations)")
    ax.set_ylabel("RMS reblur residual ||y - k0 * x0||")
    ax.set_yscale("log")
    ax.set_title("Reblur residual over iterations (cf. paper Fig. 5)")
    ax.legend()
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def residual_figure(data: Path, out: Path, trials: int = 10, options: dict | None = None, callback=None) -> dict:
    """Run the trials, write ``residual.png`` and ``residual.json`` into ``out``; return the summary."""
    from kdiff_cli.maths.protocol import protocol_items

    if trials < 1:
        raise KdiffError(f"--trials must be >= 1, got {trials}")
    items = protocol_items(data, trials)
    traces = residual_traces(items, options=options, callback=callback)
    out.mkdir(parents=True, exist_ok=True)
    plot_traces(traces, out / "residual.png")
    summary = {
        m: {"trials": len(r), "final_median": float(np.median([t[-1] for t in r])), "final_min": float(min(t[-1] for t in r)),
            "final_max": float(max(t[-1] for t in r))}
        for m, r in traces.items()
    }
    files.atomic_write_bytes(out / "residual.json", json.dumps({"summary": summary, "traces": traces}, indent=1).encode())
    return summary
