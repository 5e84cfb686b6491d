"""Blind deblurring benchmark: Kernel-Diff settings on the seeded val protocol (issue: defaults by measurement).

    python benchmarks/bench_deblur.py [--limit 8] [--ddpm-limit 2] [--solver wiener] [--weights NAME|PATH]
                                      [--configs default,ddim100,...] [--json OUT]

Items: the BSD100 protocol of ``kdiff eval`` applied to $KDIFF_DATA/val (seeded 256x256 RGB crops,
64x64 ``borodenko`` kernels from seed 2023 — held out from training seed 0 —, symmetric
boundary, sigma = 0.01). For each configuration: mean PSNR / SSIM of the image, mean MNC of the
kernel with the truth, and seconds per image on this machine; beside the blurred input and the
same solver given the true kernel (the oracle). ``ddpm`` with T = 1000 runs on the first
``--ddpm-limit`` images only (about 1000 guided steps each); its row says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("COLUMNS", "150")

from kdiff_cli.maths import alternating, metrics  # noqa: E402
from kdiff_cli import files, plugins, progress
from kdiff_cli.blind.estimator import DEFAULT_WEIGHTS, BlindSettings, deblur_image, final_image, load_kernel_model  # noqa: E402
from kdiff_cli.maths.deconv import solve_tiled  # noqa: E402
from kdiff_cli.solvers import load_solver  # noqa: E402
from common import VAL_DIR, load_items  # noqa: E402

#: the alternating baseline's final deconvolution regularises with Kernel-Diff's final noise floor
#: (the protocol's sigma 0.01 is below it, so both use 0.03)
FINAL_SIGMA = BlindSettings.final_sigma_floor

#: name -> BlindSettings overrides (the first is the shipped default of `kdiff deblur`; the ablations
#: leave out the classical candidate of the MAP_k choice, so that they measure the diffusion part)
CONFIGS = {
    "default (ddim 25 + alternating + classical candidate)": {},
    "default with the reblur MAP_k choice (previous release)": {"choice": "reblur"},
    "ddim25 + alternating (no classical candidate)": {"classical": False},
    "default with the fixed 0.03 final floor (previous release)": {"kernel_uncertainty": None},
    "reblur Stage II (paper)": {"refiner": "reblur", "classical": False},
    "reblur Stage II (paper) with the wiener reblur loss (previous release)": {"refiner": "reblur", "classical": False, "guidance_loss": "reblur", "refine_steps": 20},
    "default with the latent guidance loss": {"guidance_loss": "latent"},
    "ddim50": {"steps": 50, "classical": False},
    "ddim100": {"steps": 100, "classical": False},
    "ddim25-noStageII": {"refine_steps": 0, "classical": False},
    "unguided+StageII": {"sampler": "unguided", "classical": False},
    "unguided + classical candidate": {"sampler": "unguided"},
    "unguided": {"sampler": "unguided", "refine_steps": 0, "classical": False},
    "unguided + reblur Stage II": {"sampler": "unguided", "refiner": "reblur", "classical": False},
    "samples2": {"samples": 2, "classical": False},
    "samples4": {"samples": 4, "classical": False},
    "ddpm1000": {"sampler": "ddpm", "steps": 1000},
    "ddpm1000 + reblur Stage II": {"sampler": "ddpm", "steps": 1000, "refiner": "reblur", "classical": False},
    "alternating method (no diffusion)": {"method": "alternating"},
    # the kernel clean-up after Stage II off (--kernel-threshold 0; docs/deblur.md)
    "default without the kernel clean-up (previous release)": {"kernel_threshold": 0.0},
    "reblur Stage II (paper) without the kernel clean-up (previous release)": {"refiner": "reblur", "classical": False, "kernel_threshold": 0.0},
    "reblur Stage II (paper) with the fast guidance solver (previous release)": {"refiner": "reblur", "classical": False, "fast_guidance": True},
    "ddim25-noStageII with the full guidance solver": {"refine_steps": 0, "classical": False, "fast_guidance": False},
    # the seventh session's measurements of the guidance scale and the discrepancy penalty (docs/deblur.md)
    "default with guidance scale 1": {"guidance_scale": 1.0},
    "default with discrepancy 1": {"discrepancy": 1.0},
    "ddim25 + alternating (no classical candidate) with guidance scale 1": {"classical": False, "guidance_scale": 1.0},
    "ddim25-noStageII with guidance scale 1": {"refine_steps": 0, "classical": False, "guidance_scale": 1.0},
    "reblur Stage II (paper) with guidance scale 1": {"refiner": "reblur", "classical": False, "guidance_scale": 1.0},
    "reblur Stage II (paper) with discrepancy 1": {"refiner": "reblur", "classical": False, "discrepancy": 1.0, "guidance_loss": "reblur"},
    "discrepancy1-c7": {"discrepancy": 1.0, "guidance_scale": 7.0, "classical": False},
    "discrepancy1-c10": {"discrepancy": 1.0, "guidance_scale": 10.0, "classical": False},
    # Stage I started from the kernel bank's nearest kernels to y's cue (plugins/sampler_lookup.py)
    "lookup + alternating + classical candidate": {"sampler": "lookup"},
    "lookup 10 steps + alternating + classical candidate": {"sampler": "lookup", "steps": 10},
    "lookup + reblur Stage II (the paper pipeline from the lookup start)": {"sampler": "lookup", "refiner": "reblur", "classical": False},
    "lookup-noStageII": {"sampler": "lookup", "refine_steps": 0, "classical": False},
    "lookup samples4 + alternating + classical candidate": {"sampler": "lookup", "samples": 4},
    "lookup + alternating (no classical candidate)": {"sampler": "lookup", "classical": False},
    "lookup unguided + alternating + classical candidate": {"sampler": "lookup", "guidance": False},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=VAL_DIR)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--ddpm-limit", type=int, default=2)
    ap.add_argument("--solver", default=BlindSettings.solver)
    ap.add_argument("--also-final", default="", help="comma-separated solvers: extra rows with the same kernel estimates, "
                    "only the final x = F(y, k) made by that solver (kdiff deblur --final-solver)")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    unknown = [name for name in args.configs.split(",") if name not in CONFIGS]
    if unknown:
        print(f"unknown config {unknown[0]!r}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    items = load_items(args.data, args.limit)
    model, schedule = load_kernel_model(args.weights, torch.device("cpu"))
    solver = load_solver(args.solver, device="cpu")
    rows, results, notes = [], {}, []

    def tensor(a):
        return files.to_tensor(a)

    # the baselines: blurred input, the solver with the true kernel
    base = {"blurred": [], "oracle": [], "random kernel (borodenko)": []}
    rng = np.random.default_rng(99)  # a random kernel from the same generator: the chance level of MNC
    random_k = plugins.get("generator", "borodenko").sample(rng, len(items), 64)
    for it, kr in zip(items, random_k):
        base["random kernel (borodenko)"].append((float("nan"), float("nan"), metrics.mnc(kr, it.k), 0.0))
        base["blurred"].append((metrics.psnr(it.y, it.x), metrics.ssim(it.y, it.x), float("nan"), 0.0))
        t0 = time.perf_counter()
        with torch.no_grad():
            xo = solve_tiled(solver, tensor(it.y), torch.from_numpy(it.k).float()[None, None], it.sigma)
        xo = files.to_numpy(xo.clamp(0, 1))
        base["oracle"].append((metrics.psnr(xo, it.x), metrics.ssim(xo, it.x), 1.0, time.perf_counter() - t0))
    for name, vals in base.items():
        results[name] = vals

    for name in args.configs.split(","):
        opts = {"solver": args.solver, "seed": 0, "downscale": "1", **CONFIGS[name]}
        subset = items[: args.ddpm_limit] if name.startswith("ddpm") else items
        vals, kept, sigmas = [], [], []
        extra = {f: [] for f in args.also_final.split(",") if f}
        with progress.task_bar(name, total=len(subset), unit="img") as update:
            for it in subset:
                if opts.get("method") == "alternating":  # the classical MAP_{x,k} baseline, same final solver
                    t0 = time.perf_counter()
                    x, k, _ = alternating.run(tensor(it.y), alternating.AlternatingSettings(), solver=args.solver, sigma=FINAL_SIGMA)
                    x, k, seconds = files.to_numpy(x), k.double()[0, 0].numpy(), time.perf_counter() - t0
                else:
                    settings = BlindSettings(**opts)
                    res = deblur_image(tensor(it.y), model, schedule, solver, settings)
                    x, k, seconds = files.to_numpy(res.x), res.estimate.k.double()[0, 0].numpy(), res.seconds
                    kept.append(res.estimate.kept)
                    sigmas.append(res.sigma)
                    for f, fvals in extra.items():
                        # the same kernel and final noise level, finished by another solver
                        xf = files.to_numpy(final_image(tensor(it.y), res.estimate, res.sigma, solver,
                                                        dataclasses.replace(settings, final_solver=f)))
                        fvals.append((metrics.psnr(xf, it.x), metrics.ssim(xf, it.x), metrics.mnc(k, it.k), seconds))
                vals.append((metrics.psnr(x, it.x), metrics.ssim(x, it.x), metrics.mnc(k, it.k), seconds))
                update(1, psnr=vals[-1][0], mnc=vals[-1][2])
        results[name + (f" (first {len(subset)})" if len(subset) < len(items) else "")] = vals
        for f, fvals in extra.items():
            if fvals:
                results[f"{name}, final solver {f}"] = fvals
        cols = list(zip(*vals))
        print(f"{name}: PSNR {statistics.fmean(cols[0]):.3f} SSIM {statistics.fmean(cols[1]):.3f} MNC {statistics.fmean(cols[2]):.3f}"
              f" {statistics.fmean(cols[3]):.2f} s/image (n={len(vals)})", flush=True)
        if "classical" in kept:
            notes.append(f"{name}: the classical candidate was kept on {kept.count('classical')} of {len(kept)} images")
        if sigmas:
            notes.append(f"{name}: final deconvolution sigma median {statistics.median(sigmas):.4f} (range {min(sigmas):.4f}-{max(sigmas):.4f})")

    for name, vals in results.items():
        cols = list(zip(*vals))
        rows.append([name, len(vals)] + [f"{statistics.fmean(c):.3f}" if c and c[0] == c[0] else "-" for c in cols[:3]] + [f"{statistics.fmean(cols[3]):.2f}"])
    progress.print_table(
        f"Blind deblurring on {len(items)} val crops (256x256 RGB, borodenko 64x64, sigma 0.01), solver {args.solver}",
        ["config", "n", "PSNR", "SSIM", "MNC", "s/image"], rows,
    )
    for note in notes:
        print(note)
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
