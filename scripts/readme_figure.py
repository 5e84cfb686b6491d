"""Stack side-by-side figures (from `bench_photos.py --real-figures DIR`) into one small JPEG for the README.

    python scripts/readme_figure.py DIR name,name,... OUT.jpg [--width 960]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from kdiff_cli import files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("names")
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--quality", type=int, default=80)
    args = ap.parse_args()
    rows = []
    for name in args.names.split(","):
        a = files.read_image(args.folder / f"{name}.jpg")[0][..., :3]
        h = round(a.shape[0] * args.width / a.shape[1])
        rows.append(cv2.resize(a.astype(np.float32), (args.width, h), interpolation=cv2.INTER_AREA))
        rows.append(np.ones((6, args.width, 3), np.float32))
    img = (np.concatenate(rows[:-1], 0).clip(0, 1) * 255).round().astype(np.uint8)
    with files.atomic_path(args.out) as tmp:
        cv2.imwrite(str(tmp), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, args.quality])


if __name__ == "__main__":
    main()
