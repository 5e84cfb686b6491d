"""MAP_{x,k} by alternating minimization: the classical blind-deblurring baseline ``alternating``.

The CPU competitor a user would otherwise pick (in the style of Cho & Lee 2009, Xu et al. 2013 and
Pan et al. 2014). The kernel is estimated on the luminance, coarse to fine over a pyramid (ratio
``1/sqrt(2)``; the kernel is upsampled between levels); at each level ``iterations`` rounds of

* **x-step** -- ``min_x ||k * x - y||^2 + lambda ||grad x||_0`` by half-quadratic splitting
  (Xu et al. "unnatural L0"): the auxiliary gradient ``g`` is the hard-thresholded ``grad x``
  (``|grad x|^2 < lambda / beta -> 0``), ``x`` the closed-form FFT solve of
  ``||k * x - y||^2 + beta ||grad x - g||^2``, with ``beta`` doubling from ``2 lambda`` to
  ``beta_max``. ``lambda`` decays by ``1/1.1`` per round (Pan et al.) down to ``lambda_min``.
* **k-step** -- ``min_k sum_d ||d x * k - d y||^2 + gamma P ||k||^2`` on the horizontal and
  vertical gradients (Cho & Lee) in closed form by FFT (``P`` the canvas pixel count, so that
  ``gamma`` means the same at every pyramid level), then cropped to the kernel canvas, values below
  ``threshold * max`` zeroed, 8-connected pieces holding less than ``min_component`` of the mass
  removed (Pan et al.), made nonnegative, scaled to sum 1 and centred.
* **polish** -- ``polish`` more rounds at the finest level (``lambda`` restarting at
  ``lambda_grad``) whose k-step fits the same gradients on the *observed* pixels only, the kernel
  confined to its support, by ``cg_iters`` conjugate-gradient steps warm-started from the current
  kernel. The closed form above also fits the canvas's synthetic tapered margin, which blurs the
  kernel (from the true sharp image it returns a true kernel with MNC 0.93; the window fit 0.99);
  used from the start the window fit was less robust (it collapsed to a delta or spread into a blob
  on some crops); as a polish it gained 0.8 dB on 16 training crops and 1.2 dB on 20 val crops
  (exploratory scripts, not in ``benchmarks/``; docs/analysis.md).

Both steps work on a periodic canvas: the image is mirrored by the kernel size and tapered to a
smooth wrap-around (:mod:`kdiff_cli.maths.deconv`). The final image is ``x = F(y, k)`` by a registered
non-blind solver (default ``wiener``) on the full-colour input.

``info["residual"]`` records, for every round of every level (coarse to fine), the
root-mean-square reblur residual ``||y_l - k_l * x_l|| / sqrt(H_l W_l)`` of that level's luminance
(the quantity the paper's Figure 5 follows across iterations); ``info["reblur_residual"]`` is
``||y - k * F(y, k)||^2`` at full resolution, summed over pixels and channels (the same quantity
Kernel-Diff's guidance minimises).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from kdiff_cli.maths import deconv, ops
from kdiff_cli.errors import KdiffError
from kdiff_cli.threads import cpu_threads

from kdiff_cli.maths.alternating_steps import (  # noqa: F401 (the building blocks are part of this module's API)
    INITS,
    LUMA,
    luminance,
    pyramid_kernel_sizes,
    initial_kernel,
    upsample_kernel,
    _grad,
    _grad_adjoint,
    x_step,
    k_step,
    alternations,
    _k_fft,
    window_operator,
    _k_window,
    drop_small_components,
    residual_rms,
)

#: ``AlternatingSettings.precision`` -> dtype of the estimate's arithmetic (the kernel returned is float32)
PRECISIONS = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class AlternatingSettings:
    """Options of the ``alternating`` method (saved in ``info["settings"]``)."""

    kernel_size: int = 64  # side of the estimated kernel (px)
    iterations: int = 10  # alternations (x-step, k-step) per pyramid level
    ratio: float = 1 / math.sqrt(2)  # pyramid scale factor between levels
    min_kernel: int = 3  # kernel side at the coarsest level
    lambda_grad: float = 2e-3  # weight of ||grad x||_0 at the start of each level
    lambda_min: float = 1e-4  # floor of the decaying lambda
    lambda_decay: float = 1.1  # lambda <- max(lambda / decay, lambda_min) after every round
    beta_max: float = 1e5  # end of the half-quadratic schedule of the x-step
    kappa: float = 2.0  # beta <- kappa * beta
    gamma: float = 5e-3  # Tikhonov weight on ||k||^2 in the k-step, per canvas pixel (scale-free)
    threshold: float = 0.1  # kernel values below threshold * max(k) are set to 0
    min_component: float = 0.05  # 8-connected kernel pieces holding less of the mass are removed
    init: str = "gaussian"  # initial coarsest kernel: gaussian (narrow), delta or random (from seed)
    polish: int = 5  # extra rounds at the finest level whose k-step fits the observed window only (0: none)
    cg_iters: int = 10  # conjugate-gradient steps of that window k-step, warm-started from the current kernel
    gamma_window: float = 0.03  # window k-step: weight on ||k||^2 relative to the diagonal of its normal equations
    seed: int = 0  # seeds the random initial kernel (the method is otherwise deterministic)
    precision: str = "float32"  # arithmetic of the estimate: float32 (measured: the same kernels as float64, 1.7x faster) or float64

    def check(self, H: int, W: int) -> None:
        if not isinstance(self.kernel_size, int) or self.kernel_size < 3:
            raise KdiffError(f"kernel_size must be an integer >= 3, got {self.kernel_size!r}")
        if self.kernel_size > min(H, W):
            raise KdiffError(f"kernel_size {self.kernel_size} exceeds the image size {H}x{W}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise KdiffError(f"iterations must be a positive integer, got {self.iterations!r}")
        if not 0.3 <= self.ratio < 1:
            raise KdiffError(f"ratio must be in [0.3, 1), got {self.ratio}")
        if self.init not in INITS:
            raise KdiffError(f"unknown init {self.init!r} (choose from {', '.join(INITS)})")
        if not isinstance(self.polish, int) or self.polish < 0:
            raise KdiffError(f"polish must be a nonnegative integer, got {self.polish!r}")
        if not isinstance(self.cg_iters, int) or self.cg_iters < 1:
            raise KdiffError(f"cg_iters must be a positive integer, got {self.cg_iters!r}")
        if self.precision not in PRECISIONS:
            raise KdiffError(f"precision must be float32 or float64, got {self.precision!r}")
        if not self.gamma_window >= 0:
            raise KdiffError(f"gamma_window must be >= 0, got {self.gamma_window}")
        for name in ("lambda_grad", "lambda_min", "beta_max", "gamma"):
            if not getattr(self, name) > 0:
                raise KdiffError(f"{name} must be positive, got {getattr(self, name)}")
        if not (self.kappa > 1 and self.lambda_decay >= 1):
            raise KdiffError("kappa must be > 1 and lambda_decay >= 1")
        if not 0 <= self.threshold < 1:
            raise KdiffError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0 <= self.min_component < 1:
            raise KdiffError(f"min_component must be in [0, 1), got {self.min_component}")


# --------------------------------------------------------------------------- the method


@dataclass
class AlternatingResult:
    k: torch.Tensor  # (1, 1, kernel_size, kernel_size) the estimated kernel
    x_gray: torch.Tensor  # (1, 1, H, W) the last L0 latent image (luminance, for inspection)
    residual: list[float]  # per round, coarse to fine: RMS reblur residual of that level
    residual_level: list[int]  # the pyramid level of each entry of ``residual`` (the polish: the finest)
    kernel_sizes: list[int]  # kernel side per level, coarse to fine


def estimate_kernel(
    y: torch.Tensor,
    settings: AlternatingSettings,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    k_init: torch.Tensor | None = None,
    start: float = 0.0,
) -> AlternatingResult:
    """Coarse-to-fine alternating minimization on the luminance of ``y`` (1, C, H, W) in [0, 1].

    ``k_init`` (1, 1, s, s), nonnegative, replaces ``settings.init``: the pyramid then starts at the
    first level whose kernel side is at least ``start * kernel_size`` (``k_init`` resampled to it),
    so a good initial kernel (a Kernel-Diff sample, Stage II ``alternating``) is refined over the
    finer levels only. ``start = 0`` runs every level.
    """
    # one intra-op thread: the steps are many small FFTs (a few hundred pixels a side), extra threads
    # bring no speed-up and, on a busy machine, oversubscription made a 256x256 / 64x64 run over 10x slower
    with cpu_threads(y.device, 1):
        return _estimate_kernel(y, settings, callback, k_init, start)


def refined_sizes(settings: AlternatingSettings, start: float) -> list[int]:
    """The pyramid's kernel sides from the first one ``>= start * kernel_size`` (at least the finest)."""
    sizes = pyramid_kernel_sizes(settings.kernel_size, settings.ratio, settings.min_kernel)
    return [s for s in sizes if s >= start * settings.kernel_size] or sizes[-1:]


def total_rounds(settings: AlternatingSettings, levels: int) -> int:
    """Rounds (x-step, k-step) of an estimate over ``levels`` pyramid levels, the polish included."""
    return levels * settings.iterations + settings.polish


def resample_kernel(k: torch.Tensor, size: int) -> torch.Tensor:
    """A kernel (1, 1, s, s) on a ``size x size`` canvas: area-averaged down or bilinear up, projected."""
    if k.shape[-1] == size:
        return ops.center_kernel(ops.normalize_kernel(k))
    if k.shape[-1] > size:
        return ops.center_kernel(ops.normalize_kernel(F.interpolate(k, size=(size, size), mode="area")))
    return upsample_kernel(k, size)


def _estimate_kernel(y, settings, callback, k_init=None, start=0.0) -> AlternatingResult:
    if y.dim() != 4 or y.shape[0] != 1:
        raise KdiffError(f"the alternating method takes one image (1, C, H, W), got shape {tuple(y.shape)}")
    H, W = y.shape[-2:]
    settings.check(H, W)
    if not 0 <= start <= 1:
        raise KdiffError(f"start must be in [0, 1], got {start}")
    dtype = torch.float32 if y.device.type == "mps" else PRECISIONS[settings.precision]  # MPS has no float64
    gray = luminance(y.detach().to(dtype))
    sizes = pyramid_kernel_sizes(settings.kernel_size, settings.ratio, settings.min_kernel)
    if k_init is None:
        generator = torch.Generator().manual_seed(int(settings.seed))
        k = initial_kernel(sizes[0], settings.init, generator, dtype).to(y.device)
    else:
        if k_init.dim() != 4 or k_init.shape[:2] != (1, 1) or k_init.shape[-1] != k_init.shape[-2]:
            raise KdiffError(f"the initial kernel must be (1, 1, s, s), got shape {tuple(k_init.shape)}")
        sizes = refined_sizes(settings, start)
        k = resample_kernel(k_init.detach().to(device=y.device, dtype=dtype).clamp(min=0), sizes[0])
    # (level, kernel side, rounds, window k-step): the pyramid, then the polish at the finest level
    plan = [(level, ks, settings.iterations, False) for level, ks in enumerate(sizes)]
    if settings.polish:
        plan.append((len(sizes) - 1, sizes[-1], settings.polish, True))
    total = total_rounds(settings, len(sizes))
    residual: list[float] = []
    level_of: list[int] = []
    x = gray
    step = 0
    for level, ks, rounds, window in plan:
        if k.shape[-1] != ks:
            k = upsample_kernel(k, ks)
        scale = ks / settings.kernel_size
        hl, wl = max(ks, round(H * scale)), max(ks, round(W * scale))
        y_l = gray if (hl, wl) == (H, W) else F.interpolate(gray, size=(hl, wl), mode="bilinear", antialias=True)
        pads = deconv.canvas_pads(hl, wl, ks, ks, margin=1.0)
        y_can = deconv.pad_taper(y_l, pads)
        for it, x_can, k in alternations(y_can, k, pads, rounds, settings.lambda_grad, settings, window):
            x = deconv.crop(x_can, pads)
            residual.append(residual_rms(y_l, x, k))
            level_of.append(level)
            step += 1
            if callback is not None:
                callback(step, {"total": total, "level": level, "levels": len(sizes), "iteration": it,
                                "kernel_size": ks, "residual": residual[-1], "polish": window})
    return AlternatingResult(k.to(torch.float32), x.to(torch.float32), residual, level_of, sizes)


def run(
    y: torch.Tensor,
    settings: AlternatingSettings,
    *,
    solver: str = "wiener",
    solver_weights: str | None = None,
    sigma: float | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Blind deblurring: the kernel by :func:`estimate_kernel`, then ``x = F(y, k)``.

    Returns ``(x (1, C, H, W) in [0, 1], k (1, 1, kernel_size, kernel_size), info)``.
    """
    from kdiff_cli.solvers import load_solver

    start = time.perf_counter()
    est = estimate_kernel(y, settings, callback)
    seconds_kernel = time.perf_counter() - start
    F_solver = load_solver(solver, weights=solver_weights, device=y.device)
    k = est.k.to(device=y.device, dtype=y.dtype)
    with torch.no_grad():
        x = F_solver(y, k, sigma=sigma).clamp(0, 1)
        reblur = float((y - ops.conv2d(x, k, "symmetric")).square().sum())
    info = {
        "residual": est.residual,
        "residual_level": est.residual_level,
        "kernel_sizes": est.kernel_sizes,
        "reblur_residual": reblur,
        "solver": solver,
        "seconds_kernel": seconds_kernel,
        "seconds": time.perf_counter() - start,
        "settings": asdict(settings),
    }
    return x, k, info
