"""Evaluation datasets at the application level: ``kdiff eval --export``.

Each dataset is a plugin with its own loading code (``plugins/ds_bsd100.py``, ``ds_levin.py``,
``ds_folder.py``); what an item is, and the readers they share, live in :mod:`kdiff_cli.items`,
the paper's synthetic-blur protocol in :mod:`kdiff_cli.maths.protocol`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdiff_cli import files
from kdiff_cli.errors import KdiffError
from kdiff_cli.items import ItemRef

__all__ = ["export"]


def export(refs: list[ItemRef], out: str | os.PathLike, protocol: dict, overwrite: bool = True) -> Path:
    """Write ``blurred/`` and ``sharp/`` (16-bit PNG), ``kernels/`` (16-bit PNG scaled to peak 1;
    readers normalise to sum 1) and ``protocol.json``: a folder ``kdiff eval folder`` reads back.

    ``overwrite`` False: a file of the export that exists already is an error, before any is written."""
    out = Path(out).expanduser()
    if not overwrite:
        targets = [out / "protocol.json"] + [out / sub / f"{r.id}.png" for r in refs for sub in ("blurred", "sharp", "kernels")]
        existing = [t for t in targets if t.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise KdiffError(f"--export would overwrite {existing[0]}{more}; pass --overwrite to replace, or choose another folder")
    for ref in refs:
        item = ref.load()
        files.write_image(out / "blurred" / f"{ref.id}.png", item.y, bit_depth=16)
        files.write_image(out / "sharp" / f"{ref.id}.png", item.x, bit_depth=16)
        if item.k is not None:
            files.write_image(out / "kernels" / f"{ref.id}.png", item.k / item.k.max(), bit_depth=16)
    meta = {"protocol": protocol, "ids": [r.id for r in refs]}
    files.atomic_write_bytes(out / "protocol.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return out
