"""Non-blind solvers by name: construction, weights and device (:func:`load_solver`).

A solver is a registered ``nn.Module`` class (see docs/solvers.md) with ``default_weights`` naming
its shipped file (``weights/<name>.safetensors``) or ``None`` when it has nothing to learn.
Weights files written by ``kdiff train`` carry the constructor arguments in their metadata
(``{"solver": name, "model": {...}}``), so the architecture is rebuilt from the file.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn

from kdiff_cli import plugins
from kdiff_cli import weights as wio
from kdiff_cli.device import resolve_device
from kdiff_cli.errors import KdiffError


def is_learned(cls: type) -> bool:
    """Whether solver class ``cls`` needs trained weights (it has parameters or default weights)."""
    if getattr(cls, "default_weights", None):
        return True
    try:
        return any(True for _ in cls().parameters())
    except TypeError:
        return True


def load_solver(
    name: str,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The solver ``name`` ready for inference: weights loaded, on ``device``, eval mode, frozen.

    ``weights``: a ``.safetensors`` path or a shipped name; ``None`` uses the class's
    ``default_weights``. A learned solver without weights, a solver that takes none given some,
    and a truncated, corrupted or mismatched file all raise a one-line :class:`KdiffError`.
    Parameters have ``requires_grad=False`` (gradients still flow to ``y`` and ``k``); call
    ``requires_grad_(True)`` to fine-tune.
    """
    cls = plugins.get("solver", name)
    dev = resolve_device(device)
    source = weights if weights is not None else getattr(cls, "default_weights", None)
    if source is None:
        if is_learned(cls):
            raise KdiffError(f"solver {name!r} is learned but has no weights: pass --weights FILE")
        model = cls()
    else:
        if weights is not None and not is_learned(cls):
            raise KdiffError(f"solver {name!r} has no learned parameters and takes no weights")
        try:
            path = wio.resolve(source)
        except KdiffError as e:
            if weights is None:
                raise KdiffError(
                    f"solver {name!r} needs trained weights and none are shipped "
                    f"(weights/{source}.safetensors); train it with `kdiff train` or pass --weights FILE"
                ) from None
            raise e from None
        _, meta = wio.read(path)
        owner = meta.get("solver")
        if owner is not None and owner != name:
            raise KdiffError(f"weights file {path} is for solver {owner!r}, not {name!r}")
        kwargs = meta.get("model", {})
        if not isinstance(kwargs, dict):
            raise KdiffError(f"weights file {path} has malformed metadata (model is not a table)")
        try:
            model = cls(**kwargs)
        except (TypeError, KdiffError) as e:
            raise KdiffError(f"weights file {path} does not match solver {name!r}: {e}") from None
        wio.load_into(model, path)
    model = model.to(dev).eval()
    model.requires_grad_(False)
    return model


@functools.lru_cache(maxsize=8)
def cached_solver(name: str = "wiener", weights: str | None = None, device: str = "cpu") -> nn.Module:
    """:func:`load_solver`, cached per (name, weights, device): for loops that score many images."""
    return load_solver(name, weights=weights, device=device)
