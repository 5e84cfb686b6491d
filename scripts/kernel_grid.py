"""The kernel half of the paper's Figure 4 from a ``kdiff eval`` folder: true and estimated kernels.

``kdiff eval`` writes ``grid.png`` (images with kernel insets) into its ``--out`` folder; that
figure holds crops of the dataset's photographs, so the README shows this one instead: for the
first N images, the true kernel (the ``oracle`` method's) and each method's estimate, each
scaled to its own peak, with its MNC against the true kernel. Only synthetic kernels are drawn.

    python scripts/kernel_grid.py runs/eval-bsd100 docs/bsd100-kernels.png --rows 6 \
        --methods alternating,kernel-diff,kernel-diff:solver=dwdn,unguided,kernel-diff:refiner=reblur:classical=false
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdiff_cli import files  # noqa: E402
from kdiff_cli.apps.analysis.grid import _label  # noqa: E402
from kdiff_cli.apps.evaluate.specs import parse_methods  # noqa: E402

CELL = 128


def _cell(k: np.ndarray | None, text: str) -> np.ndarray:
    import cv2

    img = np.ones((CELL, CELL, 3), np.float32)
    if k is not None:
        k = np.asarray(k, np.float32)
        k = cv2.resize(k / max(float(k.max()), 1e-12), (CELL - 4, CELL - 4), interpolation=cv2.INTER_NEAREST)
        img[2:-2, 2:-2] = 1.0 - k[..., None]  # dark on white
    band = _label(text, CELL, 18)
    return np.concatenate([img, band], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a kdiff eval --out folder that has the oracle method")
    ap.add_argument("out", type=Path, help="the figure (.png)")
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--methods", default="alternating,kernel-diff,unguided")
    ap.add_argument("--titles", default=None, help="comma-separated column titles for --methods (default: the labels)")
    args = ap.parse_args()
    doc = json.loads((args.folder / "metrics.json").read_text())
    specs = parse_methods(args.methods, [])
    oracle = parse_methods("oracle", [])[0]
    names = args.titles.split(",") if args.titles else [s.label for s in specs]
    if len(names) != len(specs):
        ap.error(f"--titles has {len(names)} names for {len(specs)} methods")
    titles = ["true kernel"] + names
    rows = []
    for image_id in doc["images"][: args.rows]:
        k_true = np.load(args.folder / oracle.slug / f"{image_id}_k.npy")
        cells = [_cell(k_true, image_id)]
        for s in specs:
            path = args.folder / s.slug / f"{image_id}_k.npy"
            k = np.load(path) if path.is_file() else None
            mnc = doc["per_image"].get(image_id, {}).get(s.label, {}).get("mnc")
            cells.append(_cell(k, "-" if mnc is None else f"MNC {mnc:.2f}"))
        rows.append(np.concatenate(cells, axis=1))
    header = np.concatenate([_label(t, CELL, 22) for t in titles], axis=1)
    files.write_image(args.out, np.concatenate([header] + rows, axis=0), bit_depth=8)
    print(args.out)


if __name__ == "__main__":
    main()
