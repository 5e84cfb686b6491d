"""Device selection shared by every command: ``auto`` -> cuda, else mps, else cpu."""

from __future__ import annotations

import torch

from kdiff_cli.errors import KdiffError


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """The torch device for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; unavailable ones raise."""
    if isinstance(device, torch.device):
        return device
    name = str(device)
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdiffError(f"device {name!r} requested but CUDA is not available")
    if name == "mps" and not mps_ok:
        raise KdiffError("device 'mps' requested but MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise KdiffError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
