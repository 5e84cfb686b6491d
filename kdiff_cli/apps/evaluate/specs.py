"""What ``kdiff eval`` runs and scores: method specs (``--method``, ``--method-opt``) and metric specs.

Option values go through :mod:`kdiff_cli.params`, the project's one key=value parser.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.items import Item
from kdiff_cli.maths.metrics import Result
from kdiff_cli.params import parse_pairs

#: the methods ``kdiff eval`` runs when ``--method`` is not given (those registered)
DEFAULT_METHODS = ("blurred", "oracle", "kernel-diff")


# --------------------------------------------------------------------------- methods


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
        named, var = plugins.keywords(spec.method.run)
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
            named, var = plugins.keywords(spec.method.run)
            if key in named or var:
                spec.options.setdefault(key, opt[key])
                taken += 1
            elif dot:
                raise KdiffError(f"method {spec.name!r} takes no option {key!r}")
        if not taken:
            raise KdiffError(f"--method-opt {pair!r}: no method in --method takes option {key!r}")
    return specs


def default_methods() -> str:
    have = set(plugins.names("method"))
    return ",".join(m for m in DEFAULT_METHODS if m in have)


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


def finite(v) -> float | None:
    """``v`` as a float, None for None, NaN and infinities (JSON null)."""
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
        return finite(metric.obj.compute(result.k, item.k))
    if metric.target == "item":
        return finite(metric.obj.compute(result, item))
    return finite(metric.obj.compute(result.x, item.x))
