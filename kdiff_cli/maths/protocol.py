"""The paper's synthetic-blur protocol (section 4.2), used by the BSD100 benchmark and the benchmarks.

For each photo: a seeded random ``crop`` x ``crop`` crop ``x``, a seeded ``kernel_size`` kernel
``k`` from a generator (default ``borodenko``), the symmetric boundary, Gaussian noise ``sigma``
(default 0.01), RGB; ``y = k * x + sigma n`` clipped to [0, 1] and stored at 16 bits. Every random
draw comes from ``np.random.default_rng`` children of ``SeedSequence([seed, key])`` (crop, kernel,
noise), ``key`` being the image id: the same on every run and machine, and independent of
``--limit`` and of the order in which images are visited.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import torch

from kdiff_cli import files
from kdiff_cli.errors import KdiffError
from kdiff_cli.items import IMAGE_EXTENSIONS, Item, read_photo, rgb
from kdiff_cli.maths import ops

#: the paper's protocol; the default seed is distinct from every training seed (those start at 0)
BSD100_DEFAULTS = {
    "seed": 2023,
    "generator": "borodenko",
    "sigma": 0.01,
    "crop": 256,
    "kernel_size": 64,
    "boundary": "symmetric",
}


def bsd100_protocol(**options) -> dict:
    """The resolved protocol options (what fully determines the synthetic set)."""
    p = {key: options.get(key) if options.get(key) is not None else d for key, d in BSD100_DEFAULTS.items()}
    p["generator_params"] = dict(options.get("generator_params") or {})
    p["seed"], p["crop"], p["kernel_size"], p["sigma"] = int(p["seed"]), int(p["crop"]), int(p["kernel_size"]), float(p["sigma"])
    return p


def protocol_rngs(seed: int, key: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent (crop, kernel, noise) generators for one image, from ``SeedSequence([seed, key])``."""
    children = np.random.SeedSequence([int(seed), int(key)]).spawn(3)
    return tuple(np.random.default_rng(s) for s in children)  # type: ignore[return-value]


def blur(x: np.ndarray, k: np.ndarray, sigma: float, rng: np.random.Generator, boundary: str = "symmetric") -> np.ndarray:
    """``y = k * x + sigma n`` (``n`` from ``rng``), clipped to [0, 1] and quantised to 16 bits."""
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float64))[None]
    kt = torch.from_numpy(np.asarray(k, dtype=np.float64))[None, None]
    y = ops.conv2d(xt, kt, boundary)[0].numpy().transpose(1, 2, 0)
    y = y + float(sigma) * rng.standard_normal(y.shape)
    return (files.quantize(y, 16).astype(np.float32) / np.float32(65535)).astype(np.float32)


def sample_kernel(generator: str, rng: np.random.Generator, size: int, params: dict | None = None) -> np.ndarray:
    """One kernel from a registered generator, as (size, size) float64 summing to 1."""
    from kdiff_cli import plugins

    gen = plugins.get("generator", generator)
    k = np.asarray(gen.sample(rng, 1, int(size), **(params or {})), dtype=np.float64)[0]
    k = np.clip(k, 0.0, None)
    if k.sum() <= 0:
        raise KdiffError(f"generator {generator!r} returned an all-zero kernel")
    return k / k.sum()


def synthesize(
    x_full: np.ndarray, key: int, *, seed: int, generator: str, sigma: float, crop: int, kernel_size: int,
    generator_params: dict | None = None, boundary: str = "symmetric", image_id: str = "",
) -> Item:
    """The protocol for one image: seeded crop, seeded kernel, blur with ``boundary``, noise."""
    r_crop, r_kernel, r_noise = protocol_rngs(seed, key)
    x_full = rgb(x_full)
    H, W = x_full.shape[:2]
    if H < crop or W < crop:
        raise KdiffError(f"image {image_id} is {H}x{W}, smaller than the {crop}x{crop} crop")
    top = int(r_crop.integers(0, H - crop + 1))
    left = int(r_crop.integers(0, W - crop + 1))
    x = np.ascontiguousarray(x_full[top : top + crop, left : left + crop])
    k = sample_kernel(generator, r_kernel, kernel_size, generator_params)
    y = blur(x, k, sigma, r_noise, boundary)
    return Item(id=image_id, x=x, y=y, k=k, sigma=float(sigma), meta={"crop_top": top, "crop_left": left})


def synthesize_file(path: Path, key: int, p: dict, image_id: str) -> Item:
    """:func:`synthesize` on the photo at ``path`` with the resolved protocol ``p`` (:func:`bsd100_protocol`)."""
    return synthesize(
        read_photo(path), key, seed=p["seed"], generator=p["generator"], sigma=p["sigma"], crop=p["crop"],
        kernel_size=p["kernel_size"], generator_params=p["generator_params"], boundary=p["boundary"],
        image_id=image_id,
    )


def protocol_items(folder: str | os.PathLike, limit: int | None = None, **options) -> list[Item]:
    """The BSD100 protocol applied to every photo of ``folder`` (sorted by name), first ``limit``.

    Photos named by a number are seeded by it (as BSD100 ids), others by the CRC32 of their stem.
    """
    p = bsd100_protocol(**options)
    folder = Path(folder)
    if not folder.is_dir():
        raise KdiffError(f"{folder} is not a folder of photos")
    images = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
    if not images:
        raise KdiffError(f"no images in {folder}")
    return [synthesize_file(f, int(f.stem) if f.stem.isdigit() else zlib.crc32(f.stem.encode()), p, f.stem) for f in images]
