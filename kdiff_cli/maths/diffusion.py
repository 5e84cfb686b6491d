"""Diffusion core for kernels, as pure functions (no model, no schedule state).

* the kernel <-> diffusion-range map: ``to_diffusion(k) = 2 k / max(k) - 1`` per kernel (peak at
  +1, background at -1) and its inverse ``from_diffusion(k_d) = normalise(clamp((k_d + 1) / 2, 0))``.
  The round trip is exact because a kernel sums to 1: ``(k_d + 1) / 2 = k / max(k)`` is ``k`` up
  to a positive scale, which the normalisation to sum 1 removes.
* the forward process ``q_sample`` (eq. 7), the epsilon-prediction L2 loss (the paper's choice:
  L1 converged to kernels smaller than the target), the eq. (19) estimate ``predict_k0`` and the
  reverse steps ``ddpm_step`` (eq. 18, posterior q(k_{t-1} | k_t, k_0)) and ``ddim_step`` (eta).

Every ``alpha_bar_*`` argument is a float or a tensor of shape ``()`` or ``(B,)`` (one value per
kernel); kernels in diffusion range are ``(B, 1, S, S)``. Look the values up with
:meth:`kdiff_cli.maths.schedule.NoiseSchedule.alpha_bar_at`; ``alpha_bar_prev = 1`` means "step to k_0".
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.ops import normalize_kernel


# --------------------------------------------------------------------------- kernel <-> diffusion range


def to_diffusion(k: torch.Tensor) -> torch.Tensor:
    """Map kernels (nonnegative, sum 1) to the diffusion range: ``2 k / max(k) - 1`` per kernel."""
    peak = k.amax(dim=(-2, -1), keepdim=True)
    if bool((peak <= 0).any()):
        raise KdiffError("a kernel has no positive entry; kernels must be nonnegative and sum to 1")
    return 2.0 * k / peak - 1.0


def from_diffusion(k_d: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_diffusion`: ``normalise(clamp((k_d + 1) / 2, min=0))`` (sum 1, >= 0).

    An all-nonpositive input (nothing above the background) becomes a centred delta.
    """
    return normalize_kernel(((k_d + 1.0) / 2.0).clamp(min=0.0))


def image_to_condition(y: torch.Tensor) -> torch.Tensor:
    """Map a blurred image from [0, 1] to the network's conditioning range [-1, 1]."""
    return 2.0 * y - 1.0


# --------------------------------------------------------------------------- forward process and loss


def _per_sample(a, like: torch.Tensor) -> torch.Tensor:
    """A float / () / (B,) value as a tensor broadcastable against ``like`` (B, ...)."""
    a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
    if a.dim() == 0:
        return a
    if a.dim() != 1 or a.shape[0] not in (1, like.shape[0]):
        raise KdiffError(f"per-sample values must have shape () or ({like.shape[0]},), got {tuple(a.shape)}")
    return a.reshape(-1, *([1] * (like.dim() - 1)))


def q_sample(k0: torch.Tensor, epsilon: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Forward process in closed form: ``k_t = sqrt(alpha_bar_t) k_0 + sqrt(1 - alpha_bar_t) epsilon``."""
    ab = _per_sample(alpha_bar_t, k0)
    return ab.sqrt() * k0 + (1.0 - ab).sqrt() * epsilon


def epsilon_loss(epsilon_pred: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """The training loss: mean squared error between predicted and true noise (L2, not L1)."""
    return torch.mean((epsilon_pred.float() - epsilon.float()) ** 2)


def training_loss(
    model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    k0: torch.Tensor,
    condition: torch.Tensor,
    alpha_bar: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One Monte-Carlo sample of the denoising loss E_{t, epsilon} ||epsilon - eps_theta(k_t, y, t)||^2.

    ``k0``: kernels already in diffusion range (B, 1, S, S); ``condition``: the network's image input;
    ``alpha_bar``: the schedule's (T,) table. ``t`` and ``epsilon`` are drawn from ``generator``
    (on the CPU, so the same seed gives the same loss on any device).
    """
    B = k0.shape[0]
    T = alpha_bar.shape[0]
    t = torch.randint(0, T, (B,), generator=generator)
    epsilon = torch.randn(k0.shape, generator=generator, dtype=k0.dtype).to(k0.device)
    k_t = q_sample(k0, epsilon, alpha_bar[t])
    return epsilon_loss(model(k_t, condition, t.to(k0.device)), epsilon)


# --------------------------------------------------------------------------- reverse process


class Step(NamedTuple):
    """Result of one reverse step: the next sample and the eq. (19) estimate used to get it."""

    k_prev: torch.Tensor
    k0_hat: torch.Tensor


def predict_k0(k_t: torch.Tensor, epsilon: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """Eq. (19): ``k0_hat = (k_t - sqrt(1 - alpha_bar_t) epsilon) / sqrt(alpha_bar_t)``."""
    ab = _per_sample(alpha_bar_t, k_t)
    return (k_t - (1.0 - ab).sqrt() * epsilon) / ab.sqrt()


def predict_epsilon(k_t: torch.Tensor, k0: torch.Tensor, alpha_bar_t) -> torch.Tensor:
    """The noise that makes ``k_t`` from ``k0`` (inverse of :func:`predict_k0` in ``epsilon``)."""
    ab = _per_sample(alpha_bar_t, k_t)
    return (k_t - ab.sqrt() * k0) / (1.0 - ab).clamp(min=1e-20).sqrt()


def _k0_and_epsilon(k_t, epsilon, alpha_bar_t, clip_k0: bool):
    k0_hat = predict_k0(k_t, epsilon, alpha_bar_t)
    if clip_k0:
        k0_hat = k0_hat.clamp(-1.0, 1.0)
        epsilon = predict_epsilon(k_t, k0_hat, alpha_bar_t)
    return k0_hat, epsilon


def _need_noise(noise: torch.Tensor | None, k_t: torch.Tensor) -> torch.Tensor:
    if noise is None:
        raise KdiffError("this reverse step is stochastic: pass noise (zeros for the mean)")
    if noise.shape != k_t.shape:
        raise KdiffError(f"noise shape {tuple(noise.shape)} does not match k_t {tuple(k_t.shape)}")
    return noise


def ddpm_step(
    k_t: torch.Tensor,
    epsilon: torch.Tensor,
    alpha_bar_t,
    alpha_bar_prev,
    *,
    noise: torch.Tensor | None = None,
    variance: str = "posterior",
    clip_k0: bool = False,
) -> Step:
    """Ancestral step of eq. (18): ``k_{t-1} = (k_t - beta_t / sqrt(1 - alpha_bar_t) epsilon) / sqrt(alpha_t) + sigma_t z``.

    With ``alpha_t = alpha_bar_t / alpha_bar_prev`` (so strided schedules work; for consecutive
    steps it is the schedule's alpha_t). ``variance``: ``posterior`` (sigma_t^2 = beta_tilde_t =
    (1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t, zero on the last step) or ``beta``
    (sigma_t^2 = beta_t). ``noise`` is z ~ N(0, I) (required; zeros give the posterior mean).
    ``clip_k0`` clamps k0_hat to [-1, 1] before forming the mean (identical to eq. 18 without it).
    """
    ab_t = _per_sample(alpha_bar_t, k_t)
    ab_prev = _per_sample(alpha_bar_prev, k_t)
    alpha_t = ab_t / ab_prev
    beta_t = 1.0 - alpha_t
    k0_hat, epsilon = _k0_and_epsilon(k_t, epsilon, alpha_bar_t, clip_k0)
    # posterior mean in its k0 form (eq. 7 of Ho et al.); equal to eq. (18) when k0_hat is unclipped
    mean = (ab_prev.sqrt() * beta_t / (1.0 - ab_t)) * k0_hat + (alpha_t.sqrt() * (1.0 - ab_prev) / (1.0 - ab_t)) * k_t
    if variance == "posterior":
        var = beta_t * (1.0 - ab_prev) / (1.0 - ab_t)
    elif variance == "beta":
        var = beta_t
    else:
        raise KdiffError(f"unknown DDPM variance {variance!r} (choose from posterior, beta)")
    z = _need_noise(noise, k_t)
    return Step(mean + var.clamp(min=0).sqrt() * z, k0_hat)


def ddim_step(
    k_t: torch.Tensor,
    epsilon: torch.Tensor,
    alpha_bar_t,
    alpha_bar_prev,
    *,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    clip_k0: bool = False,
) -> Step:
    """DDIM step (Song et al., eq. 12): ``k_prev = sqrt(ab_prev) k0_hat + sqrt(1 - ab_prev - s^2) epsilon + s z``.

    ``s = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)``; ``eta = 0`` is
    deterministic (``noise`` may be omitted), ``eta = 1`` matches the DDPM posterior variance.
    """
    if eta < 0:
        raise KdiffError(f"eta must be >= 0, got {eta}")
    ab_t = _per_sample(alpha_bar_t, k_t)
    ab_prev = _per_sample(alpha_bar_prev, k_t)
    k0_hat, epsilon = _k0_and_epsilon(k_t, epsilon, alpha_bar_t, clip_k0)
    sigma = eta * ((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)).clamp(min=0).sqrt()
    k_prev = ab_prev.sqrt() * k0_hat + (1.0 - ab_prev - sigma**2).clamp(min=0).sqrt() * epsilon
    if eta > 0:
        k_prev = k_prev + sigma * _need_noise(noise, k_t)
    return Step(k_prev, k0_hat)
