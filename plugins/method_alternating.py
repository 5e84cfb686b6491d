"""Method ``alternating``: classical MAP_{x,k} blind deblurring by alternating minimization (CPU).

Coarse-to-fine L0-gradient x-step / FFT least-squares k-step on the luminance, then
``x = F(y, k)`` by a registered non-blind solver; see :mod:`kdiff_cli.maths.alternating`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from kdiff_cli import config
from kdiff_cli.blind.result import MethodResult
from kdiff_cli.hookspecs import hookimpl


class Alternating:
    name = "alternating"
    description = "classical MAP_{x,k}: coarse-to-fine alternating L0-gradient x-step / FFT k-step, then x = F(y, k)"

    def validate_options(self, **options) -> None:
        """Before any image: the kernel side against the size limit (``$KDIFF_MAX_KERNEL_SIZE``)."""
        from kdiff_cli import limits

        if options.get("kernel_size") is not None:
            limits.check_kernel_size(_number("kernel_size", options["kernel_size"], 0), "--kernel-size")

    def run(
        self,
        y: torch.Tensor,
        *,
        kernel_size: int | None = 64,
        iterations: int = 10,
        seed: int = 0,
        callback: Callable[[int, dict[str, Any]], None] | None = None,
        solver: str = "wiener",
        solver_weights: str | None = None,
        sigma: float | None = None,
        lambda_grad: float = 2e-3,
        gamma: float = 5e-3,
        threshold: float = 0.1,
        polish: int = 5,
        init: str = "gaussian",
    ) -> MethodResult:
        """Deblur ``y`` (1, C, H, W) in [0, 1]; returns a :class:`MethodResult` (unpacks as ``x, k, info``).

        ``residual``: the reblur residual ``||y - k * x||^2`` of the image (``info["reblur_residual"]``),
        ``residuals``: that one value as a list; ``round_residuals``: the RMS reblur residual of
        every round, coarse to fine (``info["residual"]``, the curve of the paper's Figure 5).

        ``kernel_size``: side of the estimated kernel (``None``: 64); ``iterations``: alternations
        per pyramid level; ``seed``: seeds ``init="random"``; ``callback(step, info)`` after every
        alternation; ``solver`` / ``solver_weights``: the non-blind solver of the final image;
        ``sigma``: noise level passed to it (``None``: estimated); the rest tune the two steps.
        """
        from kdiff_cli.maths import alternating

        settings = alternating.AlternatingSettings(
            kernel_size=64 if kernel_size is None else _number("kernel_size", kernel_size, 0),
            iterations=_number("iterations", iterations, 0),
            seed=_number("seed", seed, 0),
            lambda_grad=_number("lambda_grad", lambda_grad, 0.0),
            gamma=_number("gamma", gamma, 0.0),
            threshold=_number("threshold", threshold, 0.0),
            polish=_number("polish", polish, 0),
            init=str(init),
        )
        x, k, info = alternating.run(y, settings, solver=solver, solver_weights=solver_weights, sigma=sigma,
                                     callback=callback)
        reblur = info["reblur_residual"]
        return MethodResult(x, k, info, residual=reblur, residuals=[reblur], settings=info["settings"],
                            round_residuals=info["residual"])


def _number(name: str, value: Any, kind: int | float) -> int | float:
    """``value`` as the type of ``kind``, or a one-line error (``kdiff eval`` options arrive parsed)."""
    return config.coerce(value, kind, name, "alternating")


@hookimpl
def register_methods(register):
    register(Alternating())
