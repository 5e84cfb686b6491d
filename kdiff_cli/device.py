"""Device selection shared by every command (``auto`` -> cuda, else mps, else cpu), and CPU thread sharing."""

from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def split_threads(device: torch.device, ways: int = 2) -> Iterator[int]:
    """Share the CPU's intra-op threads between ``ways`` computations run at once on Python threads.

    On the CPU the torch thread count is set to ``max(1, n // ways)`` for the block and restored
    after it (also when the block's own code changed it meanwhile, as
    ``kdiff_cli.maths.alternating`` does); on other devices nothing changes. Yields the count.
    """
    if device.type != "cpu":
        yield torch.get_num_threads()
        return
    n = torch.get_num_threads()
    share = max(1, n // ways)
    torch.set_num_threads(share)
    try:
        yield share
    finally:
        torch.set_num_threads(n)
