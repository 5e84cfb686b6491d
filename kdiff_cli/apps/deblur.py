"""``kdiff deblur``: one file loop, whatever gives the kernel.

Where ``k`` comes from is a *kernel source*: :class:`KnownKernel` (``--kernel K``: the kernel is
given, ``x = F(y, k)``) or :class:`EstimatedKernel` (a blind method plugin, ``--method``,
Kernel-Diff by default). :func:`deblur_files` reads each input at its own bit depth, asks the
source for ``x`` and ``k`` (a :class:`kdiff_cli.blind.result.MethodResult`) and writes
``OUT/<stem>_deblurred.<ext>`` at the input's bit depth; an estimated kernel also gets
``<stem>_kernel.npy`` / ``.png`` and an entry in ``report.json`` (docs/report-json.md).
A bad input is reported and skipped, the others still run, and the files written for it are
removed; every output is written atomically, inputs are never overwritten, and an existing output
is replaced only with ``overwrite``. Whatever changes an input (alpha dropped, pixel values
clipped, a kernel's negative entries clipped) is a :class:`~kdiff_cli.errors.KdiffWarning`,
recorded in the input's ``warnings`` in report.json.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from kdiff_cli import files, limits, plugins
from kdiff_cli.apps.deblur_report import report_entry, write_kernel, write_report
from kdiff_cli.blind.final import deconvolve, memory_estimate, solver_tile
from kdiff_cli.blind.result import MethodResult
from kdiff_cli.errors import KdiffError, KdiffWarning
from kdiff_cli.items import read_kernel
from kdiff_cli.shard import SINGLE, Shard

#: suffix of the output file names
SUFFIX = "_deblurred"


# --------------------------------------------------------------------------- inputs and outputs


def load_kernel(path: str | os.PathLike) -> torch.Tensor:
    """A kernel file as a (1, 1, h, w) float32 tensor, nonnegative, summing to 1.

    ``.npy``: a 2-D float array (no pickles); any image format: a gray image (RGB is averaged).
    An unreadable, non-2-D, all-zero or non-finite kernel raises :class:`KdiffError`; one larger
    than the kernel size limit too (:mod:`kdiff_cli.limits`); negative entries are clipped with a
    :class:`~kdiff_cli.errors.KdiffWarning`.
    """
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
    limits.check_kernel_size(max(k.shape), f"kernel {path}: side")
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


def item_outputs(path: Path, out_dir: Path, estimates: bool) -> list[Path]:
    """Every file written for input ``path``: the image and, for an estimated kernel, its ``.npy`` and ``.png``."""
    out = output_path(path, out_dir)
    if not estimates:
        return [out]
    return [out, out.with_name(f"{path.stem}_kernel.npy"), out.with_name(f"{path.stem}_kernel.png")]


def report_names(shard: Shard) -> list[str]:
    """The report files a process writes: ``report.json``, or with a share of the inputs
    ``report.I-of-N.json`` (and under torchrun rank 0 merges them into ``report.json``)."""
    if shard.count == 1:
        return ["report.json"]
    own = f"report.{shard.index + 1}-of-{shard.count}.json"
    return [own, "report.json"] if shard.distributed and shard.main else [own]


def check_overwrite(paths: list[Path], out_dir: Path, estimates: bool, shard: Shard = SINGLE) -> None:
    """An output that exists before the run (not an input: :func:`plan_outputs`) is an error."""
    targets = [o for p in paths for o in item_outputs(p, out_dir, estimates)]
    if estimates:
        targets += [out_dir / name for name in report_names(shard)]
    existing = [t for t in targets if t.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise KdiffError(f"output {existing[0]} exists{more}; pass --overwrite to replace it, or choose another --out folder")


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


# --------------------------------------------------------------------------- kernel sources


@dataclass
class KnownKernel:
    """``--kernel K``: ``k`` is given; ``x = F(y, k)`` with a non-blind solver (tiled)."""

    k: torch.Tensor  # (1, 1, h, w) nonnegative, sum 1
    solver: torch.nn.Module  # F
    sigma: float | None = None  # noise std passed to F (None: estimated from each image)
    tile: int | None = None  # tile side of the deconvolution (None: the solver's)
    device: torch.device = torch.device("cpu")
    estimates: ClassVar[bool] = False  # the kernel is an input: no kernel files, no report

    @classmethod
    def load(cls, kernel: str | os.PathLike, solver: str = "wiener", *, sigma: float | None = None,
             solver_weights: str | os.PathLike | None = None, tile: int | None = None, device: str = "auto",
             center: str = "ndimage") -> "KnownKernel":
        """Check the options, read the kernel and load the solver (errors before any image is read).

        ``center``: the kernel file's centre convention (:data:`kdiff_cli.maths.ops.KERNEL_CENTERS`):
        ``ndimage``, index ``size // 2`` (kdiff's, MATLAB conv2 'same', scipy.ndimage), or
        ``signal`` (scipy.signal's 'same': an even side's centre one pixel earlier)."""
        from kdiff_cli.device import resolve_device
        from kdiff_cli.maths.ops import from_center_convention
        from kdiff_cli.solvers import load_solver

        if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
            raise KdiffError(f"--sigma must be a finite number >= 0, got {sigma}")
        if tile is not None and tile < 16:
            raise KdiffError(f"--tile must be at least 16 pixels, got {tile}")
        k = from_center_convention(load_kernel(kernel), center)
        if tile is not None and tile < 2 * max(k.shape[-2:]) + 1:
            raise KdiffError(f"--tile must be at least 2 x the kernel size + 1 = {2 * max(k.shape[-2:]) + 1} pixels, got {tile}")
        dev = resolve_device(device)
        return cls(k, load_solver(solver, solver_weights, dev), sigma, tile, dev)

    def prepare(self) -> None:
        """Nothing left to check once loaded."""

    def __call__(self, path: Path, y: torch.Tensor, callback: Callable | None = None) -> MethodResult:
        H, W = y.shape[-2:]
        h, w = self.k.shape[-2:]
        if H < h or W < w:
            raise KdiffError(f"image {path} ({W}x{H}) is smaller than the kernel ({w}x{h})")
        k = self.k.to(device=y.device, dtype=y.dtype)
        return MethodResult(deconvolve(self.solver, y, k, self.sigma, self.tile), k, {})


class EstimatedKernel:
    """A blind method plugin (``--method``) estimates ``k`` and deblurs: ``run(y, **options)``."""

    estimates: ClassVar[bool] = True  # write the kernel files and the report entry

    def __init__(self, method: str, options: dict[str, Any] | None = None, device: str = "auto"):
        from kdiff_cli.device import resolve_device

        self.method = method
        self.runner = plugins.get("method", method)
        self.device = resolve_device(device)
        # the options ``run`` declares (all of them when it takes ``**options``)
        self.options = plugins.accepted(self.runner.run, {**(options or {}), "device": str(self.device)})
        self.takes_callback = "callback" in plugins.accepted(self.runner.run, {"callback": None})

    def prepare(self) -> None:
        """Bad options fail once, before any file is read."""
        if hasattr(self.runner, "validate_options"):
            self.runner.validate_options(**self.options)

    def __call__(self, path: Path, y: torch.Tensor, callback: Callable | None = None) -> MethodResult:
        options = {**self.options, "callback": callback} if self.takes_callback else dict(self.options)
        result = MethodResult.of(self.runner.run(y, **options))
        if result.k is None:
            raise KdiffError(f"method {self.method} gives no kernel; kdiff deblur needs one")
        return result


# --------------------------------------------------------------------------- the file loop


@dataclass
class DeblurReport:
    """What :func:`deblur_files` did."""

    written: list[Path] = field(default_factory=list)  # output paths, in the order written
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, message)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # input name -> report.json entry


def deblur_files(
    paths: list,
    out_dir,
    method: str = "kernel-diff",
    options: dict | None = None,
    device: str = "auto",
    on_start: Callable | None = None,
    on_progress: Callable | None = None,
    on_done: Callable | None = None,
    *,
    kernel: str | os.PathLike | None = None,
    quality: str = "default",
    overwrite: bool = True,
    kernel_center: str = "ndimage",
    shard: Shard = SINGLE,
) -> DeblurReport:
    """Deblur every file: ``<stem>_deblurred.<ext>``, and for an estimated kernel ``<stem>_kernel.npy``/``.png`` and ``report.json``.

    ``kernel``: a known kernel file (non-blind; ``options`` then give ``solver``,
    ``solver_weights``, ``sigma`` and ``tile``); otherwise ``method`` estimates it, with the
    ``options`` its ``run`` declares; ``kernel_center`` is the known kernel's centre convention
    (``ndimage`` or ``signal``, :meth:`KnownKernel.load`). ``quality`` is recorded in the report. ``on_start(path)``,
    ``on_progress(stage, i, n, info)`` and ``on_done(path, error or None)`` report progress.
    Problems with the kernel, method, solver, weights, device, options or output plan raise
    :class:`KdiffError` before any image is read; so does an existing output when ``overwrite`` is
    False. A problem with one input is recorded and skipped, and the files written for it removed.
    ``shard``: deblur only this process's share of ``paths`` (:mod:`kdiff_cli.shard`); its report is
    ``report.I-of-N.json``, merged into ``report.json`` by rank 0 under torchrun.
    """
    if not paths:
        raise KdiffError("no input images given")
    options = dict(options or {})
    if kernel is None and kernel_center != "ndimage":
        raise KdiffError("--kernel-center applies to a known kernel (--kernel) only")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise KdiffError(f"--out {out_dir} exists and is not a folder")
    device = shard.device(device)
    every = [Path(p) for p in paths]
    outputs = plan_outputs(every, out_dir)  # all inputs: every shard sees the same conflicts
    sources = shard.take(every)
    report_path = out_dir / report_names(shard)[0]
    if not overwrite:
        check_overwrite(sources, out_dir, estimates=kernel is None, shard=shard)
    if kernel is not None:
        source: KnownKernel | EstimatedKernel = KnownKernel.load(
            kernel, options.get("solver", "wiener"), sigma=options.get("sigma"),
            solver_weights=options.get("solver_weights"), tile=options.get("tile"), device=device,
            center=kernel_center,
        )
    else:
        source = EstimatedKernel(method, options, device)
    source.prepare()
    tile = source.tile if isinstance(source, KnownKernel) else source.options.get("tile")
    report = DeblurReport()

    def tiling(y: torch.Tensor) -> tuple[int, int]:
        """(tile side, bytes per pixel and channel) of the final deconvolution of ``y``, for the memory check."""
        if isinstance(source, KnownKernel):
            return solver_tile(source.solver, tile)
        from kdiff_cli.blind.estimator import final_solver_name
        from kdiff_cli.blind.scale import CROP_SIDE

        name = final_solver_name(source.options.get("final_solver") or "auto", source.options.get("solver", "wiener"),
                                 photo=min(y.shape[-2:]) >= CROP_SIDE)
        return solver_tile(name, tile)

    def callback(*args):  # methods report (stage, i, n, info) or (step, info)
        if on_progress is None:
            return
        if len(args) == 4:
            on_progress(*args)
        else:
            step, info = args
            on_progress("alternating", step + 1, info.get("total"), info)

    for p in sources:
        if on_start:
            on_start(p)
        before = {o: _stat(o) for o in item_outputs(p, out_dir, source.estimates)}
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", KdiffWarning)  # each input's notes, even when repeated
                a, info = files.read_image(p)
                y = files.to_tensor(a).to(source.device)
                H, W = y.shape[-2:]
                side, per_pixel = tiling(y)
                limits.check_memory(memory_estimate(tuple(y.shape), side, per_pixel), f"{p} ({W}x{H}) in tiles of {side}",
                                    "lower --tile")
                start = time.perf_counter()
                result = source(p, y, callback)
                seconds = time.perf_counter() - start
                est = result.estimate
                if est is not None and est.kept_input_reason:  # an unchanged output is a result, not a failure: say why
                    warnings.warn(KdiffWarning(f"{p}: {est.kept_input_reason}; the input is written unchanged (--no-fallback deblurs anyway)"))
                out = outputs[p]
                if source.estimates:
                    k_npy, k_png, shape = write_kernel(result.k, out.with_name(f"{p.stem}_kernel"))
                img = files.write_image(out, files.to_numpy(result.x.clamp(0, 1)), info.bit_depth)
            notes = [str(w.message) for w in caught if issubclass(w.category, KdiffWarning)]
            if source.estimates:
                settings = result.settings if result.settings is not None else source.options
                report.entries[p.name] = report_entry(result, p, img, k_npy, method, settings, shape, quality, seconds, notes)
                try:
                    write_report(report_path, report.entries)
                except KdiffError:
                    del report.entries[p.name]
                    raise
                report.written += [img, k_npy, k_png]
            else:
                report.written.append(img)
            err = None
        except KdiffError as e:
            err = str(e)
            report.failed.append((p, err))
            for o, st in before.items():  # what this run wrote for the failed input
                if _stat(o) != st and o.is_file():
                    o.unlink(missing_ok=True)
        for w in caught:  # shown now (the CLI prints a KdiffWarning as one line)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if on_done:
            on_done(p, err)
    if shard.distributed and source.estimates:
        _merge_reports(report, every, out_dir, shard)
    return report


def _merge_reports(report: DeblurReport, every: list[Path], out_dir: Path, shard: Shard) -> None:
    """torchrun: rank 0 writes every rank's entries, in input order, to ``report.json``."""
    shard.barrier()
    entries: dict[str, dict[str, Any]] = {}
    for part in shard.gather(report.entries):
        entries.update(part)
    if not shard.main:
        return
    ordered = {p.name: entries[p.name] for p in every if p.name in entries}
    if ordered:
        write_report(out_dir / "report.json", ordered)
    for i in range(shard.count):
        (out_dir / f"report.{i + 1}-of-{shard.count}.json").unlink(missing_ok=True)


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What identifies a file's version (inode, size, modification time), None when absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def deblur_nonblind(
    paths: list[str | os.PathLike],
    kernel_path: str | os.PathLike,
    solver: str,
    out_dir: str | os.PathLike,
    *,
    sigma: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    tile: int | None = None,
    callback: Callable[[Path, Path | None, str | None], None] | None = None,
    overwrite: bool = True,
) -> DeblurReport:
    """:func:`deblur_files` with a known kernel; ``callback(input, output or None, error or None)`` after each file."""
    def done(p: Path, err: str | None) -> None:
        if callback is not None:
            callback(p, None if err else output_path(p, Path(out_dir)), err)

    options = {"solver": solver, "solver_weights": weights, "sigma": sigma, "tile": tile}
    return deblur_files(paths, out_dir, options=options, device=device, on_done=done, kernel=kernel_path, overwrite=overwrite)


__all__ = [
    "SUFFIX", "load_kernel", "expand_inputs", "output_path", "item_outputs", "check_overwrite", "plan_outputs",
    "KnownKernel", "EstimatedKernel",
    "DeblurReport", "deblur_files", "deblur_nonblind",
]
