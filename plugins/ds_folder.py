"""Any paired set: blurred/, sharp/ and optional kernels/ folders, matched by file name.

A kernel's orientation and shift are fitted to its pair (:mod:`kdiff_cli.maths.groundtruth`).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.items import IMAGE_EXTENSIONS, KERNEL_EXTENSIONS, ItemRef, find_file, first, natural_key, pair_loader
from kdiff_cli.maths.groundtruth import checked, fit_protocol


def load_folder(data_dir: str | os.PathLike | None = None, limit: int | None = None, **_) -> list[ItemRef]:
    """Paired ``blurred/<name>.*`` and ``sharp/<name>.*`` images, optional ``kernels/<name>.*``."""
    if data_dir is None:
        raise KdiffError("the folder dataset needs --data-dir (with blurred/ and sharp/ folders)")
    root = Path(data_dir).expanduser()
    for sub in ("blurred", "sharp"):
        if not (root / sub).is_dir():
            raise KdiffError(f"{root} has no {sub}/ folder (expected blurred/, sharp/, optional kernels/)")
    blurred = sorted(
        (p for p in (root / "blurred").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
        key=lambda p: natural_key(p.stem),
    )
    if not blurred:
        raise KdiffError(f"no images in {root / 'blurred'}")
    refs = []
    for b in blurred:
        sharp = find_file(root / "sharp", b.stem, IMAGE_EXTENSIONS)
        if sharp is None:
            raise KdiffError(f"blurred/{b.name} has no partner in {root / 'sharp'} (same name, any image extension)")
        kernel = find_file(root / "kernels", b.stem, KERNEL_EXTENSIONS) if (root / "kernels").is_dir() else None
        loader = pair_loader(b.stem, b, sharp, kernel)
        refs.append(ItemRef(b.stem, zlib.crc32(b.stem.encode()), loader if kernel is None else checked(loader)))
    return first(refs, limit)


class Folder:
    name = "folder"
    description = "a user set: blurred/<name>, sharp/<name>, optional kernels/<name> (image or .npy)"
    default_metrics = ("psnr", "ssim", "lpips", "fid", "mnc")
    options = ("data_dir", "limit")

    def load(self, **options):
        return load_folder(**options)

    def protocol(self, **options) -> dict:
        return {"dataset": self.name, "kernel_fit": fit_protocol()}


@hookimpl
def register_datasets(register):
    register(Folder())
