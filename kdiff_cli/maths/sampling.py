"""Guided reverse diffusion over kernels (Algorithm 1, Stage I), shared by the sampler plugins.

A sampler plugin chooses the timesteps and the reverse step (DDPM or DDIM); this module runs the
loop: predict epsilon, form ``k0_hat`` (eq. 19), take the reverse step to ``k_{t-1/2}``, and, when a
guidance is given, subtract ``delta * grad ||y - k0_hat * F(y, k0_hat)||^2`` (eq. 20 / step 9).

Two gradient routes (``guidance.route``):

* ``k0`` — the gradient w.r.t. ``k0_hat`` only (what the authors' code does): one U-Net forward
  without autograd per step, then solver forward+backward;
* ``kt`` — the gradient w.r.t. ``k_t`` through the U-Net, as eq. (20) is written (about twice the
  cost: the U-Net backward is added).

No UI here: progress goes through ``callback(i, total, info)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from kdiff_cli.maths import diffusion
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.guidance import ReblurGuidance
from kdiff_cli.maths.schedule import NoiseSchedule

Callback = Callable[[int, int, dict], None]


class ReverseStep(Protocol):
    def __call__(self, k_t, epsilon, alpha_bar_t, alpha_bar_prev, noise) -> diffusion.Step: ...


@dataclass
class SampleResult:
    """Kernels (B, 1, S, S) (nonnegative, sum 1) and the per-step reblur residuals of each sample."""

    k: torch.Tensor
    residual: torch.Tensor | None = None  # (B,) at the last step, when guided
    trace: list[list[float]] = field(default_factory=list)  # per step, per sample


def reverse_diffusion(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    y: torch.Tensor,
    step: ReverseStep,
    *,
    guidance: ReblurGuidance | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    k_start: torch.Tensor | None = None,
) -> SampleResult:
    """Run the reverse process over ``schedule.timesteps`` for a batch of blurred images ``y``.

    ``y`` (B, C, H, W) in [0, 1]: one kernel is sampled per image (repeat ``y`` for several samples
    of one image). All noise comes from ``generator`` on the CPU, so a seed gives the same kernels
    on every device. ``k_start`` (B, 1, S, S) kernels: start from them, noised to the schedule's
    first timestep, instead of from pure noise (SDEdit; the ``lookup`` sampler).
    """
    S = model.kernel_size
    B = y.shape[0]
    dev = y.device
    dtype = torch.float32

    def randn():
        return torch.randn((B, 1, S, S), generator=generator, dtype=dtype).to(dev)

    # a gray image conditions a colour network through a channel-expanded copy; guidance keeps y
    cond = y if y.shape[1] == model.image_channels else y.expand(-1, model.image_channels, -1, -1)
    with torch.no_grad():
        features = model.encode_image(diffusion.image_to_condition(cond))
    k_t = randn()  # k_T ~ N(0, I)
    if k_start is not None:  # SDEdit: start at the schedule's first t from a noised k_start
        ab = schedule.alpha_bar_at(int(schedule.timesteps[0]), like=k_t)
        k_t = ab.sqrt() * diffusion.to_diffusion(k_start.to(dev, dtype)) + (1 - ab).sqrt() * k_t
    pairs = schedule.pairs()
    trace: list[list[float]] = []
    residual = None
    k0_hat = k_t
    for i, (t, t_prev) in enumerate(pairs):
        ab_t = schedule.alpha_bar_at(t, like=k_t)
        ab_prev = schedule.alpha_bar_at(t_prev, like=k_t)
        tt = torch.full((B,), t, dtype=torch.long, device=dev)
        noise = randn()
        through_net = guidance is not None and guidance.route == "kt"
        with torch.set_grad_enabled(through_net):
            k_in = k_t.detach().requires_grad_(through_net)
            epsilon = model(k_in, None, tt, image_features=features)
            out = step(k_in, epsilon, ab_t, ab_prev, noise)
        k_prev, k0_hat = out.k_prev.detach(), out.k0_hat
        info: dict = {"t": t}
        if guidance is not None:
            wrt = k_in if through_net else k0_hat.detach().requires_grad_(True)
            k0_src = k0_hat if through_net else wrt
            with torch.enable_grad():
                r = guidance.residual(diffusion.from_diffusion(k0_src))
                (grad,) = torch.autograd.grad(guidance.penalty(r).sum(), wrt)
            k_prev = k_prev - guidance.step_size(r) * grad.detach()
            residual = r.detach()
            trace.append(residual.tolist())
            info["residual"] = float(residual.min())
        k_t = k_prev
        k0_hat = k0_hat.detach()
        if callback is not None:
            callback(i, len(pairs), info)
    # the last reverse step lands on k_0 (alpha_bar_prev = 1), so k_t is the sample itself
    return SampleResult(diffusion.from_diffusion(k_t.detach()), residual, trace)


def ddim(eta: float = 0.0) -> ReverseStep:
    """The DDIM reverse step (:func:`~kdiff_cli.maths.diffusion.ddim_step`) with ``eta`` fixed."""
    eta = float(eta)

    def step(k_t, epsilon, alpha_bar_t, alpha_bar_prev, noise):
        return diffusion.ddim_step(k_t, epsilon, alpha_bar_t, alpha_bar_prev, eta=eta, noise=noise)

    return step


def ddpm(variance: str = "posterior") -> ReverseStep:
    """The ancestral DDPM reverse step (:func:`~kdiff_cli.maths.diffusion.ddpm_step`, eq. 18)."""

    def step(k_t, epsilon, alpha_bar_t, alpha_bar_prev, noise):
        return diffusion.ddpm_step(k_t, epsilon, alpha_bar_t, alpha_bar_prev, noise=noise, variance=variance)

    return step


def check_steps(steps: int, schedule: NoiseSchedule) -> int:
    if not 1 <= int(steps) <= schedule.T:
        raise KdiffError(f"--steps must be in 1..{schedule.T}, got {steps}")
    return int(steps)
