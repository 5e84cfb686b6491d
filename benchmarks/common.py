"""Shared by the benchmarks: where the data is, and the seeded BSD100 protocol applied to the validation photos.

The data folder (``val/``, ``train/``, ``lai-uniform/`` ...) is ``$KDIFF_DATA`` when set, else
``../shared/data`` beside the repository; every benchmark's ``--data`` defaults below it, e.g.
``KDIFF_DATA=/data/kdiff python benchmarks/bench_deblur.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdiff_cli.items import Item
from kdiff_cli.maths.protocol import protocol_items

#: the paper's synthetic protocol (`kdiff eval bsd100` defaults); seed 2023 is held out from training (seed 0)
PROTOCOL = {"seed": 2023, "generator": "borodenko", "sigma": 0.01, "crop": 256, "kernel_size": 64}
#: the data folder: $KDIFF_DATA, else ../shared/data relative to the repository
DATA_DIR = Path(os.environ.get("KDIFF_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data").expanduser()
VAL_DIR = DATA_DIR / "val"
TRAIN_DIR = DATA_DIR / "train"


def load_items(folder: Path, limit: int | None, **protocol) -> list[Item]:
    """The seeded items of the protocol, one per photo (sorted by name), first ``limit``."""
    return protocol_items(folder, limit, **{**PROTOCOL, **protocol})
