"""Shared by the benchmarks: the seeded BSD100 protocol applied to the validation photos."""

from __future__ import annotations

from pathlib import Path

from kdiff_cli.apps import datasets

#: the paper's synthetic protocol (`kdiff eval bsd100` defaults); seed 2023 is held out from training (seed 0)
PROTOCOL = {"seed": 2023, "generator": "borodenko", "sigma": 0.01, "crop": 256, "kernel_size": 64}
VAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"


def load_items(folder: Path, limit: int | None, **protocol) -> list[datasets.Item]:
    """The seeded items of the protocol, one per photo (sorted by name), first ``limit``."""
    return datasets.protocol_items(folder, limit, **{**PROTOCOL, **protocol})
