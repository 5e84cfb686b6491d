"""Per-(method, image) results of ``kdiff eval`` under ``out/<method slug>/``.

Each finished pair is three files: the estimate ``<id>.png`` (16-bit), its kernel ``<id>_k.npy``
(if any) and the :class:`Record` ``<id>.json``, written last, so it marks the pair finished. A
record is reused when its protocol, method and options match the current run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdiff_cli import files
from kdiff_cli.apps.evaluate.specs import MethodSpec
from kdiff_cli.maths.metrics import Result
from kdiff_cli.npz import npy_bytes


def plain(options: dict) -> dict:
    """``options`` as JSON would give it back (sorted keys; unknown types as strings)."""
    return json.loads(json.dumps(options, sort_keys=True, default=str))


def dumps(obj: Any) -> bytes:
    """Deterministic JSON: indented, sorted keys, no NaN, final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


@dataclass
class Record:
    """``out/<method>/<id>.json``: how one estimate was made, and its per-image scores."""

    id: str
    method: str  # the registered method name
    label: str  # the method as typed in --method
    options: dict
    protocol: dict
    has_kernel: bool  # an ``<id>_k.npy`` belongs to the estimate
    info: dict  # the method's scalar diagnostics
    seconds: float
    metrics: dict[str, float | None] = field(default_factory=dict)  # column -> value (psnr, psnr_aligned, ...)
    metric_params: dict[str, dict] = field(default_factory=dict)  # metric -> the options it was scored with
    ground_truth: dict | None = None  # the dataset's kernel fit for this item (kdiff_cli.maths.groundtruth)

    @classmethod
    def from_json(cls, doc: dict, image_id: str, spec: MethodSpec) -> Record:
        return cls(
            id=doc.get("id", image_id), method=doc.get("method", spec.name), label=doc.get("label", spec.label),
            options=doc.get("options", {}), protocol=doc.get("protocol", {}), has_kernel=bool(doc.get("has_kernel")),
            info=doc.get("info", {}), seconds=float(doc.get("seconds", 0.0)), metrics=doc.get("metrics", {}),
            metric_params=doc.get("metric_params", {}), ground_truth=doc.get("ground_truth"),
        )


class Store:
    """Per-(method, image) results under ``out/<method slug>/``."""

    def __init__(self, out: Path):
        self.out = out

    def paths(self, spec: MethodSpec, image_id: str) -> tuple[Path, Path, Path]:
        d = self.out / spec.slug
        return d / f"{image_id}.json", d / f"{image_id}.png", d / f"{image_id}_k.npy"

    def load(self, spec: MethodSpec, image_id: str, protocol: dict) -> Record | None:
        """The finished record of ``spec`` on ``image_id`` under ``protocol``; None if there is none."""
        rec_path, x_path, k_path = self.paths(spec, image_id)
        try:
            doc = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            return None
        same = doc.get("protocol") == protocol and doc.get("options") == plain(spec.options) and doc.get("method") == spec.name
        if not same or not x_path.is_file() or (doc.get("has_kernel") and not k_path.is_file()):
            return None
        return Record.from_json(doc, image_id, spec)

    def result(self, spec: MethodSpec, image_id: str, rec: Record) -> Result:
        _, x_path, k_path = self.paths(spec, image_id)
        x, _ = files.read_image(x_path)
        k = np.load(k_path, allow_pickle=False) if rec.has_kernel else None
        return Result(x=x, k=k, info=rec.info)

    def save(self, spec: MethodSpec, image_id: str, result: Result, record: Record) -> None:
        rec_path, x_path, k_path = self.paths(spec, image_id)
        files.write_image(x_path, result.x, bit_depth=16)
        if result.k is not None:
            files.atomic_write_bytes(k_path, npy_bytes(np.ascontiguousarray(result.k, dtype=np.float64)))
        files.atomic_write_bytes(rec_path, dumps(asdict(record)))
