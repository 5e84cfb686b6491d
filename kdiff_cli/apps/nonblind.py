"""Non-blind deblurring of image files with a known kernel (``kdiff deblur --kernel K``).

Each input is read at its own bit depth, deconvolved by a registered solver (tiled with overlap
for large photos, so memory stays bounded), clipped to [0, 1] and written atomically to
``OUT/<stem>_deblurred.<ext>`` at the input's bit depth. A bad input is reported and skipped; the
others still run. Inputs are never overwritten.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kdiff_cli import files
from kdiff_cli.maths.deconv import solve_tiled
from kdiff_cli.errors import KdiffError

#: suffix of the output file names
SUFFIX = "_deblurred"


@dataclass
class NonblindReport:
    """What :func:`deblur_nonblind` did: files written and inputs that failed (path, message)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def load_kernel(path: str | os.PathLike) -> torch.Tensor:
    """A kernel file as a (1, 1, h, w) float32 tensor, nonnegative, summing to 1.

    ``.npy``: a 2-D float array (no pickles); any image format: a gray image (RGB is averaged).
    An unreadable, non-2-D, all-zero or non-finite kernel raises :class:`KdiffError`.
    """
    from kdiff_cli.apps.datasets import read_kernel

    path = Path(path)
    if not path.is_file():
        raise KdiffError(f"cannot read kernel {path}: no such file")
    try:
        k = read_kernel(path)
    except KdiffError as e:  # image kernels fail inside the image reader: say "kernel"
        msg = str(e)
        if not msg.startswith("cannot read kernel"):
            msg = f"cannot read kernel {path}: {msg.split(': ', 1)[-1]}"
        raise KdiffError(msg) from None
    if not np.isfinite(k).all():
        raise KdiffError(f"cannot read kernel {path}: contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))[None, None]


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given; items with glob characters (``*?[``) expand, sorted. No match is an error."""
    import glob

    paths: list[Path] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            found = sorted(glob.glob(os.path.expanduser(item)))
            if not found:
                raise KdiffError(f"no file matches {item!r}")
            paths += [Path(f) for f in found]
        else:
            paths.append(Path(item))
    if not paths:
        raise KdiffError("no input images given")
    return paths


def output_path(path: Path, out_dir: Path) -> Path:
    """``OUT/<stem>_deblurred.<ext>`` for input ``path``."""
    return out_dir / f"{path.stem}{SUFFIX}{path.suffix}"


def plan_outputs(paths: list[Path], out_dir: Path) -> dict[Path, Path]:
    """Input -> output; two inputs writing one file, or an output that is an input, are errors."""
    inputs = {p.resolve() for p in paths}
    seen: dict[Path, Path] = {}
    for p in paths:
        o = output_path(p, out_dir)
        r = o.resolve()
        if r in inputs:
            raise KdiffError(f"output {o} would overwrite an input; choose another --out folder")
        if r in seen:
            raise KdiffError(f"inputs {seen[r]} and {p} would both write {o}; deblur them separately")
        seen[r] = p
    return {p: output_path(p, out_dir) for p in paths}


def deblur_file(
    solver: torch.nn.Module,
    path: Path,
    k: torch.Tensor,
    out: Path,
    sigma: float | None = None,
    device: torch.device | str = "cpu",
    tile: int = 512,
) -> Path:
    """Deconvolve one image file with ``k`` (1, 1, h, w) and write the result to ``out``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", files.ImageWarning)  # alpha dropped: the output has none either
        a, info = files.read_image(path)
    H, W = a.shape[:2]
    h, w = k.shape[-2:]
    if H < h or W < w:
        raise KdiffError(f"image {path} ({W}x{H}) is smaller than the kernel ({w}x{h})")
    y = files.to_tensor(a).to(device)
    with torch.no_grad():
        x = solve_tiled(solver, y, k.to(device=device, dtype=y.dtype), sigma, tile=tile)
    return files.write_image(out, files.to_numpy(x.clamp(0, 1)), info.bit_depth)


def deblur_nonblind(
    paths: list[str | os.PathLike],
    kernel_path: str | os.PathLike,
    solver: str,
    out_dir: str | os.PathLike,
    *,
    sigma: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    tile: int = 512,
    callback: Callable[[Path, Path | None, str | None], None] | None = None,
) -> NonblindReport:
    """Deblur every file in ``paths`` with the kernel in ``kernel_path`` using ``solver``.

    ``callback(input, output or None, error message or None)`` is called after each file. Problems
    with the kernel, solver, weights, device or output plan raise :class:`KdiffError` before any
    work; a problem with one input is recorded in the report and the next input is processed.
    """
    from kdiff_cli.device import resolve_device
    from kdiff_cli.solvers import load_solver

    if not paths:
        raise KdiffError("no input images given")
    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise KdiffError(f"--sigma must be a finite number >= 0, got {sigma}")
    if tile < 16:
        raise KdiffError(f"--tile must be at least 16 pixels, got {tile}")
    k = load_kernel(kernel_path)
    dev = resolve_device(device)
    model = load_solver(solver, weights, dev)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise KdiffError(f"--out {out_dir} exists and is not a folder")
    sources = [Path(p) for p in paths]
    outputs = plan_outputs(sources, out_dir)
    report = NonblindReport()
    for p in sources:
        try:
            written = deblur_file(model, p, k, outputs[p], sigma, dev, tile)
        except KdiffError as e:
            report.failed.append((p, str(e)))
            if callback:
                callback(p, None, str(e))
            continue
        report.written.append(written)
        if callback:
            callback(p, written, None)
    return report
