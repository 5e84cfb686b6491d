"""The evaluation engine behind ``kdiff eval``: run methods on a dataset, score, cache, report.

For every item of the dataset and every method: ``x, k, info = method.run(y, **options)``; the
estimate ``x`` is stored as a 16-bit PNG and ``k`` as ``.npy`` under ``out/<method>/``, the
per-image scores in ``out/<method>/<id>.json`` (written last, so it marks the pair finished). A
re-run with the same ``out`` skips every pair whose record has the same protocol and options, and
scores cached estimates with any metric added since. Metrics are always computed on the estimate
as stored (16-bit), so a cached and a fresh run give identical numbers.

Outputs: ``metrics.json`` (per image and mean, protocol, versions; no timings or paths, so the
same seed gives an identical file), ``metrics.csv``, ``grid.png`` (the paper's Figure 4 layout).
"""

from __future__ import annotations

import csv
import functools
import inspect
import io as _stdio
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kdiff_cli import files, plugins
from kdiff_cli.apps.datasets import Item, ItemRef
from kdiff_cli.device import resolve_device
from kdiff_cli.errors import KdiffError
from kdiff_cli.solvers import cached_solver
from kdiff_cli.params import parse_pairs, parse_value  # noqa: F401 (parse_value: part of this module's API)
from kdiff_cli.maths.metrics import Result, as_kernel

#: keyword arguments a method receives when its ``run`` names them explicitly (never via **kwargs)
CONTEXT_KEYS = ("k_true", "sigma", "generator", "device", "kernel_size")
GRID_TILE = 256
NOT_APPLICABLE = "-"
UNAVAILABLE = "n/a"


# --------------------------------------------------------------------------- option parsing


def _signature(fn: Callable) -> tuple[set[str], bool]:
    """Explicit keyword names of ``fn`` and whether it takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


@dataclass
class MethodSpec:
    """One column of the evaluation: ``label`` as typed (``oracle:solver=wiener``), the method's
    registered ``name``, and the options its ``run`` receives."""

    label: str
    name: str
    options: dict = field(default_factory=dict)

    @property
    def method(self):
        return plugins.get("method", self.name)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("_") or "method"


def parse_methods(text: str, method_opts: list[str] | None = None) -> list[MethodSpec]:
    """``a,b:key=value:key=value`` plus ``--method-opt [method.]key=value`` -> method specs.

    Inline options go to that method only. ``--method-opt key=value`` goes to every method whose
    ``run`` takes ``key`` (or ``**options``) and must fit at least one; ``name.key=value`` (or
    ``label.key=value``) to that method only. Unknown methods and options are one-line errors.
    """
    specs: list[MethodSpec] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name, *inline = part.split(":")
        name = name.strip()
        plugins.get("method", name)  # unknown -> error listing the available ones
        specs.append(MethodSpec(part, name, parse_pairs(inline, f"option of method {name!r}")))
    if not specs:
        raise KdiffError("--method needs at least one method name")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise KdiffError(f"method {next(l for l in labels if labels.count(l) > 1)!r} given twice")
    for spec in specs:
        named, var = _signature(spec.method.run)
        for key in spec.options:
            if key not in named and not var:
                raise KdiffError(f"method {spec.name!r} takes no option {key!r}")
    for pair in method_opts or []:
        head, eq, value = pair.partition("=")
        if not eq:
            raise KdiffError(f"--method-opt must be KEY=VALUE or METHOD.KEY=VALUE, got {pair!r}")
        scope, dot, key = head.rpartition(".")
        opt = parse_pairs([f"{key}={value}"], "--method-opt")
        key = next(iter(opt))
        targets = [s for s in specs if s.label == scope or s.name == scope] if dot else specs
        if dot and not targets:
            raise KdiffError(f"--method-opt {pair!r}: no method {scope!r} in --method")
        taken = 0
        for spec in targets:
            named, var = _signature(spec.method.run)
            if key in named or var:
                spec.options.setdefault(key, opt[key])
                taken += 1
            elif dot:
                raise KdiffError(f"method {spec.name!r} takes no option {key!r}")
        if not taken:
            raise KdiffError(f"--method-opt {pair!r}: no method in --method takes option {key!r}")
    return specs


# --------------------------------------------------------------------------- solvers


get_solver = cached_solver


# --------------------------------------------------------------------------- metrics


@dataclass
class MetricSpec:
    name: str
    obj: Any
    unavailable: str | None  # None when usable, else the reason (shown with "n/a")

    @property
    def target(self) -> str:
        return getattr(self.obj, "target", "image")

    @property
    def set_level(self) -> bool:
        return bool(getattr(self.obj, "set_level", False))

    def columns(self) -> list[str]:
        if hasattr(self.obj, "summary"):
            return list(self.obj.summary([]).keys())
        return [self.name]


def resolve_metrics(names: list[str], weights_dir: str | os.PathLike | None = None, device: str = "cpu") -> list[MetricSpec]:
    """Look metrics up, check their weights (never downloaded) and prepare the usable ones."""
    specs = []
    for name in names:
        obj = plugins.get("metric", name)
        reason = obj.available(weights_dir) if hasattr(obj, "available") else None
        if reason is None and hasattr(obj, "prepare"):
            obj.prepare(weights_dir, device)
        specs.append(MetricSpec(name, obj, reason))
    return specs


def _finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def score(metric: MetricSpec, result: Result, item: Item) -> float | None:
    """One per-image metric value; None when not applicable (no kernel) or unavailable."""
    if metric.unavailable is not None or metric.set_level:
        return None
    if metric.target == "kernel":
        if result.k is None or item.k is None:
            return None
        return _finite(metric.obj.compute(result.k, item.k))
    if metric.target == "item":
        return _finite(metric.obj.compute(result, item))
    return _finite(metric.obj.compute(result.x, item.x))


# --------------------------------------------------------------------------- running methods


def method_generator(seed: int, key: int) -> torch.Generator:
    """The torch generator a stochastic method gets for one image (same for every method)."""
    state = np.random.SeedSequence([int(seed), int(key), 1]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def _json_safe(info: dict) -> dict:
    out = {}
    for key, v in (info or {}).items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (np.generic,)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        if v is None or isinstance(v, (bool, int, float, str)):
            out[str(key)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(e, (bool, int, float, str)) for e in v):
            out[str(key)] = list(v)
    return out


def run_method(spec: MethodSpec, item: Item, *, seed: int, key: int, device: str) -> tuple[Result, float]:
    """Run one method on one item; returns its result (x stored-precision, k) and seconds taken."""
    method = spec.method
    named, _ = _signature(method.run)
    y = files.to_tensor(item.y).to(device)
    context = {
        "k_true": item.k,
        "sigma": item.sigma,
        "generator": method_generator(seed, key),
        "device": device,
        "kernel_size": None if item.k is None else int(item.k.shape[-1]),
    }
    kwargs = dict(spec.options)
    kwargs.update({k: v for k, v in context.items() if k in named and k not in spec.options})
    start = time.perf_counter()
    out = method.run(y, **kwargs)
    seconds = time.perf_counter() - start
    if not (isinstance(out, tuple) and len(out) == 3):
        raise KdiffError(f"method {spec.name!r} must return (x, k, info)")
    x, k, info = out
    if isinstance(x, torch.Tensor):
        x = files.to_numpy(x) if x.dim() >= 3 else x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    x = files.quantize(x, 16).astype(np.float32) / np.float32(65535)  # what is stored is what is scored
    k = None if k is None else as_kernel(k)
    return Result(x=x, k=k, info=_json_safe(info)), seconds


# --------------------------------------------------------------------------- the run


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
                up = m.obj.higher_is_better if c == m.name else c.startswith("success")
                arrows[c] = f"{c.upper() if len(c) <= 5 else c} {'↑' if up else '↓'}"
        return ["method"] + [arrows[c] for c in self.columns()] + ["s/img"]

    def notes(self) -> list[str]:
        return [f"{m.name}: n/a, {m.unavailable}" for m in self.metrics if m.unavailable]


def _digits(column: str) -> int:
    return {"psnr": 2, "fid": 2}.get(column, 3)


class Store:
    """Per-(method, image) results under ``out/<method slug>/``."""

    def __init__(self, out: Path):
        self.out = out

    def paths(self, spec: MethodSpec, image_id: str) -> tuple[Path, Path, Path]:
        d = self.out / spec.slug
        return d / f"{image_id}.json", d / f"{image_id}.png", d / f"{image_id}_k.npy"

    def load(self, spec: MethodSpec, image_id: str, protocol: dict) -> dict | None:
        rec_path, x_path, k_path = self.paths(spec, image_id)
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            return None
        same = rec.get("protocol") == protocol and rec.get("options") == _plain(spec.options) and rec.get("method") == spec.name
        if not same or not x_path.is_file() or (rec.get("has_kernel") and not k_path.is_file()):
            return None
        return rec

    def result(self, spec: MethodSpec, image_id: str, rec: dict) -> Result:
        _, x_path, k_path = self.paths(spec, image_id)
        x, _ = files.read_image(x_path)
        k = np.load(k_path, allow_pickle=False) if rec.get("has_kernel") else None
        return Result(x=x, k=k, info=rec.get("info", {}))

    def save(self, spec: MethodSpec, image_id: str, result: Result, record: dict) -> None:
        rec_path, x_path, k_path = self.paths(spec, image_id)
        files.write_image(x_path, result.x, bit_depth=16)
        if result.k is not None:
            buf = _stdio.BytesIO()
            np.save(buf, result.k.astype(np.float64), allow_pickle=False)
            files.atomic_write_bytes(k_path, buf.getvalue())
        files.atomic_write_bytes(rec_path, _dumps(record))


def _plain(options: dict) -> dict:
    return json.loads(json.dumps(options, sort_keys=True, default=str))


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


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


def evaluate(
    dataset: str,
    refs: list[ItemRef],
    protocol: dict,
    methods: list[MethodSpec],
    metric_specs: list[MetricSpec],
    out: str | os.PathLike,
    *,
    seed: int,
    device: str = "cpu",
    grid: int = 4,
    progress: Callable[..., None] | None = None,
) -> Report:
    """Run ``methods`` on ``refs``, score with ``metric_specs``, write the reports into ``out``."""
    out = Path(out).expanduser()
    protocol = _plain(protocol)
    if out.exists() and not out.is_dir():
        raise KdiffError(f"--out {out} is a file, not a folder")
    store = Store(out)
    per_image: dict[str, dict[str, dict[str, float | None]]] = {}
    times: dict[str, list[float]] = {s.label: [] for s in methods}
    computed = cached = 0
    item_metrics = [m for m in metric_specs if not m.set_level]
    for ref in refs:
        item: Item | None = None
        per_image[ref.id] = {}
        for spec in methods:
            rec = store.load(spec, ref.id, protocol)
            if rec is None:
                item = item or ref.load()
                result, seconds = run_method(spec, item, seed=seed, key=ref.key, device=device)
                rec = {
                    "id": ref.id, "method": spec.name, "label": spec.label, "options": _plain(spec.options),
                    "protocol": protocol, "has_kernel": result.k is not None, "info": result.info,
                    "seconds": seconds, "metrics": {},
                }
                computed += 1
            else:
                result = None
                cached += 1
            missing = [m for m in item_metrics if m.unavailable is None and m.name not in rec["metrics"]]
            if missing or result is not None:
                item = item or ref.load()
                result = result or store.result(spec, ref.id, rec)
                for m in missing:
                    rec["metrics"][m.name] = score(m, result, item)
                store.save(spec, ref.id, result, rec)
            per_image[ref.id][spec.label] = {m.name: rec["metrics"].get(m.name) for m in item_metrics}
            times[spec.label].append(float(rec.get("seconds", 0.0)))
            if progress:
                progress(image=ref.id, method=spec.label)

    mean = _aggregate(per_image, methods, metric_specs)
    _set_metrics(mean, refs, store, methods, metric_specs, protocol)
    report = Report(
        out=out, methods=methods, metrics=metric_specs, ids=[r.id for r in refs], per_image=per_image, mean=mean,
        seconds={k: (float(np.mean(v)) if v else None) for k, v in times.items()}, computed=computed, cached=cached,
    )
    write_reports(report, dataset, protocol)
    if grid > 0:
        write_grid(out / "grid.png", refs[:grid], methods, store, protocol)
    return report


def _aggregate(per_image, methods, metric_specs) -> dict[str, dict[str, float | None]]:
    mean: dict[str, dict[str, float | None]] = {}
    for spec in methods:
        mean[spec.label] = {}
        for m in metric_specs:
            if m.set_level:
                for c in m.columns():
                    mean[spec.label][c] = None
                continue
            values = [per_image[i][spec.label].get(m.name) for i in per_image]
            if hasattr(m.obj, "summary"):
                mean[spec.label].update({c: _finite(v) for c, v in m.obj.summary(values).items()})
            else:
                present = [v for v in values if v is not None]
                mean[spec.label][m.name] = float(np.mean(present)) if present else None
    return mean


def _set_metrics(mean, refs, store, methods, metric_specs, protocol) -> None:
    """Set-level metrics (FID) over all images, from the stored estimates."""
    usable = [m for m in metric_specs if m.set_level and m.unavailable is None]
    if not usable or len(refs) < 2:
        return
    references = [ref.load().x for ref in refs]
    for spec in methods:
        estimates = []
        for ref in refs:
            rec = store.load(spec, ref.id, protocol)
            estimates.append(store.result(spec, ref.id, rec).x)
        for m in usable:
            mean[spec.label][m.name] = _finite(m.obj.compute_set(estimates, references))


# --------------------------------------------------------------------------- reports


def write_reports(report: Report, dataset: str, protocol: dict) -> None:
    """``metrics.json`` (deterministic: no timings, no paths) and ``metrics.csv``."""
    doc = {
        "dataset": dataset,
        "protocol": protocol,
        "methods": {s.label: {"method": s.name, "options": _plain(s.options)} for s in report.methods},
        "metrics": {
            m.name: {
                "target": m.target,
                "higher_is_better": bool(m.obj.higher_is_better),
                "set_level": m.set_level,
                "available": m.unavailable is None,
                **({"note": m.unavailable} if m.unavailable else {}),
            }
            for m in report.metrics
        },
        "images": report.ids,
        "mean": report.mean,
        "per_image": report.per_image,
        "versions": versions(),
    }
    files.atomic_write_bytes(report.out / "metrics.json", _dumps(doc))

    # one table: a row per (image, method), then a "mean" row per method; unavailable -> n/a
    cols = report.columns()
    unavailable = {c for m in report.metrics if m.unavailable for c in m.columns()}
    fmt = lambda c, v: UNAVAILABLE if c in unavailable else ("" if v is None else repr(float(v)))  # noqa: E731
    buf = _stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "method"] + cols)
    for image_id in report.ids:
        for s in report.methods:
            w.writerow([image_id, s.label] + [fmt(c, report.per_image[image_id][s.label].get(c)) for c in cols])
    for s in report.methods:
        w.writerow(["mean", s.label] + [fmt(c, report.mean[s.label].get(c)) for c in cols])
    files.atomic_write_bytes(report.out / "metrics.csv", buf.getvalue().encode())


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


# --------------------------------------------------------------------------- entry point for the CLI


def default_methods() -> str:
    have = set(plugins.names("method"))
    return ",".join(m for m in ("blurred", "oracle", "kernel-diff") if m in have)


@dataclass
class Plan:
    """A resolved ``kdiff eval`` invocation: the dataset's items and protocol, methods, metrics."""

    dataset: str
    refs: list[ItemRef]
    protocol: dict
    seed: int


def plan(dataset: str, options: dict[str, Any], limit: int | None = None) -> Plan:
    """Load a dataset's items with the options it accepts; an option it does not take is an error."""
    ds = plugins.get("dataset", dataset)
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    accepted = getattr(ds, "options", None)
    if accepted is not None:
        extra = sorted(k for k in given if k not in accepted)
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise KdiffError(f"{flags} does not apply to dataset {dataset!r}")
    refs = ds.load(limit=limit, **given)
    if not refs:
        raise KdiffError(f"dataset {dataset!r} has no items")
    protocol = ds.protocol(**given) if hasattr(ds, "protocol") else {"dataset": dataset}
    seed = int(protocol.get("seed", given.get("seed", 2023)))
    return Plan(dataset, refs, protocol, seed)


def run(
    dataset: str,
    dataset_options: dict[str, Any],
    *,
    methods: str | None,
    method_opts: list[str] | None = None,
    metrics: str | None = None,
    metric_weights: str | os.PathLike | None = None,
    limit: int | None = None,
    out: str | os.PathLike,
    device: str = "auto",
    grid: int = 4,
    bar: Callable | None = None,
) -> Report:
    """``kdiff eval``: plan, run every method on every item (skipping cached pairs), report."""
    p = plan(dataset, dataset_options, limit)
    specs = parse_methods(methods or default_methods(), method_opts)
    ds = plugins.get("dataset", dataset)
    names = [m.strip() for m in (metrics.split(",") if metrics else getattr(ds, "default_metrics", ("psnr", "ssim")))]
    names = [n for n in names if n]
    if metrics is None:
        names = [n for n in names if n in plugins.names("metric")]
    dev = str(resolve_device(device))
    metric_specs = resolve_metrics(names, metric_weights, dev)
    if grid < 0:
        raise KdiffError(f"--grid must be >= 0, got {grid}")
    if bar is None:
        return evaluate(dataset, p.refs, p.protocol, specs, metric_specs, out, seed=p.seed, device=dev, grid=grid)
    with bar("eval", len(p.refs) * len(specs), unit="runs") as update:
        return evaluate(
            dataset, p.refs, p.protocol, specs, metric_specs, out, seed=p.seed, device=dev, grid=grid,
            progress=lambda **fields: update(1, **fields),
        )
