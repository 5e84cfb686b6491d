"""Typed results: what the Kernel-Diff estimator returns (:class:`KernelEstimate`,
:class:`BlindResult`) and what every blind-deblurring method returns (:class:`MethodResult`).

A method plugin's ``run(y, **options)`` returns a :class:`MethodResult`. It unpacks as the
3-tuple ``x, k, info`` (what ``kdiff eval`` and plugins written against the first release use,
``isinstance(result, tuple)`` holds), and carries the fields that ``kdiff deblur`` writes to
report.json with one type each (docs/report-json.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch


@dataclass
class KernelEstimate:
    """One Kernel-Diff kernel estimate (:func:`kdiff_cli.blind.estimator.estimate_kernel`)."""

    k: torch.Tensor  # (1, 1, S', S') nonnegative, sum 1, at the image's full resolution
    residuals: list[float]  # final reblur residual of each sample (window, after Stage II)
    chosen: int  # index of the sample kept
    roi: tuple[int, int, int, int]  # x, y, w, h of the window (full-resolution pixels)
    scale: int  # downscale factor of the estimation (1: full resolution)
    trace: list[list[float]] = field(default_factory=list)  # per reverse step, per sample
    refine_trace: list[float] = field(default_factory=list)  # Stage II residuals of the chosen sample
    classical_residual: float | None = None  # reblur residual of the classical candidate (None: not run)
    kept: str = "sample"  # "sample" (the diffusion sample ``chosen``), "classical" or "none" (the fallback: y kept)
    agreement: float | None = None  # MNC between the sample and the classical candidate (None: not run)
    scores: list[float] | None = None  # --choice sparsity: (sample, classical[, delta]) normalized sparsity of F(y, k)
    fallback_scores: list[float] | None = None  # photos with light streaks: (kernel, delta) scores of the final solver (estimator.lights_keep_input)
    none_residual: float | None = None  # kept "none": the reblur residual of the delta kernel
    polish: dict | None = None  # photos: the full-resolution polish (kdiff_cli.blind.polish.Polish.report); None: not run
    plan: dict | None = None  # the scale plan (kdiff_cli.blind.scale.ScalePlan.report): factor, kernel_size, how, ...

    @property
    def kept_input_reason(self) -> str | None:
        """Why the fallback kept the input (``kept == "none"``), in one phrase; None when a kernel was used."""
        if self.kept != "none":
            return None
        if self.plan and self.plan.get("spread"):
            return "the coarse passes found no blur (their kernels spread over the whole canvas)"
        return "no estimated kernel made it sharper than the input"

    @property
    def residual(self) -> float:
        """Reblur residual of the kernel kept (the chosen sample's or the classical candidate's)."""
        if self.kept == "none":
            return self.none_residual
        return self.classical_residual if self.kept == "classical" else self.residuals[self.chosen]


@dataclass
class BlindResult:
    """Kernel-Diff on one image (:func:`kdiff_cli.blind.estimator.deblur_image`)."""

    x: torch.Tensor  # (1, C, H, W) deblurred image in [0, 1]
    estimate: KernelEstimate
    seconds: float
    sigma: float | None = None  # noise level of the final deconvolution (:func:`kdiff_cli.blind.final.final_sigma`)


class _XKInfo(NamedTuple):
    x: torch.Tensor  # (1, C, H, W) deblurred image in [0, 1]
    k: torch.Tensor | None  # (1, 1, h, w) kernel used, nonnegative, sum 1 (None: the method has none)
    info: dict[str, Any]  # method-specific diagnostics, JSON-able (``kdiff eval`` stores them as given)


class MethodResult(_XKInfo):
    """What a method's ``run`` returns: ``x``, ``k``, ``info`` (a 3-tuple) and typed report fields.

    The keyword fields are optional; a method fills those it knows:

    - ``residual`` (float): reblur residual ``||y - k * F(y, k)||^2`` of the kernel returned, summed
      over the region the kernel was estimated on (Kernel-Diff: the window; alternating: the image);
    - ``residuals`` (list[float]): the same for every candidate kernel (Kernel-Diff: each sample);
    - ``settings`` (dict): the resolved settings to record (None: the options ``run`` was given);
    - ``estimate`` (:class:`KernelEstimate`): Kernel-Diff's estimate (window, scale, MAP_k choice);
    - ``final_sigma`` (float): noise level of the final deconvolution ``x = F(y, k)``;
    - ``round_residuals`` (list[float]): RMS reblur residual of every alternation round (alternating).
    """

    # class-level defaults also cover instances made by ``_make`` / ``_replace``
    residual: float | None = None
    residuals: list[float] | None = None
    settings: dict[str, Any] | None = None
    estimate: KernelEstimate | None = None
    final_sigma: float | None = None
    round_residuals: list[float] | None = None

    def __new__(
        cls,
        x: torch.Tensor,
        k: torch.Tensor | None,
        info: dict[str, Any] | None = None,
        *,
        residual: float | None = None,
        residuals: list[float] | None = None,
        settings: dict[str, Any] | None = None,
        estimate: KernelEstimate | None = None,
        final_sigma: float | None = None,
        round_residuals: list[float] | None = None,
    ) -> "MethodResult":
        self = super().__new__(cls, x, k, {} if info is None else info)
        self.residual = None if residual is None else float(residual)
        self.residuals = None if residuals is None else [float(r) for r in residuals]
        self.settings = settings
        self.estimate = estimate
        self.final_sigma = None if final_sigma is None else float(final_sigma)
        self.round_residuals = None if round_residuals is None else [float(r) for r in round_residuals]
        return self

    @classmethod
    def of(cls, out: Any) -> "MethodResult":
        """``out`` as a :class:`MethodResult`.

        A plain ``(x, k, info)`` tuple (a third-party method) keeps ``info``; its ``residual``,
        ``residuals``, ``settings`` and ``final_sigma`` keys fill the typed fields when they have
        the documented type.
        """
        if isinstance(out, cls):
            return out
        x, k, info = out
        info = {} if info is None else info
        return cls(x, k, info, residual=_number(info.get("residual")), residuals=_numbers(info.get("residuals")),
                   settings=info["settings"] if isinstance(info.get("settings"), dict) else None,
                   final_sigma=_number(info.get("final_sigma")))


def _number(value: Any) -> float | None:
    """``value`` if it is a real number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _numbers(value: Any) -> list[float] | None:
    """``value`` if it is a list of real numbers, else None."""
    if not isinstance(value, (list, tuple)) or any(_number(v) is None for v in value):
        return None
    return [float(v) for v in value]


__all__ = ["KernelEstimate", "BlindResult", "MethodResult"]
