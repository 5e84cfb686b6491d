"""The ``kdiff eval`` loop: plan a dataset, run every method on every item, score, cache, report.

For every item and method: ``method.run(y, **options)`` returns ``x, k, info`` (read through
:meth:`kdiff_cli.blind.result.MethodResult.of`, so a plain 3-tuple does too); the estimate is
stored (:mod:`.store`) and scored as stored (16-bit), so a cached and a fresh run give identical
numbers.
A re-run with the same ``out`` skips every pair whose record has the same protocol and options,
and scores cached estimates with any metric added since. An item that cannot be read or run
(:class:`KdiffError`) is skipped, reported (``on_error``, ``Report.failed``, metrics.json
``failed``) and its files written by this run are removed; the other items still run.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kdiff_cli import files, plugins
from kdiff_cli.apps.analysis.grid import write_grid
from kdiff_cli.apps.evaluate.report import Report, write_reports
from kdiff_cli.apps.evaluate.specs import MethodSpec, MetricSpec, default_methods, finite, parse_methods, resolve_metrics, score
from kdiff_cli.apps.evaluate.store import Record, Store, plain
from kdiff_cli.blind.result import MethodResult
from kdiff_cli.device import resolve_device
from kdiff_cli.errors import KdiffError
from kdiff_cli.items import Item, ItemRef
from kdiff_cli.maths.metrics import Result, as_kernel
from kdiff_cli.shard import SINGLE, Shard

#: keyword arguments a method receives when its ``run`` names them explicitly (never via **kwargs)
CONTEXT_KEYS = ("k_true", "sigma", "generator", "device", "kernel_size")


# --------------------------------------------------------------------------- running one method


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
    named, _ = plugins.keywords(method.run)
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
    x, k, info = MethodResult.of(out)
    if isinstance(x, torch.Tensor):
        x = files.to_numpy(x) if x.dim() >= 3 else x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    x = files.quantize(x, 16).astype(np.float32) / np.float32(65535)  # what is stored is what is scored
    k = None if k is None else as_kernel(k)
    return Result(x=x, k=k, info=_json_safe(info)), seconds


# --------------------------------------------------------------------------- the loop


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
    on_error: Callable[[str, str], None] | None = None,
    may_run: bool = True,
    write: bool = True,
    failed_elsewhere: dict[str, str] | None = None,
) -> Report:
    """Run ``methods`` on ``refs``, score with ``metric_specs``, write the reports into ``out``.

    ``on_error(item id, message)`` is called for an item that fails; it is left out of the means.
    Sharded runs: ``write=False`` runs and stores a share without writing the reports;
    ``may_run=False`` (the merge) only reads the store: an item with a pair no shard has finished
    is failed if it is in ``failed_elsewhere`` (item id -> message), else pending
    (``Report.pending``), and the reports are written only when nothing is pending.
    """
    out = Path(out).expanduser()
    protocol = plain(protocol)
    if out.exists() and not out.is_dir():
        raise KdiffError(f"--out {out} is a file, not a folder")
    store = Store(out)
    per_image: dict[str, dict[str, dict[str, float | None]]] = {}
    times: dict[str, list[float]] = {s.label: [] for s in methods}
    computed = cached = 0
    failed: dict[str, str] = {}
    pending: list[str] = []
    fits: dict[str, dict] = {}  # item id -> its kernel fit (datasets that fit their kernels)
    item_metrics = [m for m in metric_specs if not m.set_level]
    for ref in refs:
        item: Item | None = None
        per_image[ref.id] = {}
        created: list[Path] = []  # files of this item that this run wrote (removed if it fails)
        seconds_of: dict[str, float] = {}
        try:
            for spec in methods:
                rec = store.load(spec, ref.id, protocol)
                result: Result | None = None
                if rec is None and not may_run:
                    raise _NotFinished(ref.id)
                if rec is None:
                    item = item or ref.load()
                    result, seconds = run_method(spec, item, seed=seed, key=ref.key, device=device)
                    rec = Record(
                        id=ref.id, method=spec.name, label=spec.label, options=plain(spec.options), protocol=protocol,
                        has_kernel=result.k is not None, info=result.info, seconds=seconds,
                    )
                    computed += 1
                else:
                    cached += 1
                missing = [m for m in item_metrics if m.unavailable is None and _stale(m, rec)]
                if missing or result is not None:
                    item = item or ref.load()
                    result = result or store.result(spec, ref.id, rec)
                    for m in missing:
                        rec.metrics.update(score(m, result, item))
                        rec.metric_params[m.name] = plain(m.params)
                    if "kernel_fit" in item.meta:  # the dataset fitted its kernel to the pair
                        rec.ground_truth = plain(item.meta["kernel_fit"])
                    created += [path for path in store.paths(spec, ref.id) if not path.exists()]
                    store.save(spec, ref.id, result, rec)
                per_image[ref.id][spec.label] = {c: rec.metrics.get(c) for m in item_metrics for c in m.values()}
                if rec.ground_truth is not None:
                    fits[ref.id] = rec.ground_truth
                seconds_of[spec.label] = float(rec.seconds)
                if progress:
                    progress(image=ref.id, method=spec.label)
        except _NotFinished:
            del per_image[ref.id]
            if ref.id in (failed_elsewhere or {}):
                failed[ref.id] = failed_elsewhere[ref.id]
            else:
                pending.append(ref.id)
            continue
        except KdiffError as e:
            failed[ref.id] = str(e)
            del per_image[ref.id]
            for path in created:
                path.unlink(missing_ok=True)
            if on_error:
                on_error(ref.id, str(e))
            continue
        for label, seconds in seconds_of.items():
            times[label].append(seconds)

    done = [r for r in refs if r.id not in failed and r.id not in pending]
    mean = _aggregate(per_image, methods, metric_specs)
    write = write and not pending
    if write:
        _set_metrics(mean, done, store, methods, metric_specs, protocol)
    report = Report(
        out=out, methods=methods, metrics=metric_specs, ids=[r.id for r in done], per_image=per_image, mean=mean,
        seconds={k: (float(np.mean(v)) if v else None) for k, v in times.items()}, computed=computed, cached=cached,
        failed=failed, ground_truth={i: fits[i] for i in per_image if i in fits}, pending=pending,
    )
    if write:
        write_reports(report, dataset, protocol)
        if grid > 0 and done:
            write_grid(out / "grid.png", done[:grid], methods, store, protocol)
    return report


class _NotFinished(Exception):
    """The merge of a sharded run met a pair that no shard has stored yet."""


def _aggregate(per_image, methods, metric_specs) -> dict[str, dict[str, float | None]]:
    mean: dict[str, dict[str, float | None]] = {}
    for spec in methods:
        mean[spec.label] = {}
        for m in metric_specs:
            if m.set_level:
                for c in m.columns():
                    mean[spec.label][c] = None
                continue
            if hasattr(m.obj, "summary"):
                values = [per_image[i][spec.label].get(m.name) for i in per_image]
                mean[spec.label].update({c: finite(v) for c, v in m.obj.summary(values).items()})
                continue
            for c in m.values():
                present = [v for v in (per_image[i][spec.label].get(c) for i in per_image) if v is not None]
                mean[spec.label][c] = float(np.mean(present)) if present else None
    return mean


def _stale(metric: MetricSpec, rec: Record) -> bool:
    """A metric to (re)score on a record: a value missing, or scored with other options."""
    return any(c not in rec.metrics for c in metric.values()) or rec.metric_params.get(metric.name, {}) != plain(metric.params)


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
            mean[spec.label][m.name] = finite(m.obj.compute_set(estimates, references))


# --------------------------------------------------------------------------- entry point for the CLI


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
    if accepted is None:
        accepted = plugins.option_names(ds, ds.load)
    if accepted is not None:
        extra = sorted(k for k in given if k not in accepted)
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            valid = ", ".join("--" + k.replace("_", "-") for k in sorted(set(accepted) - {"limit"}))
            raise KdiffError(f"{flags} does not apply to dataset {dataset!r} (its options: {valid or 'none'})")
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
    metric_opts: list[str] | None = None,
    metric_weights: str | os.PathLike | None = None,
    limit: int | None = None,
    out: str | os.PathLike,
    device: str = "auto",
    grid: int = 4,
    bar: Callable | None = None,
    on_error: Callable[[str, str], None] | None = None,
    shard: Shard = SINGLE,
) -> Report:
    """``kdiff eval``: plan, run every method on every item (skipping cached pairs), report.

    An item that fails is skipped and passed to ``on_error(item id, message)`` (see :func:`evaluate`).
    ``shard``: this process runs only its share of the items (:mod:`kdiff_cli.shard`); the
    reports cover all items and are written by rank 0 after every rank is done (torchrun) or by
    the first ``--shard`` process that finds every pair stored. They are the single process's
    reports: each pair's result depends only on the seed and the item, never on the order."""
    p = plan(dataset, dataset_options, limit)
    specs = parse_methods(methods or default_methods(), method_opts)
    ds = plugins.get("dataset", dataset)
    names = [m.strip() for m in (metrics.split(",") if metrics else getattr(ds, "default_metrics", ("psnr", "ssim")))]
    names = [n for n in names if n]
    if metrics is None:
        names = [n for n in names if n in plugins.names("metric")]
    dev = str(resolve_device(shard.device(device)))
    for spec in specs:  # bad options, weights and sizes fail before any item is read
        if hasattr(spec.method, "validate_options"):
            spec.method.validate_options(**{"device": dev, **spec.options})
    metric_specs = resolve_metrics(names, metric_weights, dev, metric_opts)
    if grid < 0:
        raise KdiffError(f"--grid must be >= 0, got {grid}")
    common = dict(seed=p.seed, device=dev, grid=grid)
    refs = shard.take(p.refs)
    if bar is None or not shard.main and shard.distributed:  # torchrun: rank 0's bar only
        part = evaluate(dataset, refs, p.protocol, specs, metric_specs, out, **common, on_error=on_error,
                        write=shard.count == 1)
    else:
        title = "eval" if shard.count == 1 else f"eval {shard.label}"
        with bar(title, len(refs) * len(specs), unit="runs") as update:
            part = evaluate(
                dataset, refs, p.protocol, specs, metric_specs, out, **common,
                progress=lambda **fields: update(1, **fields), on_error=on_error, write=shard.count == 1,
            )
    if shard.count == 1:
        return part
    # the merge: every item's pairs read back from the store (the same numbers a single process writes)
    shard.barrier()
    failed: dict[str, str] = {}
    for f in shard.gather(part.failed):
        failed.update(f)
    part.shard = shard.label
    if shard.distributed and not shard.main:
        part.merged = False
        return part
    merged = evaluate(dataset, p.refs, p.protocol, specs, metric_specs, out, **common, may_run=False, failed_elsewhere=failed)
    merged.computed, merged.cached, merged.shard = part.computed, part.cached, shard.label
    merged.merged = not merged.pending
    return merged
