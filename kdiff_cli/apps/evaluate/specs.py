"""What ``kdiff eval`` runs and scores: method specs (``--method``, ``--method-opt``) and metric
specs (``--metric``, ``--metric-opt``).

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

    Inline options go to that method only. ``--method-opt key=value`` goes to every method that
    declares ``key`` (:func:`kdiff_cli.plugins.option_names`) and must fit at least one;
    ``name.key=value`` (or ``label.key=value``) to that method only. Unknown methods and options
    are one-line errors listing the valid keys.
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
    valid = {s.name: plugins.option_names(s.method, s.method.run) for s in specs}
    for spec in specs:
        plugins.check_options(f"method {spec.name!r}", valid[spec.name], spec.options)
    apply_scoped_options("method", method_opts or [], [({s.label, s.name}, s.name, s.options) for s in specs], valid)
    return specs


def default_methods() -> str:
    have = set(plugins.names("method"))
    return ",".join(m for m in DEFAULT_METHODS if m in have)


# --------------------------------------------------------------------------- --method-opt, --metric-opt


def apply_scoped_options(
    kind: str, pairs: list[str], entries: list[tuple[set[str], str, dict]], valid: dict[str, set[str] | None],
) -> None:
    """Add ``--{kind}-opt [scope.]key=value`` pairs to the options of ``entries``.

    ``entries`` are (the scopes that name it, the component's name, its options), ``valid`` the
    keys each name takes (None: any). An unscoped pair goes to every entry that takes ``key`` (at
    least one must); a scoped one to the entries its scope names (each must take it). Options
    given inline win. The errors are one line and list the valid keys.
    """
    flag = f"--{kind}-opt"
    for pair in pairs:
        head, eq, value = pair.partition("=")
        if not eq:
            raise KdiffError(f"{flag} must be KEY=VALUE or {kind.upper()}.KEY=VALUE, got {pair!r}")
        scope, dot, key = head.strip().rpartition(".")
        opt = parse_pairs([f"{key}={value}"], flag)
        key = next(iter(opt))
        targets = [(name, options) for scopes, name, options in entries if not dot or scope in scopes]
        if dot and not targets:
            raise KdiffError(f"{flag} {pair!r}: no {kind} {scope!r} in --{kind}")
        taken = 0
        for name, options in targets:
            if valid[name] is None or key in valid[name]:
                options.setdefault(key, opt[key])
                taken += 1
            elif dot:
                plugins.check_options(f"{kind} {name!r}", valid[name], [key])
        if not taken:
            shown = "; ".join(f"{n}: {', '.join(sorted(v)) or 'none'}" for n, v in valid.items() if v is not None)
            raise KdiffError(f"{flag} {pair!r}: no {kind} in --{kind} takes option {key!r} (valid: {shown})")


# --------------------------------------------------------------------------- metrics


@dataclass
class MetricSpec:
    name: str
    obj: Any
    unavailable: str | None  # None when usable, else the reason (shown with "n/a")
    options: dict = field(default_factory=dict)  # given: inline (psnr:border=16) or --metric-opt

    @property
    def target(self) -> str:
        return getattr(self.obj, "target", "image")

    @property
    def set_level(self) -> bool:
        return bool(getattr(self.obj, "set_level", False))

    @property
    def params(self) -> dict:
        """The options ``compute`` receives: the metric's ``params`` defaults, updated by those given."""
        return {**dict(getattr(self.obj, "params", None) or {}), **self.options}

    def values(self) -> list[str]:
        """The per-image values (``columns`` of a metric whose ``compute`` returns a dict, else its name)."""
        return list(getattr(self.obj, "columns", None) or [self.name])

    def columns(self) -> list[str]:
        """The columns of the table and the means (a ``summary`` may add some, e.g. ``success@3``)."""
        if hasattr(self.obj, "summary"):
            return list(self.obj.summary([]).keys())
        return self.values()


def parse_metric_options(names: list[str], metric_opts: list[str] | None = None) -> list[tuple[str, dict]]:
    """``name[:key=value...]`` entries plus ``--metric-opt [metric.]key=value`` -> (name, options).

    A metric takes the options named in its ``params``. An unscoped ``--metric-opt`` goes to every
    listed metric that takes it (at least one must); ``name.key=value`` to that metric only.
    Unknown options are one-line errors listing the valid keys.
    """
    entries: list[tuple[str, dict]] = []
    valid: dict[str, set[str]] = {}
    for text in names:
        name, *inline = text.split(":")
        name = name.strip()
        valid[name] = set(getattr(plugins.get("metric", name), "params", None) or {})
        opts = parse_pairs(inline, f"option of metric {name!r}")
        plugins.check_options(f"metric {name!r}", valid[name], opts)
        entries.append((name, opts))
    seen = [n for n, _ in entries]
    if len(set(seen)) != len(seen):
        raise KdiffError(f"metric {next(n for n in seen if seen.count(n) > 1)!r} given twice")
    apply_scoped_options("metric", metric_opts or [], [({n}, n, o) for n, o in entries], valid)
    return entries


def resolve_metrics(
    names: list[str], weights_dir: str | os.PathLike | None = None, device: str = "cpu", metric_opts: list[str] | None = None,
) -> list[MetricSpec]:
    """Look metrics up (``name[:key=value...]``, plus ``--metric-opt``), check their options and
    weights (never downloaded) and prepare the usable ones."""
    specs = []
    for name, options in parse_metric_options(names, metric_opts):
        obj = plugins.get("metric", name)
        spec = MetricSpec(name, obj, None, options)
        if hasattr(obj, "validate_options"):
            obj.validate_options(**spec.params)
        spec.unavailable = obj.available(weights_dir) if hasattr(obj, "available") else None
        if spec.unavailable is None and hasattr(obj, "prepare"):
            obj.prepare(weights_dir, device)
        specs.append(spec)
    return specs


def finite(v) -> float | None:
    """``v`` as a float, None for None, NaN and infinities (JSON null)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def score(metric: MetricSpec, result: Result, item: Item) -> dict[str, float | None]:
    """One image's values of a metric (:meth:`MetricSpec.values` -> float); None where not
    applicable (no kernel) or unavailable."""
    empty: dict[str, float | None] = dict.fromkeys(metric.values())
    if metric.unavailable is not None or metric.set_level:
        return empty
    params = metric.params
    if metric.target == "kernel":
        if result.k is None or item.k is None:
            return empty
        out = metric.obj.compute(result.k, item.k, **params)
    elif metric.target == "item":
        out = metric.obj.compute(result, item, **params)
    else:
        out = metric.obj.compute(result.x, item.x, **params)
    if isinstance(out, dict):
        return {c: finite(out.get(c)) for c in empty}
    return {metric.name: finite(out)}
