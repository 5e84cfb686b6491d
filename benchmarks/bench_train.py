"""Training speed of the kernel-diff U-Net: iterations per hour, peak memory, parameter count.

Times whole optimisation steps (task loss -> backward -> AdamW step) on synthetic batches of the
config's shape (batch x 3 x crop x crop images, batch x 1 x S x S kernels), in fp32 and bf16
autocast, each precision in a fresh subprocess so that its peak RSS is its own. No data loading:
this is the network's cost, the floor of what ``kdiff train`` can reach.

    python benchmarks/bench_train.py                 # configs/kernel-diff-cpu.toml, 2 threads
    python benchmarks/bench_train.py --quick         # fewer steps
    python benchmarks/bench_train.py --config configs/kernel-diff-paper.toml --threads 2

The CPU may be shared: the load average (``uptime``) is printed before and after; compare the
``best`` column (the fastest step) when the load is high.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(config_file: str, precision: str, threads: int, steps: int, warmup: int) -> dict:
    """Measure one precision in this process; returns a JSON-able dict."""
    import torch

    from kdiff_cli import config
    from kdiff_cli.maths import ops
    from kdiff_cli.apps.train.kernel_task import KernelDiffTask
    from kdiff_cli.maths.unet import count_parameters

    torch.set_num_threads(threads)
    task = KernelDiffTask()
    cfg = config.resolve(task.name, task.defaults, config_file)
    torch.manual_seed(0)
    model = task.build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B, P, S = cfg["data"]["batch"], cfg["data"]["crop"], cfg["data"]["kernel_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, P, P, generator=g)
    k = ops.normalize_kernel(torch.rand(B, 1, S, S, generator=g) ** 16)
    batch = {"x": x, "k": k, "y": ops.conv2d(x, k), "sigma": torch.full((B,), 0.01)}
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=(precision == "bf16"))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with amp:
            loss = task.loss(model, batch, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {
        "precision": precision,
        "params": count_parameters(model),
        "median_s": statistics.median(times),
        "best_s": min(times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batch": B, "crop": P, "kernel": S, "threads": threads,
    }


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "kernel-diff-cpu.toml"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per precision")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--quick", action="store_true", help="4 timed steps per precision")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one precision
    a = ap.parse_args()
    steps = 4 if a.quick else a.steps
    if a.one:
        print(json.dumps(one(a.config, a.one, a.threads, steps, warmup=2)))
        return

    print(f"config {a.config}; threads {a.threads}; load average before: {load()}")
    rows = []
    for precision in a.precisions.split(","):
        cmd = [sys.executable, __file__, "--config", a.config, "--threads", str(a.threads),
               "--steps", str(steps), "--one", precision]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    r0 = rows[0]
    print(f"U-Net parameters: {r0['params']:,}; batch {r0['batch']}, crops {r0['crop']}, kernels {r0['kernel']}")
    head = f"{'precision':<10} {'s/step (median)':>16} {'it/h (median)':>14} {'s/step (best)':>14} {'it/h (best)':>12} {'peak RSS MiB':>13}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['precision']:<10} {r['median_s']:>16.3f} {3600 / r['median_s']:>14,.0f} "
              f"{r['best_s']:>14.3f} {3600 / r['best_s']:>12,.0f} {r['peak_rss_mib']:>13,.0f}")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
