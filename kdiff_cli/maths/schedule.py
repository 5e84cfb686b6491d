"""The diffusion noise schedule: beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{i<=t} alpha_i.

A :class:`NoiseSchedule` holds the schedule's numbers and the (possibly strided) list of
timesteps a sampler visits; it holds no model and serialises to a plain dict (JSON/TOML).

Indexing: timesteps are 0-based, ``t = 0 .. T-1``, so ``alpha_bar[t]`` is the paper's
:math:`\\bar\\alpha_{t+1}` (``alpha_bar[0] = 1 - beta_1``). ``alpha_bar_prev(-1) = 1`` stands for
the clean kernel k_0, so the last reverse step of any schedule lands on k_0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdiff_cli.errors import KdiffError

#: beta schedules this module knows (the paper uses ``linear``, as in Ho et al. / Dhariwal & Nichol)
BETA_SCHEDULES = ("linear",)


class NoiseSchedule:
    """Variance schedule of the forward process q(k_t | k_{t-1}) = N(sqrt(alpha_t) k_{t-1}, beta_t I).

    Tensors ``beta``, ``alpha`` and ``alpha_bar`` are float64 of length ``T``; ``timesteps`` is the
    descending list a sampler visits (all ``T`` of them until :meth:`set_timesteps` strides it).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,  # T, the number of forward diffusion steps (paper: 1000)
        beta_start: float = 1e-4,  # beta_1, the first noise variance (paper: linear 1e-4 ...)
        beta_end: float = 0.02,  # beta_T, the last noise variance (... to 0.02)
        beta_schedule: str = "linear",  # how beta goes from beta_start to beta_end
    ):
        if beta_schedule not in BETA_SCHEDULES:
            raise KdiffError(f"unknown beta schedule {beta_schedule!r} (choose from {', '.join(BETA_SCHEDULES)})")
        if int(num_train_timesteps) < 1:
            raise KdiffError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if not (0.0 < beta_start <= beta_end < 1.0):
            raise KdiffError(f"need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.beta_schedule = beta_schedule
        self.beta = torch.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float64)
        self.alpha = 1.0 - self.beta
        self.alpha_bar = torch.cumprod(self.alpha, dim=0)
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1, dtype=torch.long)

    # ------------------------------------------------------------------ sampling schedule

    @property
    def T(self) -> int:
        """The number of training timesteps."""
        return self.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Visit ``num_inference_steps`` timesteps evenly spread over ``T-1 .. 0`` (descending).

        The first is always ``T - 1`` (start from pure noise) and the last ``0``; ``n = T`` gives
        every timestep (ancestral DDPM). Returns and stores ``self.timesteps`` (int64).
        """
        n = int(num_inference_steps)
        if not 1 <= n <= self.T:
            raise KdiffError(f"number of sampling steps must be in 1..{self.T}, got {num_inference_steps}")
        if n == 1:
            ts = np.array([self.T - 1])
        else:
            ts = np.unique(np.round(np.linspace(0, self.T - 1, n)).astype(np.int64))[::-1]
        self.timesteps = torch.from_numpy(ts.copy())
        return self.timesteps

    def prev_timestep(self, t: int) -> int:
        """The timestep visited after ``t`` in the current schedule (``-1`` after the last one)."""
        ts = self.timesteps.tolist()
        if t not in ts:
            raise KdiffError(f"timestep {t} is not in the current schedule")
        i = ts.index(t)
        return ts[i + 1] if i + 1 < len(ts) else -1

    def pairs(self) -> list[tuple[int, int]]:
        """``(t, t_prev)`` for every reverse step of the current schedule, ``t_prev = -1`` last."""
        ts = self.timesteps.tolist()
        return list(zip(ts, ts[1:] + [-1]))

    # ------------------------------------------------------------------ lookups

    def alpha_bar_at(self, t, like: torch.Tensor | None = None) -> torch.Tensor:
        """``alpha_bar[t]`` for an int or an int tensor ``t`` (``t = -1`` gives 1, i.e. k_0).

        With ``like``, the result has ``like``'s dtype and device.
        """
        t = torch.as_tensor(t, dtype=torch.long)
        if bool(((t < -1) | (t >= self.T)).any()):
            raise KdiffError(f"timestep out of range -1..{self.T - 1}: {t.tolist()}")
        ab = torch.cat([self.alpha_bar, torch.ones(1, dtype=torch.float64)])  # index -1 -> 1
        out = ab[t.cpu()]
        if like is not None:
            out = out.to(dtype=like.dtype, device=like.device)
        return out

    def alpha_bar_prev(self, t, like: torch.Tensor | None = None) -> torch.Tensor:
        """``alpha_bar`` at the timestep that follows ``t`` in the current schedule."""
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return self.alpha_bar_at(torch.tensor([self.prev_timestep(int(s)) for s in t]), like)
        return self.alpha_bar_at(self.prev_timestep(int(t)), like)

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` training timesteps drawn uniformly from ``0 .. T-1`` (int64, CPU)."""
        return torch.randint(0, self.T, (batch,), generator=generator)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments, as plain JSON/TOML values."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseSchedule":
        """Rebuild from :meth:`to_dict`'s output; unknown keys are an error."""
        known = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule"}
        extra = sorted(set(d) - known)
        if extra:
            raise KdiffError(f"unknown schedule option(s): {', '.join(extra)} (known: {', '.join(sorted(known))})")
        return cls(**d)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"NoiseSchedule({args}, steps={len(self.timesteps)})"
