"""The contract of a trainable task: what the training engine (:mod:`kdiff_cli.apps.train.loop`)
trains, and how; with the pieces tasks share (:func:`psnr`, which is
:func:`kdiff_cli.maths.metrics.psnr_batch`; :func:`image_loss`; :func:`constructor_defaults`).
Tasks are registered in :mod:`kdiff_cli.apps.train.tasks`.

A task is an object with these attributes and methods (subclass :class:`Task`):

``name: str``
    the name given to ``kdiff train NAME``.
``description: str``
    one line.
``defaults: dict``
    the task's config sections, merged over the engine's defaults
    (:data:`kdiff_cli.config.BASE_DEFAULTS`). A task may add sections (``model``, ``loss``,
    ``diffusion``...) and override engine values (e.g. ``{"data": {"crop": 64}}``). Every key a
    user may set must appear here with a default of the right type (str, int, float, bool, list
    or table); an empty table ``{}`` is free-form.
``build_model(cfg) -> torch.nn.Module``
    a fresh model from the resolved config ``cfg`` (a plain nested dict: ``cfg["model"]["width"]``);
    it is called once per process before any ``loss``, so it may also keep options ``loss`` needs.
    The engine seeds torch's global RNG before calling it, moves the model to the device, keeps an
    EMA copy and, under torchrun, wraps it in ``DistributedDataParallel``.
``loss(model, batch, generator) -> torch.Tensor``
    the scalar training loss of one batch. Call ``model(...)`` (its ``forward``) only, since
    ``model`` may be a DDP wrapper. It runs under autocast when ``train.precision`` is bf16/fp16,
    so return a float32 scalar (``.float()`` before reducing) and keep FFTs in float32.
    ``generator`` is a seeded CPU ``torch.Generator`` whose state is checkpointed: draw every
    random number of the loss with it (e.g. ``torch.randint(..., generator=generator)`` on the
    CPU, then ``.to(batch["x"].device)``) so that ``--resume`` continues exactly.
``validate(model, batches, cfg, generator) -> dict[str, float]``
    metrics of the (EMA, unwrapped, eval-mode) model on the fixed validation batches, called
    under ``torch.no_grad()`` in float32; ``generator`` is freshly seeded with ``data.val_seed``
    at every validation, so the figures are comparable across steps. The first key is the
    headline figure (shown in the progress bar, plotted, stored in the weights metadata).
``weights_metadata(cfg) -> dict``
    extra JSON metadata stored in the exported safetensors file (e.g. the architecture
    arguments needed to rebuild the model).

Batches are dicts of tensors on the training device:

* ``x``: clean crops ``(B, 3, P, P)`` in [0, 1];
* ``k``: kernels ``(B, 1, S, S)``, nonnegative, summing to 1;
* ``y``: ``ops.conv2d(x, k, data.boundary) + sigma * n``, ``n ~ N(0, I)``;
* ``sigma``: ``(B,)`` noise standard deviations.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.metrics import psnr_batch as psnr  # per-image PSNR of a batch (validation)


class Task:
    """Base class of trainable tasks; see the module docstring for the contract."""

    name: str = ""
    description: str = ""
    defaults: dict[str, Any] = {}

    def build_model(self, cfg: dict) -> torch.nn.Module:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], cfg: dict,
                 generator: torch.Generator) -> dict[str, float]:
        return {}

    def weights_metadata(self, cfg: dict) -> dict:
        return {}


# --------------------------------------------------------------------------- shared pieces


def image_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "l1", eps: float = 1e-3) -> torch.Tensor:
    """Reconstruction loss: ``l1``, ``l2`` or ``charbonnier`` (sqrt(d^2 + eps^2)), float32 mean."""
    d = x_hat.float() - x.float()
    if kind == "l1":
        return d.abs().mean()
    if kind == "l2":
        return d.pow(2).mean()
    if kind == "charbonnier":
        return torch.sqrt(d * d + eps * eps).mean()
    raise KdiffError(f"unknown loss.kind {kind!r} (choose from l1, l2, charbonnier)")


_SIMPLE = (bool, int, float, str)


def constructor_defaults(cls: Any) -> dict[str, Any]:
    """The keyword arguments of ``cls.__init__`` that have simple TOML-able defaults."""
    out: dict[str, Any] = {}
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return out
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is inspect.Parameter.empty:
            continue
        d = p.default
        if isinstance(d, tuple):
            d = list(d)
        if isinstance(d, _SIMPLE) and not (isinstance(d, float) and not math.isfinite(d)):
            out[p.name] = d
        elif isinstance(d, list) and d and all(isinstance(v, type(d[0])) and isinstance(v, _SIMPLE) for v in d):
            out[p.name] = d
    return out
