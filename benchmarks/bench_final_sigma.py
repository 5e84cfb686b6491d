"""Noise level of the final deconvolution x = F(y, k) with an estimated kernel: fixed floors vs the
candidates' disagreement (how `kernel_uncertainty` was chosen).

    python benchmarks/bench_final_sigma.py [--data $KDIFF_DATA/train] [--limit 24]
                                           [--uncertainty 0,0.002,...] [--floors 0.015,0.03,...]

Each crop of the seeded protocol (as in bench_deblur.py, by default on the *training* photos, where
the constant was tuned) gets the default kernel estimate once (ddim 25 guided, alternating Stage II,
classical candidate); then the final deconvolution runs with each rule: ``sigma`` clamped at a
fixed floor (the previous release: 0.03), or ``sigma_final^2 = sigma^2 + u (1 - agreement)`` with
``agreement`` the MNC between the sample and the classical candidate. Prints the mean PSNR of each
rule, split by how well the kept kernel matches the truth, and the per-image best as a bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("COLUMNS", "150")

from kdiff_cli import files, progress  # noqa: E402
from kdiff_cli.maths import metrics
from kdiff_cli.blind.estimator import DEFAULT_WEIGHTS, BlindSettings, estimate_kernel, final_sigma, load_kernel_model  # noqa: E402
from kdiff_cli.maths.deconv import noise_level, solve_tiled  # noqa: E402
from kdiff_cli.solvers import load_solver  # noqa: E402
from common import TRAIN_DIR, load_items  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=TRAIN_DIR)
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--uncertainty", type=floats, default=floats("0,0.002,0.004,0.006,0.008,0.012"))
    ap.add_argument("--floors", type=floats, default=floats("0.015,0.02,0.03,0.04"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    items = load_items(args.data, args.limit)
    model, schedule = load_kernel_model(DEFAULT_WEIGHTS, torch.device("cpu"))
    base = BlindSettings(seed=0, downscale="1")
    solver = load_solver(base.solver, device="cpu")
    rules = [(f"floor {f:g}", replace(base, kernel_uncertainty=None, final_sigma_floor=f)) for f in args.floors]
    rules += [(f"u = {u:g}", replace(base, kernel_uncertainty=u)) for u in args.uncertainty]
    psnr = np.zeros((len(items), len(rules)))
    mnc, agree = np.zeros(len(items)), np.zeros(len(items))
    with progress.task_bar("final sigma", total=len(items), unit="img") as update:
        for i, it in enumerate(items):
            y = files.to_tensor(it.y)
            est = estimate_kernel(y, model, schedule, solver, base)
            mnc[i], agree[i] = metrics.mnc(est.k.double()[0, 0].numpy(), it.k), est.agreement
            sigma = noise_level(base.sigma, y)
            for j, (_, settings) in enumerate(rules):
                with torch.no_grad():
                    x = solve_tiled(solver, y, est.k, final_sigma(sigma, est.agreement, settings))
                psnr[i, j] = metrics.psnr(files.to_numpy(x.clamp(0, 1)), it.x)
            update(1, mnc=mnc[i], agreement=agree[i])

    groups = [("MNC < 0.7", mnc < 0.7), ("0.7 <= MNC < 0.9", (mnc >= 0.7) & (mnc < 0.9)), ("MNC >= 0.9", mnc >= 0.9)]
    rows = [[name, f"{psnr[:, j].mean():.3f}"] + [f"{psnr[m, j].mean():.2f}" if m.any() else "-" for _, m in groups]
            for j, (name, _) in enumerate(rules)]
    rows.append(["per-image best (bound)", f"{psnr.max(1).mean():.3f}", "", "", ""])
    progress.print_table(
        f"Final deconvolution noise level on {len(items)} crops of {args.data.name} (mean PSNR, dB)",
        ["rule", "all"] + [f"{g} (n={int(m.sum())})" for g, m in groups], rows,
    )
    corr = f"; correlation with the kept kernel's MNC {np.corrcoef(agree, mnc)[0, 1]:.2f}" if len(items) > 2 else ""
    print(f"agreement between the sample and the classical candidate: median {statistics.median(agree):.3f}{corr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
