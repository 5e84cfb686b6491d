"""What ``kdiff deblur`` writes beside each deblurred image: the kernel files and report.json.

``<stem>_kernel.npy`` (float32, sums to 1), ``<stem>_kernel.png`` (8-bit, scaled to the peak) and
one :class:`ReportEntry` per input in ``report.json``; every field has one type, listed in
docs/report-json.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdiff_cli import files
from kdiff_cli.blind.result import MethodResult
from kdiff_cli.npz import npy_bytes


@dataclass
class ReportEntry:
    """One input's entry of report.json (docs/report-json.md); None is written as null."""

    input: str  # the input image as given
    output: str  # the deblurred image written
    kernel: str  # the kernel .npy written
    method: str  # method plugin that estimated the kernel
    quality: str  # --quality preset: fast, default or best
    settings: dict[str, Any]  # resolved settings of the method
    kernel_size: list[int]  # [h, w] of the kernel
    residual: float | None  # reblur residual of the kernel kept (None: the method reports none)
    residuals: list[float] | None  # the same for each candidate kernel
    round_residuals: list[float] | None  # alternating: RMS reblur residual of every round
    kept: str | None  # Kernel-Diff: "sample", "classical" or "none" (the input kept)
    classical_residual: float | None  # Kernel-Diff: reblur residual of the classical candidate
    agreement: float | None  # Kernel-Diff: MNC of the sample and the classical candidate
    final_sigma: float | None  # noise level of the final deconvolution
    roi: list[int] | None  # Kernel-Diff: x, y, w, h of the estimation window
    scale: int | None  # Kernel-Diff: downscale factor at which the kernel prior ran (1: full resolution)
    plan: dict[str, Any] | None  # Kernel-Diff: how scale and kernel size were chosen (kdiff_cli.blind.scale)
    scores: list[float] | None  # Kernel-Diff --choice sparsity: (sample, classical) normalized sparsity of F(y, k)
    fallback_scores: list[float] | None  # Kernel-Diff, photos with light streaks: (kernel, delta) scores of the final solver
    polish: dict[str, Any] | None  # Kernel-Diff, photos: the full-resolution polish (rounds, kept, scores, window)
    seconds: float  # time spent by the method on this image
    warnings: list[str]  # what kdiff changed about the input or output (alpha dropped, values clipped, ...)


def report_entry(
    result: MethodResult,
    source: Path,
    output: Path,
    kernel: Path,
    method: str,
    settings: dict[str, Any],
    kernel_size: list[int],
    quality: str,
    seconds: float,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """The report.json entry of one input, as a JSON-ready dict (field order of :class:`ReportEntry`)."""
    est = result.estimate
    entry = ReportEntry(
        input=str(source),
        output=str(output),
        kernel=str(kernel),
        method=method,
        quality=quality,
        settings={k: v for k, v in settings.items() if k != "callback"},
        kernel_size=list(kernel_size),
        residual=result.residual,
        residuals=result.residuals,
        round_residuals=result.round_residuals,
        kept=None if est is None else est.kept,
        classical_residual=None if est is None else est.classical_residual,
        agreement=None if est is None else est.agreement,
        final_sigma=result.final_sigma,
        roi=None if est is None else [int(v) for v in est.roi],
        scale=None if est is None else int(est.scale),
        plan=None if est is None else est.plan,
        scores=None if est is None else est.scores,
        fallback_scores=None if est is None else est.fallback_scores,
        polish=None if est is None else est.polish,
        seconds=round(seconds, 3),
        warnings=list(warnings or []),
    )
    return asdict(entry)


def write_report(path: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """``report.json``: input name -> entry, written atomically (paths and other objects as strings)."""
    return files.atomic_write_bytes(path, json.dumps(entries, indent=2, default=str).encode())


def kernel_preview(k: torch.Tensor) -> np.ndarray:
    """A gray (S, S, 1) picture of the kernel scaled to its peak, for ``<stem>_kernel.png``."""
    kk = k.detach().double().cpu()[0, 0]
    return (kk / kk.max().clamp(min=1e-12)).numpy()[..., None].astype("float32")


def write_kernel(k: torch.Tensor, stem: Path) -> tuple[Path, Path, list[int]]:
    """``<stem>.npy`` (float32, renormalised to sum 1) and ``<stem>.png``; returns both paths and [h, w]."""
    kk = k.detach().float().cpu()[0, 0].numpy().astype(np.float32)
    kk = kk / kk.sum()
    k_npy = files.atomic_write_bytes(stem.with_name(stem.name + ".npy"), npy_bytes(kk))
    k_png = files.write_image(stem.with_name(stem.name + ".png"), kernel_preview(k), 8)
    return k_npy, k_png, list(kk.shape)


__all__ = ["ReportEntry", "report_entry", "write_report", "write_kernel", "kernel_preview"]
