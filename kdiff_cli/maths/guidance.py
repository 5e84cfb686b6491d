"""Reblur guidance (Algorithm 1, steps 7-9 and 13) and the Stage II kernel refinement.

The guidance objective for a kernel estimate ``k0`` (nonnegative, sum 1) is the reblur residual

    R(k0) = || y - k0 * F(y, k0) ||^2                         (per image, summed over pixels)

with ``F`` a differentiable non-blind solver. Its gradient steers each reverse diffusion step; the
step size follows the supplement's eq. (33): ``delta = c / R(k0_hat)``.

``R`` alone is minimised by kernels that are too small: with a regularised ``F``, a delta kernel
reblurs to almost exactly ``y`` (``R`` ~ 0), while the true kernel leaves the noise,
``R ~ N sigma^2`` (N values per image). ``discrepancy = tau`` therefore replaces ``R`` by the
discrepancy-principle penalty ``E(k0) = R - T log R`` with ``T = tau N sigma^2`` (``sigma`` given
or estimated from ``y``): its gradient ``(1 - T / R) grad R`` is the paper's while ``R >> T``,
vanishes at the noise level and turns back when ``R`` falls below it, so the kernel prior chooses
among the kernels that explain ``y`` to within the noise (Morozov's discrepancy principle).
``discrepancy = None`` is the paper's plain reblur loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from kdiff_cli.maths import ops


@dataclass
class ReblurGuidance:
    """The cond_fn of Kernel-Diff: residual and gradient of the reblur loss through a solver.

    Samplers call :meth:`residual` on kernels (B, 1, S, S) built from the current ``k0_hat``; the
    sampler chooses what to differentiate (``k0_hat`` or ``k_t`` through the network).
    """

    solver: torch.nn.Module  # F(y, k, sigma) -> x, differentiable in k
    y: torch.Tensor  # blurred image batch (B, C, H, W) in [0, 1]
    sigma: torch.Tensor | float | None = None  # noise level passed to the solver
    boundary: str = "symmetric"  # boundary of the forward model k * x
    scale: float = 4.0  # c in delta = c / ||y - k0 * x0||^2 (measured for the 2k/max(k)-1 map; authors 0.04, supplement 0.1)
    route: str = "k0"  # gradient w.r.t. "k0" (k0_hat only, cheap) or "kt" (through the U-Net, as written)
    discrepancy: float | None = None  # tau: penalise |R - tau N sigma^2| instead of R (None: the paper's R)

    def residual(self, k: torch.Tensor) -> torch.Tensor:
        """``||y - k * F(y, k)||^2`` per image, shape (B,)."""
        x0 = self.solver(self.y, k, self.sigma)
        r = self.y - ops.conv2d(x0, k, self.boundary)
        return r.pow(2).flatten(1).sum(1)

    def noise_energy(self) -> torch.Tensor:
        """``N sigma^2`` per image (B,): the reblur residual the true kernel leaves."""
        from kdiff_cli.maths import deconv

        sigma = deconv.noise_level(self.sigma, self.y).to(self.y.dtype)
        return self.y[0].numel() * sigma.square()

    def penalty(self, residual: torch.Tensor) -> torch.Tensor:
        """The objective that guidance and Stage II minimise, from ``R`` (B,): ``R`` itself, or the
        discrepancy penalty ``R - T log R`` with ``T = tau N sigma^2``."""
        if self.discrepancy is None:
            return residual
        target = self.discrepancy * self.noise_energy()
        return residual - target * residual.clamp(min=1e-12).log()

    def step_size(self, residual: torch.Tensor) -> torch.Tensor:
        """``delta = c / R`` per image (eq. 33), shaped to broadcast over kernels."""
        return (self.scale / residual.detach().clamp(min=1e-12)).reshape(-1, 1, 1, 1)


def project_kernel(k: torch.Tensor) -> torch.Tensor:
    """Nonnegative, sum-to-one projection used by Stage II."""
    return ops.normalize_kernel(k)


#: :func:`clean_kernel`'s defaults: the classical k-step's projection (``AlternatingSettings``)
CLEAN_THRESHOLD = 0.1
CLEAN_MIN_MASS = 0.05


def clean_kernel(k: torch.Tensor, threshold: float = CLEAN_THRESHOLD, min_mass: float = CLEAN_MIN_MASS) -> torch.Tensor:
    """Each kernel of ``k`` (B, 1, S, S) with its entries below ``threshold`` x its peak zeroed and its
    8-connected pieces holding less than ``min_mass`` of the mass removed; nonnegative, sum 1.

    The classical estimator's kernel projection (Cho & Lee 2009; Pan et al.), applied by the
    estimator to the kernel that leaves Stage II (the sample itself without Stage II): a sample
    carries a faint haze over the whole canvas and each reblur gradient step adds a dense, low
    ripple, which cost little kernel MNC but several dB in ``F(y, k)`` (docs/deblur.md, "Kernel
    clean-up after Stage II"). ``threshold = 0`` only projects.
    """
    from kdiff_cli.maths.alternating_steps import sparse_projection

    k = ops.normalize_kernel(k)
    if threshold <= 0 or k.shape[0] == 0:
        return k
    return torch.cat([sparse_projection(kb, threshold, min_mass) for kb in k.split(1)])


@dataclass
class RefineResult:
    k: torch.Tensor
    residual: torch.Tensor
    trace: list[list[float]] = field(default_factory=list)


def refine(
    guidance: ReblurGuidance,
    k0: torch.Tensor,
    steps: int = 20,
    lr: float | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> RefineResult:
    """Stage II: ``steps`` projected gradient steps on the reblur loss from ``k0``, with backtracking.

    Each image keeps its own step size: a trial step that raises its residual is undone and the step
    halved; an accepted step grows the next one by 1.2x. Kernels stay nonnegative and sum to one.
    The initial step is ``lr`` (if given) or the eq. (33) heuristic scaled to the kernel's peak.
    """
    k = project_kernel(k0.detach())
    with torch.no_grad():
        res = guidance.residual(k)
    trace = [res.tolist()]
    if steps <= 0:
        return RefineResult(k, res, trace)
    step = None
    for j in range(steps):
        kk = k.detach().requires_grad_(True)
        r = guidance.residual(kk)
        (g,) = torch.autograd.grad(guidance.penalty(r).sum(), kk)
        if step is None:
            # first step moves the largest kernel entry by about 20% of the peak value
            peak = k.flatten(1).amax(1).reshape(-1, 1, 1, 1)
            gmax = g.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1).clamp(min=1e-20)
            step = torch.full_like(peak, lr) if lr is not None else 0.2 * peak / gmax
        with torch.no_grad():
            trial = project_kernel(k - step * g)
            r_trial = guidance.residual(trial)
            better = (guidance.penalty(r_trial) < guidance.penalty(r.detach())).reshape(-1, 1, 1, 1)
            k = torch.where(better, trial, k)
            res = torch.where(better.flatten(), r_trial, r.detach())
            step = torch.where(better, step * 1.2, step * 0.5)
        trace.append(res.tolist())
        if callback is not None:
            callback(j, res)
    return RefineResult(k.detach(), res.detach(), trace)
