"""Non-blind upper bound: the solver applied with the true kernel (like the paper's DWDN column)."""

import torch

from kdiff_cli.blind.result import MethodResult
from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl


class Oracle:
    name = "oracle"
    description = "upper bound: a non-blind solver (default wiener) given the true kernel"

    def run(self, y, *, k_true=None, sigma=None, solver: str = "wiener", weights: str | None = None, device=None) -> MethodResult:
        """``x = F(y, k_true)`` with the solver named ``solver`` (weights: a file or shipped name)."""
        from kdiff_cli.solvers import cached_solver

        if k_true is None:
            raise KdiffError("the oracle method needs the true kernel; this dataset has none")
        k = torch.as_tensor(k_true, dtype=y.dtype, device=y.device).reshape(1, 1, *k_true.shape[-2:])
        F = cached_solver(solver, weights, str(device or y.device))
        with torch.no_grad():
            x = F(y, k, sigma=sigma)
        return MethodResult(x.clamp(0, 1), k, {"solver": solver})


@hookimpl
def register_methods(register):
    register(Oracle())
