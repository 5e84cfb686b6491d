"""Training batches drawn on the training device: resident images and a kernel bank.

On a GPU the on-the-fly batches of :mod:`kdiff_cli.apps.train.data` (crops cut and kernels drawn by numpy in
the training process) take longer than a step of a kernel-resolution network. With ``data.bank``
> 0 the training loop uses :class:`DeviceCrops` instead:

* the training images are kept on the device (portrait ones transposed, so they stack into one
  tensor: transposes and flips are augmentations anyway); crops are gathered by indexing;
* ``data.bank`` kernels are drawn once, before training, from the ``data.generators`` mixture
  (``data.bank_workers`` forked processes, :func:`kdiff_cli.apps.synth_chunks.synthesize`); each batch picks
  kernels from the bank and applies one of the 8 rotations/reflections to each, so the bank is
  seen in 8 x as many variants;
* blur and noise are as in :class:`kdiff_cli.apps.train.data.BlurredCrops` (``ops.conv2d``, ``boundary``).

All randomness comes from the ``torch.Generator`` on the CPU (the noise from a device generator
seeded from it), so a seed gives the same batches on a device (crops and kernels on every device;
the bank from ``seed``). Batches are ``{x, k, y, sigma}`` as in :mod:`kdiff_cli.apps.train.data`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from kdiff_cli.apps.train import data as data_mod
from kdiff_cli.maths import ops
from kdiff_cli.errors import KdiffError

#: ~bytes per bank kernel of side S: S * S float32
_MAX_BANK_BYTES = 8 * 2**30


def kernel_bank(data: Mapping[str, Any], seed: int, workers: int = 1) -> np.ndarray:
    """``data.bank`` kernels (N, S, S) float32 from the generator mixture (or the kernels file)."""
    from kdiff_cli import plugins
    from kdiff_cli.apps import synth_chunks

    count, size = int(data["bank"]), int(data["kernel_size"])
    if count * size * size * 4 > _MAX_BANK_BYTES:
        raise KdiffError(f"data.bank = {count} kernels of {size}x{size} need more than "
                         f"{_MAX_BANK_BYTES // 2**30} GiB; lower data.bank")
    if data.get("kernels_file"):
        return data_mod.kernel_source(data).sample(np.random.default_rng(seed), count).astype(np.float32)
    names = list(data["generators"])
    w = np.asarray(data["generator_weights"] or [1.0] * len(names), dtype=np.float64)
    counts = np.floor(w / w.sum() * count).astype(int)
    counts[0] += count - counts.sum()
    params = data.get("generator_params", {}) or {}
    parts = [
        synth_chunks.synthesize(plugins.get("generator", n), int(c), size, seed + 7919 * i, workers,
                         dict(params.get(n, {})), dtype=np.float32)
        for i, (n, c) in enumerate(zip(names, counts)) if c > 0
    ]
    bank = np.concatenate(parts).astype(np.float32)
    bank = np.clip(bank, 0, None)
    return bank / bank.sum(axis=(1, 2), keepdims=True).clip(1e-12)


def _stack_images(images: list[np.ndarray], crop: int) -> torch.Tensor:
    """(N, 3, H, W) float32 in [0, 1]: landscape orientation, mirror-padded to a common size."""
    rgb = [data_mod.to_unit(im) for im in images]
    rgb = [im.transpose(1, 0, 2) if im.shape[0] > im.shape[1] else im for im in rgb]
    H = max(crop, max(im.shape[0] for im in rgb))
    W = max(crop, max(im.shape[1] for im in rgb))
    out = np.empty((len(rgb), 3, H, W), dtype=np.float32)
    for i, im in enumerate(rgb):
        ph, pw = H - im.shape[0], W - im.shape[1]
        out[i] = np.pad(im, ((0, ph), (0, pw), (0, 0)), mode="symmetric").transpose(2, 0, 1)
    return torch.from_numpy(out)


def _dihedral(a: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """One of the 8 rotations/reflections of each square item of ``a`` (B, ..., P, P), chosen by
    ``bits`` (B, 3) bool: flip columns, flip rows, transpose."""
    b = bits.reshape(bits.shape[0], 3, *([1] * (a.dim() - 1)))
    a = torch.where(b[:, 0], a.flip(-1), a)
    a = torch.where(b[:, 1], a.flip(-2), a)
    return torch.where(b[:, 2], a.transpose(-1, -2), a)


class DeviceCrops:
    """Draws training batches ``{x, k, y, sigma}`` with images and kernels held on ``device``."""

    def __init__(self, images: list[np.ndarray], bank: np.ndarray, crop: int, sigma_min: float,
                 sigma_max: float, device: torch.device | str, flip: bool = True, boundary: str = "symmetric"):
        if not images:
            raise KdiffError("no training images")
        if not 0 <= sigma_min <= sigma_max:
            raise KdiffError(f"need 0 <= data.sigma_min <= data.sigma_max, got {sigma_min}, {sigma_max}")
        self.device = torch.device(device)
        self.images = _stack_images(images, crop).to(self.device)
        # keep each image's own extent (before padding) so crops stay inside real pixels when they fit
        sizes = [(im.shape[:2] if im.shape[0] <= im.shape[1] else im.shape[1::-1]) for im in images]
        self.extent = torch.tensor([[max(h, crop), max(w, crop)] for h, w in sizes])
        self.bank = torch.from_numpy(np.ascontiguousarray(bank)).float().to(self.device)
        self.crop = int(crop)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.flip = flip
        self.boundary = boundary

    def sample(self, batch: int, rng: np.random.Generator | None, generator: torch.Generator,
               device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """One batch on this source's device (``rng`` is unused: all draws come from ``generator``)."""
        dev, P = self.device, self.crop
        which = torch.randint(0, self.images.shape[0], (batch,), generator=generator)
        ext = self.extent[which]
        r0 = (torch.rand(batch, generator=generator) * (ext[:, 0] - P + 1)).long()
        c0 = (torch.rand(batch, generator=generator) * (ext[:, 1] - P + 1)).long()
        ar = torch.arange(P)
        rows = (r0[:, None] + ar[None]).to(dev)
        cols = (c0[:, None] + ar[None]).to(dev)
        x = self.images[which.to(dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # B,P,P,3
        x = x.permute(0, 3, 1, 2)
        if self.flip:
            x = _dihedral(x, torch.rand(batch, 3, generator=generator).to(dev) < 0.5)
        x = x.contiguous()
        k = self.bank[torch.randint(0, self.bank.shape[0], (batch,), generator=generator).to(dev)]
        k = _dihedral(k, torch.rand(batch, 3, generator=generator).to(dev) < 0.5)
        k = k.unsqueeze(1).contiguous()
        sigma = (self.sigma_min + (self.sigma_max - self.sigma_min) * torch.rand(batch, generator=generator)).to(dev)
        # the noise (the largest draw) comes from a device generator seeded from ``generator``
        noise_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        blurred = ops.conv2d(x, k, self.boundary)
        noise = torch.randn(blurred.shape, generator=noise_gen, device=dev, dtype=blurred.dtype)
        y = blurred + sigma[:, None, None, None] * noise
        return {"x": x, "k": k, "y": y, "sigma": sigma}


def from_config(data: Mapping[str, Any], device: torch.device | str, seed: int) -> DeviceCrops:
    """The device-resident batch source described by ``[data]`` (``data.bank`` > 0)."""
    bank = kernel_bank(data, seed, int(data.get("bank_workers", 1)))
    return DeviceCrops(data_mod.load_images(data["train_dir"]), bank, int(data["crop"]), data["sigma_min"],
                       data["sigma_max"], device, flip=data["flip"], boundary=data["boundary"])
