"""Benchmark of the analysis area: `kdiff toy` run time, and the `alternating` blind baseline.

    python benchmarks/bench_alternating.py [--quick] [--data $KDIFF_DATA/val] [--images 8]

Table 1 runs `kdiff toy` in a fresh process (default options, as a user would) and reports its wall
time and headline numbers. Table 2 runs the `alternating` method on centre crops of 256 x 256
from the data folder, each blurred (symmetric boundary) by a 64 x 64 `borodenko` kernel plus
Gaussian noise of std 0.01 (all seeded), and reports per image: seconds (kernel estimation and
total), MNC of the estimated kernel, MNC of the best centred Gaussian guess (sigma 1 to 8 px), and
PSNR of the blurred input, of the result and of the oracle (wiener with the true kernel).
--quick: 2 images. Images are read in place, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("COLUMNS", "150")

from kdiff_cli import files, plugins, progress  # noqa: E402
from kdiff_cli.items import IMAGE_EXTENSIONS  # noqa: E402
from kdiff_cli.maths import ops  # noqa: E402
from kdiff_cli.maths.metrics import psnr  # noqa: E402
from kdiff_cli.solvers import load_solver  # noqa: E402
from common import VAL_DIR  # noqa: E402

CROP, KERNEL, NOISE, SEED = 256, 64, 0.01, 2024
#: the first images of the val folder served to tune the defaults; the benchmark skips them
SKIP = 10


def bench_toy() -> list[tuple]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kdiff_cli", "toy", "--out", tmp], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        s = json.loads((Path(tmp) / "toy.json").read_text())
    return [(
        f"{seconds:.1f}", s["config"]["starts"], f"{s['alternating']['false_minimum_fraction']:.1%}",
        f"{s['map_k']['false_minimum_fraction']:.1%}", f"{s['map_k']['sigma_hat']:.2f}",
        f"{s['map_k']['sigma_relative_error']:.1%}",
    )]


def gaussian(size: int, s: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * r**2 / s**2)
    return (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]


def bench_alternating(data: Path, count: int) -> list[tuple]:
    photos = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[SKIP : SKIP + count]
    if not photos:
        raise SystemExit(f"no images in {data}")
    rng = np.random.default_rng(SEED)
    generator = plugins.get("generator", "borodenko")
    method = plugins.get("method", "alternating")
    wiener = load_solver("wiener")
    rows = []
    for i, path in enumerate(photos):
        img, _ = files.read_image(path)
        H, W = img.shape[:2]
        t, l = (H - CROP) // 2, (W - CROP) // 2
        x = files.to_tensor(img[t : t + CROP, l : l + CROP])
        k_true = torch.from_numpy(generator.sample(rng, 1, KERNEL)[0]).float()[None, None]
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED + i))
        y = (ops.conv2d(x, k_true) + NOISE * noise).clamp(0, 1)
        start = time.perf_counter()
        x_hat, k, info = method.run(y, kernel_size=KERNEL)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            x_oracle = wiener(y, k_true).clamp(0, 1)
        guess = max(float(ops.mnc(gaussian(KERNEL, s), k_true.double())) for s in (1, 2, 3, 4, 6, 8))
        rows.append((path.name, f"{info['seconds_kernel']:.2f}", f"{seconds:.2f}", f"{float(ops.mnc(k, k_true)):.3f}",
                     f"{guess:.3f}", *(f"{psnr(files.to_numpy(a), files.to_numpy(x)):.2f}" for a in (y, x_hat, x_oracle))))
    cols = list(zip(*rows))
    rows.append(("mean",) + tuple(f"{np.mean([float(v) for v in c]):.{3 if j in (2, 3) else 2}f}"
                                  for j, c in enumerate(cols[1:])))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images instead of --images")
    parser.add_argument("--data", type=Path, default=VAL_DIR)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    progress.print_table(
        "kdiff toy (default options, fresh process)",
        ["seconds", "starts", "alternating false minima", "MAP_k false minima", "sigma_hat", "sigma error"],
        bench_toy(),
    )
    progress.print_table(
        f"alternating: {CROP}x{CROP} crops, {KERNEL}x{KERNEL} borodenko kernels, noise {NOISE} "
        f"(torch threads {torch.get_num_threads()})",
        ["image", "s kernel", "s total", "MNC", "MNC Gaussian guess", "PSNR blurred", "PSNR alternating", "PSNR oracle"],
        bench_alternating(args.data, 2 if args.quick else args.images),
    )


if __name__ == "__main__":
    main()
