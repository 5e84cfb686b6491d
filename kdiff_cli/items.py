"""What an evaluation dataset item is, and the readers every dataset shares.

A dataset component (kind ``dataset``, ``plugins/ds_*.py``) provides ``load(**options) ->
list[ItemRef]`` and ``protocol(**options) -> dict``. An :class:`ItemRef` is a cheap handle (id,
seed key, loader); its ``load()`` returns the :class:`Item` arrays, so a re-run whose results are
cached never decodes or synthesises anything.

:data:`IMAGE_EXTENSIONS` is the one list of image file extensions kdiff reads (those of
:data:`kdiff_cli.files.FORMATS`); :data:`KERNEL_EXTENSIONS` adds ``.npy`` to the lossless ones.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kdiff_cli import files
from kdiff_cli.errors import KdiffError, KdiffWarning

#: image file extensions kdiff reads, in lookup order (``.png`` first)
IMAGE_EXTENSIONS = tuple(files.FORMATS)
#: kernel file extensions: lossless images or a NumPy array
KERNEL_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".npy")


@dataclass
class Item:
    """One evaluation image: sharp ``x`` and blurred ``y`` (H, W, C) float32 in [0, 1], true
    kernel ``k`` (h, w) float64 summing to 1 (or None), noise level ``sigma`` (or None)."""

    id: str
    x: np.ndarray
    y: np.ndarray
    k: np.ndarray | None = None
    sigma: float | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ItemRef:
    """A lazy handle on an :class:`Item`: ``key`` (an int) seeds everything random about it."""

    id: str
    key: int
    loader: Callable[[], Item]

    def load(self) -> Item:
        return self.loader()


def cache_dir() -> Path:
    """kdiff's user cache: ``$KDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdiff``, else ``~/.cache/kdiff``."""
    if os.environ.get("KDIFF_CACHE_DIR"):
        return Path(os.environ["KDIFF_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "kdiff"


def rgb(a: np.ndarray) -> np.ndarray:
    """(H, W, 1) gray repeated to (H, W, 3); RGB unchanged."""
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def read_photo(path: Path) -> np.ndarray:
    """A dataset image as (H, W, C) float32 in [0, 1]; an alpha channel, if any, is dropped silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", files.ImageWarning)
        return files.read_image(path)[0]


def read_kernel(path: Path) -> np.ndarray:
    """A kernel file (image or ``.npy``) as (h, w) float64, nonnegative, summing to 1.

    Negative entries are clipped to 0 with a :class:`~kdiff_cli.errors.KdiffWarning` saying how
    many and how much of the kernel's absolute mass they held."""
    if path.suffix.lower() == ".npy":
        try:
            k = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise KdiffError(f"cannot read kernel {path}: {e}") from None
    else:
        k = read_photo(path).mean(axis=2)
    k = np.asarray(k, dtype=np.float64).squeeze()
    negative = k < 0
    if negative.any() and np.isfinite(k).all():
        share = float(-k[negative].sum() / np.abs(k).sum())
        warnings.warn(f"kernel {path}: {int(negative.sum())} negative entries ({share:.1%} of its absolute mass) clipped to 0",
                      KdiffWarning, stacklevel=2)
    k = np.clip(k, 0.0, None)
    if k.ndim != 2 or k.sum() <= 0:
        raise KdiffError(f"cannot read kernel {path}: expected a nonzero 2-D kernel, got shape {k.shape}")
    return k / k.sum()


def find_file(folder: Path, stem: str, extensions: tuple[str, ...]) -> Path | None:
    """``folder/<stem><ext>`` for the first extension (lower or upper case) that exists, else None."""
    for ext in extensions:
        for cand in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def natural_key(name: str) -> list:
    """Sort key that orders ``im2`` before ``im10`` (digit runs compare as numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def first(refs: list[ItemRef], limit: int | None) -> list[ItemRef]:
    """The first ``limit`` refs (all for None); ``--limit`` below 1 is an error."""
    if limit is not None and limit < 1:
        raise KdiffError(f"--limit must be at least 1, got {limit}")
    return refs if limit is None else refs[:limit]


def pair_loader(item_id: str, blurred: Path, sharp: Path, kernel: Path | None) -> Callable[[], Item]:
    """Loader of a stored (blurred, sharp[, kernel]) triple; gray is repeated to RGB if the other is RGB."""

    def load() -> Item:
        y, x = read_photo(blurred), read_photo(sharp)
        if y.shape[:2] != x.shape[:2]:
            raise KdiffError(f"{blurred} is {y.shape[1]}x{y.shape[0]} but {sharp} is {x.shape[1]}x{x.shape[0]}")
        if y.shape[2] != x.shape[2]:
            y, x = rgb(y), rgb(x)
        return Item(id=item_id, x=x, y=y, k=read_kernel(kernel) if kernel is not None else None)

    return load
