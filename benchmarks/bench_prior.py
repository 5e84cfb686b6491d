"""Kernel prior benchmark: do samples of p(k | y) depend on y? (issue: the prior must carry its weight)

    python benchmarks/bench_prior.py [--limit 50] [--weights kernel-diff-autocorr,kernel-diff-borodenko]
                                     [--lai-limit 12] [--pipelines 25] [--threads 2] [--json OUT]

1. Unguided samples (DDIM 25 steps, seed 0; no guidance, no Stage II, no classical step) on the
   val protocol of ``bench_deblur.py`` (256x256 RGB crops of ../shared/data/val, ``borodenko``
   64x64 kernels from the held-out seed 2023, sigma 0.01): mean MNC with the true kernel, the same
   taking the better of the sample and its 180-degree rotation (the cue cannot tell them apart;
   guidance can), and random ``borodenko`` kernels (the chance level).
2. The same on the four recorded camera-shake kernels of ../shared/data/lai-uniform/kernels
   (31-75 px; kernels over 60 px are resampled to 60 px), each blurring the first ``--lai-limit``
   val crops (sigma 0.01).
3. ``--pipelines N``: the blind pipelines on the first N crops through ``bench_deblur.py``
   (guided samples without Stage II, the paper's pipeline, the default, the default's unguided
   variant, the classical alternating method), per weights file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("COLUMNS", "150")

from kdiff_cli import files, plugins, progress  # noqa: E402
from kdiff_cli.maths import cues, lookup, metrics  # noqa: E402
from kdiff_cli.blind.estimator import load_kernel_model  # noqa: E402
from kdiff_cli.maths.ops import conv2d, add_noise  # noqa: E402
from common import VAL_DIR, load_items  # noqa: E402

LAI_KERNELS = VAL_DIR.parent / "lai-uniform" / "kernels"
#: the bench_deblur.py configurations of section 3
PIPELINES = ["ddim25-noStageII", "reblur Stage II (paper)", "default (ddim 25 + alternating + classical candidate)",
             "unguided + classical candidate", "alternating method (no diffusion)"]


def lai_kernels(folder: Path, canvas: int = 64, fit: int = 60) -> list[np.ndarray]:
    """The recorded kernels (convolution orientation), resampled to at most ``fit`` px, centred by
    mass on a ``canvas`` x ``canvas`` grid, sum 1."""
    from scipy import ndimage

    out = []
    for path in sorted(folder.glob("*.png")):
        k = files.read_image(path)[0].astype(np.float64)
        k = k.mean(axis=-1) if k.ndim == 3 else k
        if max(k.shape) > fit:
            k = np.clip(ndimage.zoom(k, fit / max(k.shape), order=1), 0, None)
        k = k / k.sum()
        r, c = ndimage.center_of_mass(k)
        big = np.zeros((canvas, canvas))
        r0 = min(max(int(round(canvas // 2 - r)), 0), canvas - k.shape[0])
        c0 = min(max(int(round(canvas // 2 - c)), 0), canvas - k.shape[1])
        big[r0 : r0 + k.shape[0], c0 : c0 + k.shape[1]] = k
        out.append(big / big.sum())
    return out


def unguided_mnc(model, schedule, ys: list[torch.Tensor], ks: list[np.ndarray], seed: int, batch: int = 10,
                 sampler: str = "unguided", **options):
    """Per item: (MNC, MNC of the better of k and k rotated 180 degrees), and seconds per sample.

    ``sampler``: ``unguided`` (DDIM from noise) or ``lookup`` (DDIM from the kernel bank's nearest
    kernel, noised to the sampler's default strength), both without guidance; ``options`` go to the
    sampler (``rank="cue"``: the lookup's candidates in the cue's order)."""
    plugin = plugins.get("sampler", sampler)
    g = torch.Generator().manual_seed(seed)
    scores, t0 = [], time.perf_counter()
    for i in range(0, len(ys), batch):
        y = torch.cat(ys[i : i + batch])
        with torch.no_grad():
            k_hat = plugin.sample(model, schedule, y, steps=25, guidance=None, generator=g, **options).k
        scores += [_both(kh, kt) for kh, kt in zip(k_hat[:, 0].double().numpy(), ks[i : i + batch])]
    return scores, (time.perf_counter() - t0) / max(len(ys), 1)


def _both(kh: np.ndarray, kt: np.ndarray) -> tuple[float, float]:
    a = metrics.mnc(kh, kt)
    return a, max(a, metrics.mnc(kh[::-1, ::-1].copy(), kt))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=VAL_DIR)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--lai-limit", type=int, default=12)
    ap.add_argument("--weights", default="kernel-diff-autocorr,kernel-diff-borodenko")
    ap.add_argument("--pipelines", type=int, default=0, help="also run the blind pipelines on the first N crops")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    items = load_items(args.data, args.limit)
    ys = [files.to_tensor(it.y) for it in items]
    ks = [it.k for it in items]
    rng = np.random.default_rng(99)  # random kernels from the benchmark's generator: the chance level
    random_k = plugins.get("generator", "borodenko").sample(rng, len(items), 64)
    chance = statistics.fmean(metrics.mnc(kr, k) for kr, k in zip(random_k, ks))

    lai = lai_kernels(LAI_KERNELS) if LAI_KERNELS.is_dir() else []
    lai_ys, lai_ks = [], []
    g = torch.Generator().manual_seed(2023)
    for k in lai:
        kt = torch.from_numpy(k).float()[None, None]
        for it in items[: args.lai_limit]:
            lai_ys.append(add_noise(conv2d(files.to_tensor(it.x), kt), 0.01, g).clamp(0, 1))
            lai_ks.append(k)
    lai_chance = statistics.fmean(metrics.mnc(random_k[i % len(random_k)], k) for i, k in enumerate(lai_ks)) if lai_ks else float("nan")

    rows, results = [["random borodenko kernels", len(items), f"{chance:.3f}", "-", f"{lai_chance:.3f}" if lai_ks else "-", "-"]], {}
    bank = lookup.default_bank(64)  # built once, outside the timings

    def nearest(images, kernels):
        found = bank.search(cues.gradient_autocorrelation(torch.cat(images), 64)).k[:, 0]
        return [_both(kk.double().numpy(), k) for kk, k in zip(found, kernels)]

    s, s_lai = nearest(ys, ks), nearest(lai_ys, lai_ks) if lai_ks else []
    rows.append(["the kernel bank's nearest kernel (no diffusion)", len(s), f"{statistics.fmean(a for a, _ in s):.3f}",
                 f"{statistics.fmean(b for _, b in s):.3f}", f"{statistics.fmean(a for a, _ in s_lai):.3f}" if s_lai else "-", "-"])
    results["bank"] = {"val": s, "lai": s_lai}
    for w in args.weights.split(","):
        model, schedule = load_kernel_model(w, torch.device("cpu"))
        cond = getattr(model, "condition", "image")
        labels = {"unguided": "from noise", "lookup-cue": "from the bank's nearest kernel (lookup, cue order)",
                  "lookup": f"from the bank kernel the prior ranks first of the nearest {lookup.RANK_POOL} (lookup)"}
        for name in ("unguided", "lookup-cue", "lookup") if cond == "autocorr" else ("unguided",):
            sampler, options = ("lookup", {"rank": "cue"}) if name == "lookup-cue" else (name, {})
            s, sec = unguided_mnc(model, schedule, ys, ks, args.seed, sampler=sampler, **options)
            s_lai, _ = unguided_mnc(model, schedule, lai_ys, lai_ks, args.seed, sampler=sampler, **options) if lai_ks else ([], 0.0)
            results[f"{w}/{name}"] = {"val": s, "lai": s_lai, "seconds_per_sample": sec, "condition": cond}
            label = labels[name]
            rows.append([f"{w} ({cond}) unguided, {label}", len(s), f"{statistics.fmean(a for a, _ in s):.3f}",
                         f"{statistics.fmean(b for _, b in s):.3f}",
                         f"{statistics.fmean(a for a, _ in s_lai):.3f}" if s_lai else "-", f"{sec:.2f}"])
    progress.print_table(
        f"Unguided kernel samples (DDIM 25, no Stage II) on {len(items)} val crops (borodenko 64x64, seed 2023, sigma 0.01)"
        f" and on {len(lai_ks)} crops blurred by the {len(lai)} recorded lai-uniform kernels",
        ["prior", "n", "MNC val", "MNC val (k or k rot180)", "MNC lai kernels", "s/sample"], rows,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.pipelines > 0:
        import bench_deblur

        for w in args.weights.split(","):
            print(f"\nblind pipelines with {w}:")
            bench_deblur.main(["--data", str(args.data), "--limit", str(args.pipelines), "--ddpm-limit", "0",
                               "--weights", w, "--threads", str(args.threads), "--configs", ",".join(PIPELINES)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
