"""Levin et al. (2009) benchmark layout, scored by the error ratio and the success rate at ratio <= 3.

Public copies store some kernels rotated by 180 degrees and some captured pairs sit a few pixels
off: every kernel's orientation and shift are fitted to its pair (:mod:`kdiff_cli.maths.groundtruth`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.items import IMAGE_EXTENSIONS, KERNEL_EXTENSIONS, ItemRef, find_file, first, pair_loader
from kdiff_cli.maths.groundtruth import checked, fit_protocol

LEVIN_PATTERN = re.compile(r"^im(\d+)_kernel(\d+)_img$")


def load_levin(data_dir: str | os.PathLike | None = None, limit: int | None = None, **_) -> list[ItemRef]:
    """Levin et al. (2009) layout: ``im{i}_kernel{j}_img.png`` blurred, ``gt/im{i}.png``, ``gt/kernel{j}.png``."""
    if data_dir is None:
        raise KdiffError("the levin dataset needs --data-dir (a folder with im{i}_kernel{j}_img.png and gt/)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise KdiffError(f"--data-dir {root} is not a folder")
    found = []
    for p in root.iterdir():
        m = LEVIN_PATTERN.match(p.stem)
        if m and p.suffix.lower() in IMAGE_EXTENSIONS:
            found.append((int(m.group(1)), int(m.group(2)), p))
    if not found:
        raise KdiffError(f"no im{{i}}_kernel{{j}}_img.png files in {root}")
    found.sort()
    refs = []
    for i, j, blurred in found:
        sharp = find_file(root / "gt", f"im{i}", IMAGE_EXTENSIONS)
        kernel = find_file(root / "gt", f"kernel{j}", KERNEL_EXTENSIONS)
        if sharp is None or kernel is None:
            missing = f"gt/im{i}.png" if sharp is None else f"gt/kernel{j}.png"
            raise KdiffError(f"{blurred.name} has no {missing} in {root}")
        loader = checked(pair_loader(f"im{i}_kernel{j}", blurred, sharp, kernel))  # orientation and shift fitted
        refs.append(ItemRef(f"im{i}_kernel{j}", i * 1000 + j, loader))
    return first(refs, limit)


class Levin:
    name = "levin"
    description = "Levin et al. 2009: im{i}_kernel{j}_img.png, gt/im{i}.png, gt/kernel{j}.png; error ratio"
    default_metrics = ("psnr", "ssim", "mnc", "error-ratio")
    options = ("data_dir", "limit")

    def load(self, **options):
        return load_levin(**options)

    def protocol(self, **options) -> dict:
        return {"dataset": self.name, "kernel_fit": fit_protocol()}


@hookimpl
def register_datasets(register):
    register(Levin())
