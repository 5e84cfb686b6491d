"""Kernel generator benchmark: `kdiff synth-kernels` speed and memory, and kernel statistics.

    python benchmarks/bench_kernels.py [--quick] [--generators borodenko,linear] [--reference ref.npy]

Table 1 runs the real command (a fresh process, as a user would) for 60,000 kernels of 64 x 64 per
generator (6,000 with --quick) and reports wall time, kernels/s, CPU time and peak resident memory
(the largest of the command and its workers, from wait4). Table 2 gives statistics over 2,000
kernels (500 with --quick) per generator: support area (pixels above 5% of the max), max value and
path extent (larger side of the support's bounding box), as median [p10, p90]. For `borodenko`
the last column compares the medians with those of the reference implementation
(LeviBorodenko/motionblur, intensity U(0.1, 0.95)), measured once and stored below, or computed
from --reference, a .npy/.npz of reference kernels (N, 64, 64).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("COLUMNS", "150")  # the tables are wide; rich reads this when not on a terminal

from kdiff_cli.maths import kernels  # noqa: E402
from kdiff_cli import plugins, progress
from kdiff_cli.apps import synth

#: medians of the reference implementation over 4,000 kernels of 64 x 64 (see the module docstring)
REFERENCE_MEDIANS = {"area": 114.0, "max": 0.0187, "extent": 35.0}
#: and their [p10, p90]
REFERENCE_RANGES = {"area": "[40, 177]", "max": "[0.0115, 0.0519]", "extent": "[13, 60]"}
SIZE = 64


def run_command(generator: str, count: int, out: Path) -> dict:
    """Run `kdiff synth-kernels` in a fresh process; wall time, CPU time, peak RSS (MB)."""
    cmd = [sys.executable, "-m", "kdiff_cli", "synth-kernels", "--generator", generator, "--count", str(count),
           "--size", str(SIZE), "--seed", "0", "--out", str(out)]
    env = dict(os.environ, KDIFF_PROGRESS="0")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode().strip()}")
    size_mb = out.stat().st_size / 2**20
    out.unlink()
    return {
        "wall": wall,
        "rate": count / wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,  # KiB -> MiB (Linux)
        "file": size_mb,
    }


def stats_row(name: str, k: np.ndarray, reference: dict | None) -> list[str]:
    st = kernels.kernel_stats(k)
    cells = [name, str(len(k))]
    for key, fmt in [("area", "{:.0f}"), ("max", "{:.4f}"), ("extent", "{:.0f}")]:
        p10, med, p90 = np.percentile(st[key], [10, 50, 90])
        cells.append(f"{fmt.format(med)} [{fmt.format(p10)}, {fmt.format(p90)}]")
    if reference is not None:
        cells.append(" ".join(f"{key} {np.median(st[key]) / reference[key]:.3f}" for key in ["area", "max", "extent"]))
    else:
        cells.append("")
    return cells


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6,000 kernels and 500 for the statistics")
    parser.add_argument("--generators", default=",".join(plugins.names("generator")))
    parser.add_argument("--reference", type=Path, help="reference kernels (.npy or .npz with 'kernels')")
    parser.add_argument("--skip-speed", action="store_true", help="only the statistics table")
    args = parser.parse_args(argv)
    names = [n for n in args.generators.split(",") if n]
    count, stat_count = (6000, 500) if args.quick else (60000, 2000)

    reference = dict(REFERENCE_MEDIANS)
    ref_kernels = None
    if args.reference is not None:
        loaded = np.load(args.reference, allow_pickle=False)
        ref_kernels = loaded["kernels"] if hasattr(loaded, "files") else loaded
        st = kernels.kernel_stats(ref_kernels)
        reference = {key: float(np.median(st[key])) for key in reference}

    if not args.skip_speed:
        rows = []
        with tempfile.TemporaryDirectory(dir=".") as tmp:
            for name in names:
                r = run_command(name, count, Path(tmp) / f"{name}.npz")
                rows.append([name, f"{count:,}", f"{r['wall']:.2f}", f"{r['rate']:,.0f}", f"{r['cpu']:.2f}",
                             f"{r['rss']:,.0f}", f"{r['file']:,.0f}"])
        progress.print_table(
            f"kdiff synth-kernels, size {SIZE}, {os.cpu_count()} CPUs (fresh process, default workers)",
            ["generator", "kernels", "wall s", "kernels/s", "CPU s", "peak RSS MiB", "file MiB"],
            rows,
        )

    rows = []
    for name in names:
        k = synth.synthesize(name, stat_count, SIZE, seed=0, workers=synth.default_workers())
        rows.append(stats_row(name, k, reference if name == "borodenko" else None))
    if ref_kernels is not None:
        rows.append(stats_row(f"reference ({args.reference.name})", ref_kernels, None))
    else:
        rows.append(["reference motionblur (stored)", "4000",
                     f"{REFERENCE_MEDIANS['area']:.0f} {REFERENCE_RANGES['area']}",
                     f"{REFERENCE_MEDIANS['max']:.4f} {REFERENCE_RANGES['max']}",
                     f"{REFERENCE_MEDIANS['extent']:.0f} {REFERENCE_RANGES['extent']}", ""])
    progress.print_table(
        f"kernel statistics, size {SIZE}: median [p10, p90]",
        ["generator", "kernels", "area px (>5% max)", "max value", "extent px", "median / reference"],
        rows,
    )


if __name__ == "__main__":
    main()
