"""The paper's Figure 4: a grid of blurred inputs, each method's estimate and the ground truth.

Drawn by ``kdiff eval`` as ``grid.png`` from the stored estimates (what is scored is what is shown).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdiff_cli import files
from kdiff_cli.items import ItemRef

if TYPE_CHECKING:
    from kdiff_cli.apps.evaluate.specs import MethodSpec
    from kdiff_cli.apps.evaluate.store import Store

GRID_TILE = 256


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    """Scale so the short side is ``size``, centre-crop to a square, RGB."""
    import cv2

    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    h, w = a.shape[:2]
    s = size / min(h, w)
    if s != 1:
        a = cv2.resize(a, (max(size, round(w * s)), max(size, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    h, w = a.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.clip(a[top : top + size, left : left + size], 0, 1)


def _inset(tile: np.ndarray, k: np.ndarray | None) -> np.ndarray:
    """Paste the kernel (scaled to its peak) into the top-left quarter, with a white frame."""
    import cv2

    if k is None:
        return tile
    k = np.asarray(k, dtype=np.float32)
    side = max(16, tile.shape[0] // 4)
    inset = cv2.resize(k / max(float(k.max()), 1e-12), (side, side), interpolation=cv2.INTER_NEAREST)
    out = tile.copy()
    out[: side + 2, : side + 2] = 1.0
    out[1 : side + 1, 1 : side + 1] = inset[..., None]
    return out


def _label(text: str, width: int, height: int = 22) -> np.ndarray:
    import cv2

    band = np.full((height, width, 3), 255, np.uint8)
    scale = 0.45
    while scale > 0.25 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 6:
        scale -= 0.05
    cv2.putText(band, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return band.astype(np.float32) / 255


def write_grid(path: Path, refs: list[ItemRef], methods: list[MethodSpec], store: Store, protocol: dict, tile: int = GRID_TILE) -> Path | None:
    """The paper's Figure 4: blurred (true-kernel inset), each method (estimated-kernel inset), ground truth."""
    shown = [s for s in methods if s.name != "blurred"]
    titles = ["blurred (true kernel)"] + [s.label for s in shown] + ["ground truth"]
    rows = []
    for ref in refs:
        item = ref.load()
        cells = [_inset(_tile(item.y, tile), item.k)]
        for spec in shown:
            rec = store.load(spec, ref.id, protocol)
            if rec is None:
                cells.append(np.ones((tile, tile, 3), np.float32))
                continue
            r = store.result(spec, ref.id, rec)
            cells.append(_inset(_tile(r.x, tile), r.k))
        cells.append(_tile(item.x, tile))
        rows.append(np.concatenate(cells, axis=1))
    if not rows:
        return None
    header = np.concatenate([_label(t, tile) for t in titles], axis=1)
    return files.write_image(path, np.concatenate([header] + rows, axis=0), bit_depth=8)
