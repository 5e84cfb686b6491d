"""Non-blind solver benchmark: quality with the true kernel, speed, robustness to kernel errors.

    python benchmarks/bench_nonblind.py [--quick] [--limit N] [--solvers wiener,dwdn,unrolled]
                                        [--data $KDIFF_DATA/val] [--no-baselines] [--json OUT]

Items follow the BSD100 protocol of ``kdiff eval`` (:func:`kdiff_cli.maths.protocol.synthesize`, seed
2023) on the validation photos: per image a seeded 256x256 crop, a seeded 64x64 ``borodenko``
kernel, symmetric-boundary blur, Gaussian noise sigma = 0.01, stored at 16 bits. Table columns:

* PSNR / SSIM (mean over the images) of each solver given the true kernel and sigma, beside the
  blurred input and scikit-image's ``restoration.wiener`` (best balance of a small grid, chosen on
  the mean PSNR), ``unsupervised_wiener`` and ``richardson_lucy`` (30 iterations) on the same
  inputs (per channel, true kernel);
* ``PSNR k~0.8``: the PSNR when the kernel is perturbed until its MNC with the truth is 0.80
  (mass spread over the kernel's neighbourhood: ``(1 - a) k + a n``, ``n`` smooth positive noise on
  the dilated support, ``a`` found by bisection), i.e. robustness to estimated kernels;
* seconds per 256x256 RGB image with a 64x64 kernel: forward (no grad) and forward + backward
  w.r.t. ``k`` (parameters frozen, as in guidance); min and median of ``--reps`` runs, 2 threads
  (the min is the least disturbed by other processes on a shared machine).

Learned solvers without weights show "no weights" (their speed is still measured, untrained).
``--quick``: 8 images, fewer timing runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("COLUMNS", "150")  # the table is wide; rich reads this when not on a terminal

from kdiff_cli import files, plugins, progress
from kdiff_cli.maths import metrics, ops
from kdiff_cli.errors import KdiffError  # noqa: E402
from kdiff_cli.items import Item  # noqa: E402
from kdiff_cli.solvers import load_solver  # noqa: E402
from common import PROTOCOL, VAL_DIR, load_items  # noqa: E402

BALANCES = (0.01, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0)  # skimage wiener grid (the best is near 30)
RL_ITERS = 30
TARGET_MNC = 0.80


# --------------------------------------------------------------------------- data


def perturb_kernel(k: np.ndarray, rng: np.random.Generator, target: float = TARGET_MNC) -> np.ndarray:
    """``normalise((1 - a) k + a n)`` with MNC to ``k`` equal to ``target`` (bisection on ``a``).

    ``n``: Gaussian-smoothed positive noise on the kernel's support dilated by 4 pixels.
    """
    from scipy import ndimage

    from scipy.signal import fftconvolve

    support = ndimage.binary_dilation(k > 0.05 * k.max(), iterations=4)
    n = ndimage.gaussian_filter(rng.random(k.shape), 1.5) * support
    n = n / n.sum()
    k_flip = k[::-1, ::-1]

    def at(a: float) -> tuple[np.ndarray, float]:
        kp = (1 - a) * k + a * n
        kp = kp / kp.sum()  # MNC as ops.mnc (max over all shifts), by FFT for speed
        return kp, float(fftconvolve(kp, k_flip).max() / (np.linalg.norm(kp) * np.linalg.norm(k)))

    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        _, m = at(mid)
        lo, hi = (mid, hi) if m > target else (lo, mid)
    return at((lo + hi) / 2)[0]


# --------------------------------------------------------------------------- methods


def score(x: np.ndarray, item: Item) -> tuple[float, float]:
    return metrics.psnr(x, item.x), metrics.ssim(x, item.x)


def run_solver(model: torch.nn.Module, items, kernels) -> list[tuple[float, float]]:
    out = []
    for item, k in zip(items, kernels):
        y = files.to_tensor(item.y)
        kt = torch.from_numpy(k.astype(np.float32))[None, None]
        with torch.no_grad():
            x = model(y, kt, item.sigma)
        out.append(score(files.to_numpy(x.clamp(0, 1)), item))
    return out


def per_channel(fn, y: np.ndarray) -> np.ndarray:
    """Apply a 2-D scikit-image routine to each channel, in float64."""
    y = y.astype(np.float64)
    return np.stack([fn(y[..., c]) for c in range(y.shape[2])], axis=2)


def skimage_baselines(items) -> dict[str, list[tuple[float, float]]]:
    from skimage import restoration

    rows: dict[str, list[tuple[float, float]]] = {}
    best = None
    for b in BALANCES:
        res = [score(per_channel(lambda c: restoration.wiener(c, it.k, b), it.y), it) for it in items]
        if best is None or np.mean([r[0] for r in res]) > np.mean([r[0] for r in best[1]]):
            best = (b, res)
    rows[f"skimage wiener (balance {best[0]:g})"] = best[1]
    rng = np.random.default_rng(0)
    rows["skimage unsupervised_wiener"] = [
        score(per_channel(lambda c: restoration.unsupervised_wiener(c, it.k, rng=rng)[0], it.y), it) for it in items
    ]
    rows[f"skimage richardson_lucy ({RL_ITERS} it)"] = [
        score(per_channel(lambda c: restoration.richardson_lucy(c, it.k, num_iter=RL_ITERS, filter_epsilon=1e-12), it.y), it) for it in items
    ]
    return rows


def timing(model: torch.nn.Module, reps: int) -> list[tuple[float, float]]:
    """(min, median) seconds of forward and of forward+backward (w.r.t. k), one 256x256 RGB image."""
    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 3, 256, 256, generator=g)
    k = torch.rand(1, 1, 64, 64, generator=g)
    k = k / k.sum()

    def fwd():
        with torch.no_grad():
            model(y, k, 0.01)

    def fwd_bwd():
        kk = k.clone().requires_grad_(True)
        model(y, kk, 0.01).square().sum().backward()

    out = []
    for fn in (fwd, fwd_bwd):
        fn()  # warm-up
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out.append((min(ts), statistics.median(ts)))
    return out


# --------------------------------------------------------------------------- main


def mean(rows, i: int) -> float:
    return float(np.mean([r[i] for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=VAL_DIR, help="folder of sharp photos")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos (default: all)")
    ap.add_argument("--solvers", default=None, help="comma-separated solvers (default: all registered)")
    ap.add_argument("--weights", action="append", default=[], help="SOLVER=PATH weights (repeatable)")
    ap.add_argument("--no-baselines", action="store_true", help="skip the scikit-image baselines")
    ap.add_argument("--reps", type=int, default=7, help="timing runs per measurement")
    ap.add_argument("--quick", action="store_true", help="8 images, 3 timing runs")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    limit = 8 if args.quick and args.limit is None else args.limit
    reps = 3 if args.quick else args.reps
    names = args.solvers.split(",") if args.solvers else plugins.names("solver")
    given = dict(w.split("=", 1) for w in args.weights)

    t0 = time.perf_counter()
    items = load_items(args.data, limit)
    perturbed = [perturb_kernel(it.k, np.random.default_rng([PROTOCOL["seed"], i])) for i, it in enumerate(items)]
    mnc_p = float(np.mean([float(ops.mnc(torch.from_numpy(p), torch.from_numpy(it.k))) for p, it in zip(perturbed, items)]))
    print(f"{len(items)} images from {args.data} ({time.perf_counter() - t0:.1f} s); perturbed kernels: mean MNC {mnc_p:.3f}")

    header = ["method", "PSNR", "SSIM", f"PSNR k~{TARGET_MNC:.1f}", "s fwd min / med", "s fwd+bwd(k) min / med"]
    table: list[list[str]] = []
    results: dict[str, dict] = {}
    blurred = [score(it.y, it) for it in items]
    table.append(["blurred input", f"{mean(blurred, 0):.2f}", f"{mean(blurred, 1):.4f}", "", "", ""])
    results["blurred"] = {"psnr": mean(blurred, 0), "ssim": mean(blurred, 1)}
    solver_rows: list[list[str]] = []
    # the solvers (and their timings) run before scikit-image: its BLAS threads keep spinning after
    # use and would slow torch's threads down
    for name in names:
        try:
            model = load_solver(name, given.get(name), "cpu")
        except KdiffError as e:
            if "weights" not in str(e):
                raise SystemExit(f"error: {e}")
            # no weights: quality cannot be measured, speed can (an untrained network of the same shape)
            untrained = plugins.get("solver", name)().eval().requires_grad_(False)
            fwd, fwd_bwd = timing(untrained, reps)
            solver_rows.append([name, "no weights", "", "", f"{fwd[0]:.3f} / {fwd[1]:.3f}", f"{fwd_bwd[0]:.3f} / {fwd_bwd[1]:.3f}"])
            results[name] = {"error": str(e), "s_fwd_min": fwd[0], "s_fwd_median": fwd[1],
                             "s_fwd_bwd_min": fwd_bwd[0], "s_fwd_bwd_median": fwd_bwd[1]}
            continue
        t0 = time.perf_counter()
        true = run_solver(model, items, [it.k for it in items])
        pert = run_solver(model, items, perturbed)
        fwd, fwd_bwd = timing(model, reps)
        solver_rows.append([name, f"{mean(true, 0):.2f}", f"{mean(true, 1):.4f}", f"{mean(pert, 0):.2f}",
                      f"{fwd[0]:.3f} / {fwd[1]:.3f}", f"{fwd_bwd[0]:.3f} / {fwd_bwd[1]:.3f}"])
        results[name] = {"psnr": mean(true, 0), "ssim": mean(true, 1), "psnr_perturbed": mean(pert, 0),
                         "s_fwd_min": fwd[0], "s_fwd_median": fwd[1], "s_fwd_bwd_min": fwd_bwd[0], "s_fwd_bwd_median": fwd_bwd[1]}
        print(f"{name}: {time.perf_counter() - t0:.1f} s")
    if not args.no_baselines:
        t0 = time.perf_counter()
        for label, rows in skimage_baselines(items).items():
            table.append([label, f"{mean(rows, 0):.2f}", f"{mean(rows, 1):.4f}", "", "", ""])
            results[label] = {"psnr": mean(rows, 0), "ssim": mean(rows, 1)}
        print(f"scikit-image baselines: {time.perf_counter() - t0:.1f} s")
    table += solver_rows
    progress.print_table(
        f"non-blind solvers, {len(items)} val images, 256x256, 64x64 borodenko, sigma 0.01 (true kernel)", header, table
    )
    if args.json:
        args.json.write_text(json.dumps({"protocol": PROTOCOL, "images": len(items), "results": results}, indent=2))


if __name__ == "__main__":
    main()
