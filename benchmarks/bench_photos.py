"""Blind deblurring at photo scale: lai-uniform with its recorded kernels, and figures of real blurred photos.

    python benchmarks/bench_photos.py [--set lai|val|val-shake] [--photos all|N|name,name] [--kernels 1,2,3,4] [--noise 0]
                                      [--blur encoded|linear] [--configs default,...] [--alternating N]
                                      [--real-figures DIR] [--real NAMES|all] [--threads 2] [--json OUT]
    python benchmarks/bench_photos.py --coarse [--set ...] [--photos ...]    # the coarse passes alone

**lai-uniform** ($KDIFF_DATA/lai-uniform: 15 sharp photos ~680 x 1024, 4 recorded camera-shake
kernels of 31-75 px): each photo blurred by each kernel with kdiff's own operator (symmetric
boundary, kernel centre at size//2, per channel), ``--noise`` Gaussian noise added, rounded to 8
bits. ``--blur encoded`` (default) blurs the stored sRGB values as the published set does;
``--blur linear`` blurs in linear light and encodes back, as a camera does. Scores: PSNR and SSIM
after the best integer alignment within 10 px with a 15 px border cropped (an estimate is defined
up to a shift), kernel MNC (the normalised cross-correlation peak over all shifts), seconds per
photo; the success rate is the share of photos with error ratio <= 3 (Levin et al. 2009: aligned
SSD of the result over the aligned SSD of the same solver given the true kernel). Rows: the
blurred input, the true kernel with the solver the default's final image uses on photos (``hqs``;
``--also-final S`` adds the true kernel with ``S`` and each config's estimates finished by ``S``), each ``--configs`` entry of ``kdiff deblur``'s
pipeline, and ``--method alternating`` (its CLI defaults) on the first ``--alternating`` items.

**val** (``--set val``, for tuning: the benchmark sets stay held apart): the validation photos
($KDIFF_DATA/val, 481 x 321), photo j blurred by its own ``boracchi-foi`` camera-shake kernel (seed
2024 + j, side 31, 51 or 75 px in turn, the range of lai-uniform's), scored the same way. Those
kernels' blur is compact (extent, the side of the box holding the pixels above 5% of the peak, 3
to 14 px). ``--set val-shake`` draws instead, for photo j, the first of a seeded batch of long
``boracchi-foi`` trajectories whose extent is 60-87% of the side (18-27, 31-44 or 45-65 px: the
extents of lai-uniform's recorded kernels are 21, 41, 45 and 65 px), for tuning large blur on
small photos without touching lai-uniform.

**coarse passes** (``--coarse``, instead of the deblurring table): the photo-scale plan alone
(:func:`kdiff_cli.blind.scale.plan`, no Stage I), for tuning the coarse estimate that sets the
scale and the classical candidate: per photo, every pass's kernel upsampled to full resolution and
scored by MNC, its extent, whether it spread over its canvas, the pass the plan chose, and the
mean MNC of the chosen and of the best pass.

**real-blur** ($KDIFF_DATA/real-blur, no ground truth): ``--real-figures DIR`` writes
``DIR/<name>.jpg``, the input beside the default's output with the estimated kernel inset
(top-left of the output, scaled to the peak), for the photos named by ``--real``.
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

from kdiff_cli import files, progress  # noqa: E402
from kdiff_cli.blind.estimator import (DEFAULT_WEIGHTS, PHOTO_FINAL_SOLVER, BlindSettings, deblur_image, final_image,  # noqa: E402
                                       load_kernel_model, plan_scale)
from kdiff_cli.maths import alternating, camera, metrics, ops  # noqa: E402
from kdiff_cli.maths.deconv import solve_tiled  # noqa: E402
from kdiff_cli.blind.final import solver_tile  # noqa: E402
from kdiff_cli.solvers import cached_solver, load_solver  # noqa: E402
from common import DATA_DIR  # noqa: E402

LAI = DATA_DIR / "lai-uniform"
REAL = DATA_DIR / "real-blur"
#: the six photos the README shows (a night shot, text, a face, ...)
README_PHOTOS = "boat1,book1,text7,car3,night5,face"

#: name -> BlindSettings overrides (the first is `kdiff deblur`'s default)
CONFIGS = {
    "default": {},
    "linear": {"linear": True},
    "no-linear": {"linear": False},
    "reblur choice (previous MAP_k rule)": {"choice": "reblur"},
    "no classical candidate": {"classical": False},
    "unguided": {"guidance": False},
    "one coarse scale": {"coarse_scales": 1},
    "guidance scale 1": {"guidance_scale": 1.0},
    "discrepancy 1": {"discrepancy": 1.0},
    "paper's pipeline (latent loss)": {"refiner": "reblur", "classical": False},
    "no kernel clean-up (previous release)": {"kernel_threshold": 0.0},
    "no lights floor (previous release)": {"lights_sigma": 0.0},
    "no polish (previous release)": {"polish": 0},
}
#: --set val: generated kernels of the sizes of lai-uniform's (31 to 75 px), one per photo in turn
VAL_KERNEL_SIZES = (31, 51, 75)
#: --set val: seed of the first photo's kernel (the next photo's is seed + 1, ...); held apart from training's
VAL_KERNEL_SEED = 2024
#: --set val-shake: the kept kernel's extent lies in this fraction of its side
SHAKE_EXTENT = (0.60, 0.87)


def lai_kernel(i: int) -> np.ndarray:
    """Recorded kernel ``i`` (1-4), gray, summing to 1 (the files are in convolution orientation)."""
    a = files.read_image(LAI / "kernels" / f"kernel_{i:02d}.png")[0].astype(np.float64)
    a = a.mean(-1) if a.ndim == 3 else a
    return a / a.sum()


def val_kernel(j: int) -> np.ndarray:
    """The ``j``-th tuning kernel of ``--set val``: ``boracchi-foi`` camera shake, seed
    :data:`VAL_KERNEL_SEED` + j, side ``VAL_KERNEL_SIZES[j % 3]``, summing to 1."""
    from kdiff_cli import plugins

    gen = plugins.get("generator", "boracchi-foi")
    size = VAL_KERNEL_SIZES[j % len(VAL_KERNEL_SIZES)]
    k = gen.sample(np.random.default_rng(VAL_KERNEL_SEED + j), 1, size)[0].astype(np.float64)
    return k / k.sum()


def shake_kernel(j: int) -> np.ndarray:
    """The ``j``-th tuning kernel of ``--set val-shake``: the first of 64 ``boracchi-foi`` kernels
    (seed :data:`VAL_KERNEL_SEED` + j, side ``VAL_KERNEL_SIZES[j % 3]``, trajectory length 4 x the
    side) whose extent is within :data:`SHAKE_EXTENT` of the side, summing to 1."""
    import torch

    from kdiff_cli import plugins
    from kdiff_cli.blind.scale import kernel_extent

    size = VAL_KERNEL_SIZES[j % len(VAL_KERNEL_SIZES)]
    batch = plugins.get("generator", "boracchi-foi").sample(np.random.default_rng(VAL_KERNEL_SEED + j), 64, size, length=4.0 * size)
    lo, hi = (round(f * size) for f in SHAKE_EXTENT)
    for k in batch:
        if lo <= kernel_extent(torch.from_numpy(k)) <= hi:
            return k.astype(np.float64) / k.sum()
    raise RuntimeError(f"no val-shake kernel of extent {lo}-{hi} px among 64 (seed {VAL_KERNEL_SEED + j})")


def photo_items(args) -> list[tuple[str, int, Path, np.ndarray]]:
    """(photo name, kernel number, sharp photo path, kernel) of the benchmark's set: ``lai`` (every
    photo x every ``--kernels``) or ``val`` (the validation photos, each with its own generated
    kernel: tuning without touching the benchmarks)."""
    if args.set in ("val", "val-shake"):
        paths = sorted(p for p in (DATA_DIR / "val").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        chosen = select([p.stem for p in paths], args.photos)
        make = val_kernel if args.set == "val" else shake_kernel
        return [(p.stem, j, p, make(j)) for j, p in enumerate(paths) if p.stem in chosen]
    names = select(sorted(p.stem for p in (LAI / "sharp").glob("*.png")), args.photos)
    kernels = {int(v): lai_kernel(int(v)) for v in args.kernels.split(",")}
    return [(n, i, LAI / "sharp" / f"{n}.png", kernels[i]) for n in names for i in kernels]


def blur_photo(x: np.ndarray, k: np.ndarray, noise: float, blur: str, seed: int) -> np.ndarray:
    """``x`` (H, W, 3) in [0, 1] blurred by ``k``, noise added, rounded to 8 bits."""
    xt = torch.from_numpy(x).permute(2, 0, 1)[None].double()
    if blur == "linear":
        xt = camera.to_linear(xt)
    y = ops.conv2d(xt, torch.from_numpy(k)[None, None])
    if blur == "linear":
        y = camera.to_encoded(y)
    if noise:
        y = y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return (y.clamp(0, 1) * 255).round().div(255)[0].permute(1, 2, 0).numpy()


def truth_row(name: str) -> str:
    """The true-kernel row a row's error ratio is taken against: the same final solver's."""
    for marker in (", final solver ", "true kernel, "):
        if marker in name:
            return f"true kernel, {name.split(marker)[-1]}"
    return "true kernel"


def select(names: list[str], spec: str) -> list[str]:
    if spec == "all":
        return names
    if spec.isdigit():
        return names[: int(spec)]
    chosen = spec.split(",")
    missing = [n for n in chosen if n not in names]
    if missing:
        raise SystemExit(f"unknown photo {missing[0]!r}; known: {', '.join(names)}")
    return chosen


def score(x: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(aligned PSNR, aligned SSIM, aligned SSD)."""
    return (metrics.psnr_aligned(x, ref), metrics.ssim_aligned(x, ref),
            metrics.best_aligned_ssd(x, ref, metrics.ALIGN_MAX_SHIFT, metrics.ALIGN_BORDER))


def lai_benchmark(args, model, schedule, solver) -> dict:
    listed = photo_items(args)
    items = [(n, i) for n, i, _, _ in listed]
    ks = {(n, i): k for n, i, _, k in listed}
    sigma_final = max(args.noise, 0.01)
    rows: dict[str, list[dict]] = {"blurred": [], "true kernel": []}
    finals = [f for f in args.also_final.split(",") if f]
    cache = {}
    for n, i, path, _ in listed:
        x = files.read_image(path)[0][..., :3]
        y = blur_photo(x, ks[n, i], args.noise, args.blur, seed=len(cache))
        cache[(n, i)] = (x, y)
        rows["blurred"].append(dict(zip(("psnr", "ssim", "ssd"), score(y, x)), mnc=float("nan"), seconds=0.0))
        # the true kernel with the solver the default's final image uses on photos, and with each --also-final
        for f, row in [(PHOTO_FINAL_SOLVER, "true kernel")] + [(f, f"true kernel, {f}") for f in finals]:
            with torch.no_grad():
                xo = solve_tiled(cached_solver(f, None, "cpu"), files.to_tensor(y), torch.from_numpy(ks[n, i]).float()[None, None],
                                 sigma_final, tile=solver_tile(f)[0])  # tiled as kdiff deblur's final step
            rows.setdefault(row, []).append(
                dict(zip(("psnr", "ssim", "ssd"), score(files.to_numpy(xo.clamp(0, 1)), x)), mnc=1.0, seconds=0.0))
    configs = [c for c in args.configs.split(",") if c]
    if args.alternating:
        configs.append("alternating")
    for name in configs:
        subset = items[: args.alternating] if name == "alternating" else items
        vals = []
        extra: dict[str, list[dict]] = {f: [] for f in finals if name != "alternating"}
        with progress.task_bar(name, total=len(subset), unit="photo") as update:
            for n, i in subset:
                x, y = cache[(n, i)]
                t0 = time.perf_counter()
                if name == "alternating":
                    xe, ke, _ = alternating.run(files.to_tensor(y), alternating.AlternatingSettings(), sigma=0.03)
                    info = {}
                else:
                    settings = BlindSettings(**CONFIGS[name])
                    res = deblur_image(files.to_tensor(y), model, schedule, solver, settings)
                    xe, ke = res.x, res.estimate.k
                    info = {"kept": res.estimate.kept, "plan": res.estimate.plan, "scores": res.estimate.scores,
                            "fallback_scores": res.estimate.fallback_scores, "polish": res.estimate.polish}
                seconds = time.perf_counter() - t0
                # --also-final: the same estimate finished by another solver (not in the seconds)
                finished = {f: final_image(files.to_tensor(y), res.estimate, res.sigma, solver,
                                           dataclasses.replace(settings, final_solver=f)) for f in extra}
                common = dict(mnc=metrics.mnc(ke, ks[n, i]), seconds=seconds, photo=n, kernel=i, **info)
                for f, xf in finished.items():
                    extra[f].append(dict(zip(("psnr", "ssim", "ssd"), score(files.to_numpy(xf), x)), **common))
                p, s, ssd = score(files.to_numpy(xe), x)
                vals.append(dict(psnr=p, ssim=s, ssd=ssd, **common))
                update(1, psnr=p, mnc=vals[-1]["mnc"])
        rows[name + (f" (first {len(subset)})" if len(subset) < len(items) else "")] = vals
        print_row(name, vals, rows["blurred"], rows[truth_row(name)])
        for f, fvals in extra.items():
            rows[f"{name}, final solver {f}"] = fvals
            print_row(f"{name}, final solver {f}", fvals, rows["blurred"], rows[f"true kernel, {f}"])
    return rows


def first_settings(args) -> BlindSettings:
    """The settings of the first ``--configs`` entry (``default`` when none is given): the one
    config of ``--coarse`` and of the real-blur figures."""
    names = [c for c in args.configs.split(",") if c]
    return BlindSettings(**CONFIGS[names[0] if names else "default"])


def coarse_benchmark(args, canvas: int, solver) -> dict:
    """``--coarse``: the photo-scale plan alone (``kdiff_cli.blind.estimator.plan_scale`` with the first
    config's settings, no Stage I): every coarse pass's kernel brought to full resolution and scored
    by MNC against the true kernel, its extent and whether it spread over its canvas; the pass the
    plan chose, the best pass (the oracle of the choice) and whether the plan found no blur."""
    from kdiff_cli.blind import scale

    settings = first_settings(args)
    listed = photo_items(args)
    items = []
    with progress.task_bar("coarse passes", total=len(listed), unit="photo") as update:
        for j, (n, i, path, k) in enumerate(listed):
            y = files.to_tensor(blur_photo(files.read_image(path)[0][..., :3], k, args.noise, args.blur, seed=j))
            t0 = time.perf_counter()
            p = plan_scale(camera.to_linear(y) if settings.linear else y, canvas, solver, settings)
            seconds = time.perf_counter() - t0
            if p.how != "coarse":
                raise SystemExit(f"{n}: the plan is {p.how!r}, not a coarse pass (photos need a short side >= {scale.CROP_SIDE} px)")
            passes = p.passes if p.passes is not None else {p.coarse_factor: p.coarse_k}  # streaks: one kernel
            per = {}
            for f, kc in sorted(passes.items()):
                full = scale.to_scale(kc, f, 1, kc.shape[-1] * f + 1)
                per[f] = {"mnc": metrics.mnc(full.double()[0, 0].numpy(), k), "extent": scale.kernel_extent(kc) * f,
                          "spread": scale.spread(kc)}
            items.append({"photo": n, "kernel": i, "true_extent": scale.kernel_extent(torch.from_numpy(k)), "passes": per,
                          "chosen": p.coarse_factor, "mnc": per[p.coarse_factor]["mnc"], "oracle": max(v["mnc"] for v in per.values()),
                          "spread": p.spread, "streaks": p.streaks, "scores": p.coarse_scores, "seconds": seconds})
            update(1, mnc=items[-1]["mnc"])
    n = len(items)
    ranked = [[v["mnc"] for _, v in sorted(it["passes"].items())] for it in items]
    out = {"n": n, "mnc": statistics.fmean(it["mnc"] for it in items), "oracle": statistics.fmean(it["oracle"] for it in items),
           "finest": statistics.fmean(r[0] for r in ranked),
           "coarser": statistics.fmean(r[1] for r in ranked if len(r) > 1) if any(len(r) > 1 for r in ranked) else float("nan"),
           "spread": sum(it["spread"] for it in items), "streaks": sum(it["streaks"] is not None for it in items),
           "seconds": statistics.fmean(it["seconds"] for it in items)}
    print("\n| photo | kernel | true extent | pass factors | MNC per pass | extent per pass | chosen | spread |")
    print("|---|---|---|---|---|---|---|---|")
    for it in items:
        fs = sorted(it["passes"])
        print(f"| {it['photo']} | {it['kernel']} | {it['true_extent']} | {', '.join(map(str, fs))} | "
              f"{', '.join(format(it['passes'][f]['mnc'], '.3f') for f in fs)} | {', '.join(str(it['passes'][f]['extent']) for f in fs)} | "
              f"{it['chosen']} | {'yes' if it['spread'] else ''} |")
    print(f"\ncoarse passes ({args.set}, {n} photos): chosen MNC {out['mnc']:.3f}, best pass {out['oracle']:.3f}, finest pass "
          f"{out['finest']:.3f}, coarser pass {out['coarser']:.3f}; no blur found on {out['spread']}, streak kernels on "
          f"{out['streaks']}; {out['seconds']:.1f} s/photo")
    return {"summary": out, "items": items}


def summary(vals: list[dict], blurred: list[dict], truth: list[dict]) -> dict:
    n = len(vals)
    ratios = [v["ssd"] / max(t["ssd"], 1e-12) for v, t in zip(vals, truth)]
    return {
        "n": n,
        "psnr": statistics.fmean(v["psnr"] for v in vals),
        "ssim": statistics.fmean(v["ssim"] for v in vals),
        "mnc": statistics.fmean(v["mnc"] for v in vals) if vals[0]["mnc"] == vals[0]["mnc"] else float("nan"),
        "success": sum(r <= 3 for r in ratios) / n,
        "worse": sum(v["psnr"] < b["psnr"] for v, b in zip(vals, blurred)),
        "seconds": statistics.fmean(v["seconds"] for v in vals),
        "blurred_psnr": statistics.fmean(b["psnr"] for b in blurred[:n]),
        "true_psnr": statistics.fmean(t["psnr"] for t in truth[:n]),
    }


def print_row(name, vals, blurred, truth) -> None:
    s = summary(vals, blurred, truth)
    print(f"{name}: aligned PSNR {s['psnr']:.2f} (blurred {s['blurred_psnr']:.2f}, true kernel {s['true_psnr']:.2f})"
          f" SSIM {s['ssim']:.3f} MNC {s['mnc']:.3f} success {100 * s['success']:.0f}% worse {s['worse']}/{s['n']}"
          f" {s['seconds']:.1f} s/photo", flush=True)


def side_by_side(y: np.ndarray, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``y | x`` with ``k`` (scaled to its peak, nearest-neighbour enlarged) inset at the output's top left."""
    import cv2

    H = y.shape[0]
    side = max(64, H // 4)
    kk = cv2.resize((k / k.max()).astype(np.float32), (side, side), interpolation=cv2.INTER_NEAREST)
    out = x.copy()
    out[:side, :side] = kk[..., None]
    out[side : side + 2, : side + 2] = 1.0
    out[: side + 2, side : side + 2] = 1.0
    gap = np.ones((H, 8, 3))
    return np.concatenate([y, gap, out], axis=1)


def real_figures(args, model, schedule, solver) -> list[dict]:
    names = select(sorted(p.stem for p in REAL.glob("*.jpg")), args.real)
    args.real_figures.mkdir(parents=True, exist_ok=True)
    out = []
    settings = first_settings(args)
    with progress.task_bar("real-blur", total=len(names), unit="photo") as update:
        for n in names:
            y = files.read_image(REAL / f"{n}.jpg")[0][..., :3]
            res = deblur_image(files.to_tensor(y), model, schedule, solver, settings)
            k = res.estimate.k.double()[0, 0].numpy()
            files.write_image(args.real_figures / f"{n}.jpg", side_by_side(y, files.to_numpy(res.x), k))
            out.append({"photo": n, "seconds": res.seconds, "plan": res.estimate.plan, "kept": res.estimate.kept,
                        "scores": res.estimate.scores, "fallback_scores": res.estimate.fallback_scores, "final_sigma": res.sigma,
                        "polish": res.estimate.polish})
            polished = "" if res.estimate.polish is None else f", polish kept {res.estimate.polish['kept']}"
            print(f"{n}: {res.seconds:.1f} s, plan {res.estimate.plan}, kept {res.estimate.kept}{polished}", flush=True)
            update(1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("lai", "val", "val-shake"), default="lai", help="lai: lai-uniform x its recorded kernels "
                    "(the benchmark); val: the validation photos, each blurred by its own generated 31-75 px kernel (for tuning); "
                    "val-shake: the same photos with long generated camera shake (extent 18-65 px, lai-uniform's range)")
    ap.add_argument("--photos", default="all", help="photos of the set: all, N (the first N by name) or name,name")
    ap.add_argument("--kernels", default="1,2,3,4")
    ap.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std added to the blurred photos (e.g. 0.01)")
    ap.add_argument("--blur", choices=("encoded", "linear"), default="encoded")
    ap.add_argument("--configs", default="default", help=f"comma-separated names of CONFIGS ({', '.join(CONFIGS)}); '' for none")
    ap.add_argument("--alternating", type=int, default=0, help="also run --method alternating on the first N items")
    ap.add_argument("--also-final", default="", help="comma-separated solvers: extra rows with the same kernel estimates, "
                    "only the final x = F(y, k) made by that solver (kdiff deblur --final-solver); the true-kernel row too")
    ap.add_argument("--real-figures", type=Path, default=None, help="write real-blur side-by-side figures here")
    ap.add_argument("--real", default=README_PHOTOS, help="real-blur photos for the figures: all, N or name,name")
    ap.add_argument("--no-lai", action="store_true", help="skip the lai-uniform table (figures only)")
    ap.add_argument("--coarse", action="store_true", help="instead of the deblurring table: the photo-scale plan's coarse passes "
                    "alone, each pass's kernel scored against the true one (MNC, extent, spread), the chosen pass and the best")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    unknown = [c for c in args.configs.split(",") if c and c not in CONFIGS]
    if unknown:
        print(f"unknown config {unknown[0]!r}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    args.configs = ",".join(c for c in args.configs.split(",") if c)
    model, schedule = load_kernel_model(args.weights, torch.device("cpu"))
    solver = load_solver("wiener", device="cpu")
    report = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.coarse:
        report["coarse"] = coarse_benchmark(args, model.kernel_size, solver)
    elif not args.no_lai:
        rows = lai_benchmark(args, model, schedule, solver)
        report["lai"] = {name: {"summary": summary(v, rows["blurred"], rows[truth_row(name)]), "items": v} for name, v in rows.items()}
        print("\n| rows | n | aligned PSNR | aligned SSIM | MNC | success (ER <= 3) | worse than blurred | s/photo |")
        print("|---|---|---|---|---|---|---|---|")
        for name, v in report["lai"].items():
            s = v["summary"]
            mnc = "-" if s["mnc"] != s["mnc"] else f"{s['mnc']:.3f}"
            print(f"| {name} | {s['n']} | {s['psnr']:.2f} | {s['ssim']:.3f} | {mnc} | {100 * s['success']:.0f}% | {s['worse']} | {s['seconds']:.1f} |")
    if args.real_figures is not None:
        report["real"] = real_figures(args, model, schedule, solver)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
