"""What ``kdiff eval`` prints and writes: the table, ``metrics.json`` and ``metrics.csv``.

``metrics.json`` holds per-image and mean values, the protocol and package versions; no timings
or paths, so the same seed gives an identical file.
"""

from __future__ import annotations

import csv
import io
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdiff_cli import files
from kdiff_cli.apps.evaluate.specs import MethodSpec, MetricSpec
from kdiff_cli.apps.evaluate.store import dumps, plain

NOT_APPLICABLE = "-"
UNAVAILABLE = "n/a"


@dataclass
class Report:
    """What ``kdiff eval`` prints and writes."""

    out: Path
    methods: list[MethodSpec]
    metrics: list[MetricSpec]
    ids: list[str]
    per_image: dict[str, dict[str, dict[str, float | None]]]
    mean: dict[str, dict[str, float | None]]
    seconds: dict[str, float | None]
    computed: int  # (image, method) pairs run now; the rest came from the cache
    cached: int
    failed: dict[str, str] = field(default_factory=dict)  # item id -> why it was skipped (not in ids)
    ground_truth: dict[str, dict] = field(default_factory=dict)  # item id -> its kernel fit (levin, folder)
    pending: list[str] = field(default_factory=list)  # sharded runs: items other shards have not finished
    shard: str | None = None  # ``i/n`` when this process ran a share of the items
    merged: bool = True  # the reports (metrics.json, metrics.csv, grid.png) were written by this process

    def columns(self) -> list[str]:
        return [c for m in self.metrics for c in m.columns()]

    def table_rows(self) -> list[list[str]]:
        rows = []
        for spec in self.methods:
            row = [spec.label]
            for m in self.metrics:
                for c in m.columns():
                    v = self.mean[spec.label].get(c)
                    row.append(UNAVAILABLE if m.unavailable else (NOT_APPLICABLE if v is None else f"{v:.{_digits(c)}f}"))
            s = self.seconds.get(spec.label)
            row.append(NOT_APPLICABLE if s is None else f"{s:.2f}")
            rows.append(row)
        return rows

    def table_header(self) -> list[str]:
        arrows = {}
        for m in self.metrics:
            for c in m.columns():
                up = m.obj.higher_is_better if c in m.values() else c.startswith("success")
                arrows[c] = f"{_title(c)} {'↑' if up else '↓'}"
        return ["method"] + [arrows[c] for c in self.columns()] + ["s/img"]

    def notes(self) -> list[str]:
        notes = [f"{m.name}: n/a, {m.unavailable}" for m in self.metrics if m.unavailable]
        return notes + _alignment_notes(self.metrics) + _ground_truth_notes(self.ground_truth)


ALIGNED = "_aligned"


def _title(column: str) -> str:
    """The table's name of a column: ``PSNR``, ``PSNR aligned``, ``error-ratio``."""
    base = column[: -len(ALIGNED)] if column.endswith(ALIGNED) else column
    name = base.upper() if len(base) <= 5 else base
    return f"{name} aligned" if column.endswith(ALIGNED) else name


def _digits(column: str) -> int:
    return {"psnr": 2, "fid": 2}.get(column.removesuffix(ALIGNED), 3)


def _alignment_notes(metrics: list[MetricSpec]) -> list[str]:
    """What "aligned" means, per distinct (max_shift, border) of the metrics that align."""
    groups: dict[tuple, list[str]] = {}
    for m in metrics:
        p = m.params
        if m.unavailable is None and "max_shift" in p and "border" in p:
            cols = [c for c in m.values() if c.endswith(ALIGNED)] or [m.name]
            groups.setdefault((p["max_shift"], p["border"]), []).extend(cols)
    return [
        f"aligned ({', '.join(cols)}): scored after the best integer shift within {s} px, {b} px border cropped "
        "(--metric-opt max_shift=N, --metric-opt border=N)"
        for (s, b), cols in groups.items()
    ]


def _ids(ids: list[str], most: int = 6) -> str:
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _ground_truth_notes(fits: dict[str, dict]) -> list[str]:
    """How many kernels the dataset corrected, and which pairs no orientation explains."""
    if not fits:
        return []
    rotated = [i for i, f in fits.items() if f.get("rotated")]
    shifted = [i for i, f in fits.items() if tuple(f.get("shift") or (0, 0)) != (0, 0)]
    corrected = [i for i, f in fits.items() if f.get("corrected")]
    parts = ([f"rotated 180 degrees: {_ids(rotated)}"] if rotated else []) + ([f"re-centred: {_ids(shifted)}"] if shifted else [])
    notes = [
        f"ground truth: {len(corrected)} of {len(fits)} kernels corrected to fit their pairs"
        + (f" ({'; '.join(parts)})" if parts else "") + "; metrics.json ground_truth has each fit"
    ]
    bad = [i for i, f in fits.items() if f.get("explained") is False]
    if bad:
        notes.append(
            f"warning: {len(bad)} pairs not explained by their kernel in either orientation ({_ids(bad)}): "
            "wrong kernel or spatially varying blur"
        )
    return notes


def versions() -> dict[str, str]:
    from importlib import metadata

    import cv2
    import scipy
    import skimage

    from kdiff_cli import __version__

    v = {
        "kdiff": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "scipy": scipy.__version__,
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
    }
    for dist in ("lpips", "pytorch-fid"):
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return v


def write_reports(report: Report, dataset: str, protocol: dict) -> None:
    """``metrics.json`` (deterministic: no timings, no paths) and ``metrics.csv``."""
    doc = {
        "dataset": dataset,
        "protocol": protocol,
        "methods": {s.label: {"method": s.name, "options": plain(s.options)} for s in report.methods},
        "metrics": {
            m.name: {
                "target": m.target,
                "higher_is_better": bool(m.obj.higher_is_better),
                "set_level": m.set_level,
                "available": m.unavailable is None,
                "columns": m.columns(),
                **({"params": plain(m.params)} if m.params else {}),
                **({"note": m.unavailable} if m.unavailable else {}),
            }
            for m in report.metrics
        },
        "images": report.ids,
        "failed": report.failed,
        **({"ground_truth": report.ground_truth} if report.ground_truth else {}),
        "mean": report.mean,
        "per_image": report.per_image,
        "versions": versions(),
    }
    files.atomic_write_bytes(report.out / "metrics.json", dumps(doc))

    # one table: a row per (image, method), then a "mean" row per method; unavailable -> n/a
    cols = report.columns()
    unavailable = {c for m in report.metrics if m.unavailable for c in m.columns()}
    fmt = lambda c, v: UNAVAILABLE if c in unavailable else ("" if v is None else repr(float(v)))  # noqa: E731
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "method"] + cols)
    for image_id in report.ids:
        for s in report.methods:
            w.writerow([image_id, s.label] + [fmt(c, report.per_image[image_id][s.label].get(c)) for c in cols])
    for s in report.methods:
        w.writerow(["mean", s.label] + [fmt(c, report.mean[s.label].get(c)) for c in cols])
    files.atomic_write_bytes(report.out / "metrics.csv", buf.getvalue().encode())
