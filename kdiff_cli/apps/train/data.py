"""Training data: clean-image crops blurred on the fly by random kernels, plus Gaussian noise.

Everything random is drawn from an explicit ``np.random.Generator`` (image, crop, flips, kernels,
sigma) and ``torch.Generator`` (noise), both owned and checkpointed by the training loop, so a
resumed run draws exactly the batches an uninterrupted run would. Batches are built in the main
process (no DataLoader workers): decoding is done once (images cached in RAM as 8/16-bit integers), and a
step's crop + FFT blur cost far less than the network's forward/backward pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.items import IMAGE_EXTENSIONS
from kdiff_cli.maths import ops


# --------------------------------------------------------------------------- clean images


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``(H, W, 3)`` RGB integers at the file's depth (uint8, or uint16 for
    16-bit files): compact enough to keep a few hundred photos in RAM. Gray is replicated."""
    from kdiff_cli import files

    x, info = files.read_image(path)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return files.quantize(x, 16 if info.bit_depth >= 16 else 8)


def to_unit(a: np.ndarray) -> np.ndarray:
    """Integer pixels -> float32 in [0, 1]."""
    return a.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KdiffError(f"image folder not found: {folder}")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise KdiffError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return found


def load_images(folder: str | os.PathLike) -> list[np.ndarray]:
    """Decode every image of ``folder`` once, as integer RGB arrays (kept in RAM)."""
    return [read_rgb(p) for p in list_images(folder)]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator, flip: bool) -> np.ndarray:
    """A ``size x size`` crop at a random position (images smaller than that are mirror-padded),
    randomly flipped left-right and up-down when ``flip``."""
    H, W = img.shape[:2]
    if H < size or W < size:
        ph, pw = max(0, size - H), max(0, size - W)
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
        H, W = img.shape[:2]
    top = int(rng.integers(0, H - size + 1))
    left = int(rng.integers(0, W - size + 1))
    out = img[top : top + size, left : left + size]
    if flip:
        if rng.random() < 0.5:
            out = out[:, ::-1]
        if rng.random() < 0.5:
            out = out[::-1]
    return out


# --------------------------------------------------------------------------- kernels


class KernelSource(Protocol):
    """Draws kernels: ``sample(rng, count) -> (count, size, size)`` float64, >= 0, sum 1."""

    size: int

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray: ...


def _normalize(k: np.ndarray, where: str) -> np.ndarray:
    k = np.clip(np.asarray(k, dtype=np.float64), 0, None)
    s = k.sum(axis=(-2, -1), keepdims=True)
    if not np.all(np.isfinite(k)) or np.any(s <= 0):
        raise KdiffError(f"{where} produced a kernel that is empty or not finite")
    return k / s


def _fit_canvas(k: np.ndarray, size: int) -> np.ndarray:
    if k.shape[-2:] == (size, size):
        return k
    return ops.resize_kernel_canvas(torch.from_numpy(k), size).numpy()


class GeneratorKernels:
    """A weighted mixture of kernel-generator plugins, sampled on the fly."""

    def __init__(self, names: Sequence[str], weights: Sequence[float], size: int,
                 params: Mapping[str, Mapping[str, Any]] | None = None):
        from kdiff_cli import plugins

        if not names:
            raise KdiffError("data.generators is empty (name at least one kernel generator, or set data.kernels_file)")
        if weights and len(weights) != len(names):
            raise KdiffError(f"data.generator_weights has {len(weights)} entries for {len(names)} generators")
        w = np.asarray(weights if weights else [1.0] * len(names), dtype=np.float64)
        if np.any(w < 0) or w.sum() <= 0:
            raise KdiffError("data.generator_weights must be nonnegative with a positive sum")
        params = dict(params or {})
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise KdiffError(f"data.generator_params names {', '.join(unknown)}, not in data.generators")
        self.names = list(names)
        self.generators = [plugins.get("generator", n) for n in names]
        self.p = w / w.sum()
        self.size = int(size)
        self.params = [dict(params.get(n, {})) for n in names]

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        which = rng.choice(len(self.names), size=count, p=self.p)
        out = np.empty((count, self.size, self.size), dtype=np.float64)
        for i, (name, gen) in enumerate(zip(self.names, self.generators)):
            idx = np.flatnonzero(which == i)
            if idx.size == 0:
                continue
            try:
                k = np.asarray(gen.sample(rng, int(idx.size), self.size, **self.params[i]))
            except TypeError as e:
                raise KdiffError(f"kernel generator {name!r}: bad data.generator_params: {e}") from None
            if k.shape != (idx.size, self.size, self.size):
                raise KdiffError(f"kernel generator {name!r} returned shape {k.shape}, "
                                 f"expected {(int(idx.size), self.size, self.size)}")
            out[idx] = _normalize(k, f"kernel generator {name!r}")
        return out


class FileKernels:
    """Kernels drawn uniformly from a ``.npz`` database (key ``kernels``, shape ``(N, h, w)``).

    The array stays in the file's dtype (a 60,000-kernel float32 database is ~1 GB); the drawn
    kernels are put on the ``size x size`` canvas and normalised as they are sampled.
    """

    def __init__(self, path: str | os.PathLike, size: int):
        path = Path(path)
        self.path = path
        if not path.is_file():
            raise KdiffError(f"kernels file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as f:
                if "kernels" not in f.files:
                    raise KdiffError(f"kernels file {path} has no array 'kernels' (has: {', '.join(f.files) or 'none'})")
                k = f["kernels"]
        except KdiffError:
            raise
        except Exception as e:  # zipfile / format errors of a truncated or foreign file
            raise KdiffError(f"cannot read kernels file {path}: {e}") from None
        if k.ndim == 4 and k.shape[1] == 1:
            k = k[:, 0]
        if k.ndim != 3 or k.shape[0] == 0 or not np.issubdtype(k.dtype, np.floating):
            raise KdiffError(f"kernels file {path}: 'kernels' must be floats of shape (N, h, w), got {k.dtype} {k.shape}")
        sums = k.sum(axis=(1, 2), dtype=np.float64)
        if not np.all(np.isfinite(sums)) or np.any(sums <= 0):
            raise KdiffError(f"kernels file {path} holds a kernel that is empty or not finite")
        self.size = int(size)
        self.kernels = k

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        k = self.kernels[rng.integers(0, len(self.kernels), size=count)].astype(np.float64)
        return _normalize(_fit_canvas(k, self.size), f"kernels file {self.path}")


def kernel_source(data: Mapping[str, Any]) -> KernelSource:
    """The kernel source described by the ``[data]`` config section."""
    size = int(data["kernel_size"])
    if size < 1:
        raise KdiffError(f"data.kernel_size must be positive, got {size}")
    if data.get("kernels_file"):
        return FileKernels(data["kernels_file"], size)
    return GeneratorKernels(data["generators"], data["generator_weights"], size, data.get("generator_params"))


# --------------------------------------------------------------------------- batches


class BlurredCrops:
    """Draws training batches ``{x, k, y, sigma}`` (see :mod:`kdiff_cli.apps.train.tasks` for the layout)."""

    def __init__(self, images: Sequence[np.ndarray], kernels: KernelSource, crop: int,
                 sigma_min: float, sigma_max: float, flip: bool = True, boundary: str = "symmetric"):
        if not images:
            raise KdiffError("no training images")
        if crop < 1:
            raise KdiffError(f"data.crop must be positive, got {crop}")
        if not 0 <= sigma_min <= sigma_max:
            raise KdiffError(f"need 0 <= data.sigma_min <= data.sigma_max, got {sigma_min}, {sigma_max}")
        if boundary not in ops.BOUNDARIES:
            raise KdiffError(f"unknown data.boundary {boundary!r} (choose from {', '.join(ops.BOUNDARIES)})")
        self.images = list(images)
        self.kernels = kernels
        self.crop = int(crop)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.flip = flip
        self.boundary = boundary

    def sample(self, batch: int, rng: np.random.Generator, generator: torch.Generator,
               device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """One batch on ``device``, float32; the same RNG states give the same batch.

        Crops and kernels are drawn on the CPU; the blur runs on ``device`` (on a GPU it would
        otherwise dominate a step of a kernel-resolution network)."""
        which = rng.integers(0, len(self.images), size=batch)
        crops = np.stack([to_unit(random_crop(self.images[i], self.crop, rng, self.flip)) for i in which])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().to(device)
        k = torch.from_numpy(self.kernels.sample(rng, batch)).float().unsqueeze(1).to(device)
        sigma = torch.from_numpy(rng.uniform(self.sigma_min, self.sigma_max, size=batch)).float().to(device)
        y = ops.add_noise(ops.conv2d(x, k, self.boundary), sigma, generator)
        return {"x": x, "k": k, "y": y, "sigma": sigma}


def from_config(data: Mapping[str, Any], folder_key: str = "train_dir") -> BlurredCrops:
    """The batch source over ``data[folder_key]`` described by the ``[data]`` config section."""
    return BlurredCrops(
        load_images(data[folder_key]), kernel_source(data), data["crop"], data["sigma_min"],
        data["sigma_max"], flip=data["flip"], boundary=data["boundary"],
    )


def validation_batches(data: Mapping[str, Any]) -> list[dict[str, torch.Tensor]]:
    """The fixed validation set: ``val_count`` crops of ``val_dir`` drawn with ``val_seed``
    (independent of the training RNG), split into batches of ``val_batch``. Empty when
    ``val_dir`` is "" or ``val_count`` is 0."""
    count, size = int(data["val_count"]), max(1, int(data["val_batch"]))
    if not data.get("val_dir") or count <= 0:
        return []
    source = from_config(data, "val_dir")
    source.flip = False
    rng = np.random.default_rng(int(data["val_seed"]))
    generator = torch.Generator().manual_seed(int(data["val_seed"]))
    return [source.sample(min(size, count - i), rng, generator) for i in range(0, count, size)]
