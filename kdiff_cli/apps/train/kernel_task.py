"""The ``kernel-diff`` training task: the conditional U-Net epsilon_theta(k_t, y, t) of section 3.3.

Loss (the paper's, L2): draw ``t ~ U{0..T-1}`` and ``epsilon ~ N(0, I)``, form
``k_t = sqrt(alpha_bar_t) to_diffusion(k) + sqrt(1 - alpha_bar_t) epsilon`` and regress
``epsilon`` from ``(k_t, 2y - 1, t)`` with the mean squared error.

Validation (unguided, so it measures the prior p(k | y) alone): a short deterministic DDIM run
(``validate.steps``, 25 by default) per validation crop, through the reverse loop ``kdiff deblur``
uses (:func:`kdiff_cli.maths.sampling.reverse_diffusion`), scored by the mean MNC against the true
kernels; ``mnc_random`` is the mean MNC of random kernels from the same kernel source (the
chance level), and ``eps_mse`` the denoising loss on the validation crops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdiff_cli.maths import diffusion
from kdiff_cli.errors import KdiffError
from kdiff_cli.apps.train.task_base import Task, constructor_defaults
from kdiff_cli.maths import sampling
from kdiff_cli.maths.sampling import reverse_diffusion
from kdiff_cli.maths.schedule import NoiseSchedule
from kdiff_cli.maths.unet import KernelUNet, build_unet

#: U-Net arguments that come from the data section, not from [model]
_FROM_DATA = ("kernel_size", "image_channels")
IMAGE_CHANNELS = 3  # training batches are RGB


def unet_config(cfg: dict) -> dict[str, Any]:
    """The :class:`KernelUNet` arguments of a resolved config (model section + kernel size)."""
    return {**cfg["model"], "kernel_size": int(cfg["data"]["kernel_size"]), "image_channels": IMAGE_CHANNELS}


def sample_unguided(
    model: KernelUNet,
    schedule: NoiseSchedule,
    y: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    eta: float = 0.0,
) -> torch.Tensor:
    """Kernels (B, 1, S, S) sampled from p(k | y) by DDIM without guidance (for validation).

    The reverse loop is :func:`kdiff_cli.maths.sampling.reverse_diffusion` with the DDIM step, as
    the ``ddim`` sampler of ``kdiff deblur`` runs it (without its reblur guidance).
    """
    schedule.set_timesteps(steps)
    step = sampling.ddim(eta)
    return reverse_diffusion(model, schedule, y, step, generator=generator).k


class KernelDiffTask(Task):
    """Train epsilon_theta(k_t, y, t) on blurred crops and their kernels."""

    name = "kernel-diff"
    description = "the conditional kernel diffusion U-Net epsilon_theta(k_t, y, t) (paper section 3.3)"

    def __init__(self) -> None:
        self.schedule = NoiseSchedule()

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        model = {k: v for k, v in constructor_defaults(KernelUNet).items() if k not in _FROM_DATA}
        return {
            "data": {"crop": 128, "batch": 16, "kernel_size": 64, "generators": ["borodenko"]},
            "model": model,  # KernelUNet arguments (see kdiff_cli/maths/unet.py); kernel_size comes from data
            "diffusion": NoiseSchedule().to_dict(),  # T and the beta schedule (paper: 1000, linear 1e-4..0.02)
            "validate": {
                "steps": 25,  # DDIM steps of the unguided validation samples
                "eta": 0.0,  # DDIM eta of those samples (0 = deterministic)
                "count": 16,  # validation crops sampled (at most data.val_count)
            },
        }

    def build_model(self, cfg: dict) -> torch.nn.Module:
        self.schedule = NoiseSchedule.from_dict(cfg["diffusion"])
        model = build_unet(unet_config(cfg))
        crop = int(cfg["data"]["crop"])
        if crop % model.image_stride:
            raise KdiffError(f"data.crop {crop} is not a multiple of the image-encoder stride {model.image_stride} "
                             "(change data.crop or model.image_channel_mult)")
        v = cfg["validate"]
        if not 1 <= v["steps"] <= self.schedule.T:
            raise KdiffError(f"validate.steps must be in 1..{self.schedule.T}, got {v['steps']}")
        if v["eta"] < 0:
            raise KdiffError(f"validate.eta must be >= 0, got {v['eta']}")
        return model

    def loss(self, model, batch, generator):
        k0 = diffusion.to_diffusion(batch["k"].float())
        cond = diffusion.image_to_condition(batch["y"])
        return diffusion.training_loss(model, k0, cond, self.schedule.alpha_bar, generator)

    def validate(self, model, batches, cfg, generator):
        from kdiff_cli.apps.train import data as data_mod
        from kdiff_cli.maths.ops import mnc

        v = cfg["validate"]
        schedule = NoiseSchedule.from_dict(cfg["diffusion"])  # own copy: set_timesteps mutates it
        source = data_mod.kernel_source(cfg["data"])
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        left = int(v["count"])
        scores, chance, eps = [], [], []
        for b in batches:
            if left <= 0:
                break
            y, k = b["y"][:left], b["k"][:left]
            left -= y.shape[0]
            eps.append(float(diffusion.training_loss(model, diffusion.to_diffusion(k.float()),
                                                     diffusion.image_to_condition(y), schedule.alpha_bar, generator)))
            k_hat = sample_unguided(model, schedule, y, v["steps"], generator, v["eta"])
            scores.append(mnc(k_hat.cpu(), k.cpu()))
            k_rand = torch.from_numpy(source.sample(rng, y.shape[0])).float().unsqueeze(1)
            chance.append(mnc(k_rand, k.cpu()))
        if not scores:
            return {}
        return {
            "mnc": float(torch.cat(scores).mean()),
            "mnc_random": float(torch.cat(chance).mean()),
            "eps_mse": float(np.mean(eps)),
        }

    def weights_metadata(self, cfg: dict) -> dict:
        return {
            "unet": build_unet(unet_config(cfg)).config,
            "schedule": NoiseSchedule.from_dict(cfg["diffusion"]).to_dict(),
            "kernel_map": "to_diffusion(k) = 2 k / max(k) - 1; from_diffusion(k_d) = normalise(clamp((k_d + 1) / 2, 0))",
            "condition": "y in [0, 1] mapped to 2 y - 1",
        }
