"""Method ``alternating``: classical MAP_{x,k} blind deblurring by alternating minimization (CPU).

Coarse-to-fine L0-gradient x-step / FFT least-squares k-step on the luminance, then
``x = F(y, k)`` by a registered non-blind solver; see :mod:`kdiff_cli.alternating`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl


class Alternating:
    name = "alternating"
    description = "classical MAP_{x,k}: coarse-to-fine alternating L0-gradient x-step / FFT k-step, then x = F(y, k)"

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
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Deblur ``y`` (1, C, H, W) in [0, 1]; returns ``(x, k, info)`` with ``info["residual"]``.

        ``kernel_size``: side of the estimated kernel (``None``: 64); ``iterations``: alternations
        per pyramid level; ``seed``: seeds ``init="random"``; ``callback(step, info)`` after every
        alternation; ``solver`` / ``solver_weights``: the non-blind solver of the final image;
        ``sigma``: noise level passed to it (``None``: estimated); the rest tune the two steps.
        """
        from kdiff_cli import alternating

        settings = alternating.AlternatingSettings(
            kernel_size=64 if kernel_size is None else _number("kernel_size", kernel_size, int),
            iterations=_number("iterations", iterations, int),
            seed=_number("seed", seed, int),
            lambda_grad=_number("lambda_grad", lambda_grad, float),
            gamma=_number("gamma", gamma, float),
            threshold=_number("threshold", threshold, float),
            polish=_number("polish", polish, int),
            init=str(init),
        )
        return alternating.run(y, settings, solver=solver, solver_weights=solver_weights, sigma=sigma,
                               callback=callback)


def _number(name: str, value: Any, kind: type) -> int | float:
    """``value`` as ``kind`` (int or float), or a one-line error (``kdiff eval`` options arrive parsed)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (kind is int and not float(value).is_integer()):
        raise KdiffError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


@hookimpl
def register_methods(register):
    register(Alternating())
