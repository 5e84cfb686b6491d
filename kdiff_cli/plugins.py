"""The plugin manager: built-in components from ``kdiff_plugins`` plus entry points (group ``kdiff``).

Components are collected once per process through the ``register`` callback of each hook and
kept in per-kind registries. A name registered twice within a kind is an error naming both sources.
:func:`keywords` and :func:`accepted` tell which keyword options a component's callable takes;
:func:`option_names` and :func:`check_options` which options a component declares, and refuse others.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import pluggy

from kdiff_cli import hookspecs
from kdiff_cli.errors import KdiffError

#: kind -> hook name
KINDS = {
    "generator": "register_kernel_generators",
    "solver": "register_solvers",
    "sampler": "register_samplers",
    "dataset": "register_datasets",
    "metric": "register_metrics",
    "method": "register_methods",
    "refiner": "register_refiners",
}

BUILTIN = "built-in"


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    source: str  # "built-in" or "<distribution> <version>"

    @property
    def description(self) -> str:
        return str(getattr(self.obj, "description", "") or "")


class PluginRegistry:
    """All registered components, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        dists = {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
        for kind, hook_name in KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                source = dists.get(id(impl.plugin), BUILTIN)
                impl.function(register=self._register_callback(kind, source, impl.plugin_name))

    def _register_callback(self, kind: str, source: str, plugin_name: str):
        def register(obj: Any) -> None:
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not name:
                raise KdiffError(f"plugin {plugin_name!r} registered a {kind} without a name")
            shown = source if source != BUILTIN else f"{BUILTIN} ({plugin_name.rsplit('.', 1)[-1]})"
            if name in self._entries[kind]:
                prev = self._entries[kind][name]
                raise KdiffError(
                    f"duplicate {kind} name {name!r}: registered by {prev.source} and by {shown}"
                )
            self._entries[kind][name] = Entry(kind, name, obj, shown)

        return register

    def entries(self, kind: str | None = None) -> list[Entry]:
        kinds = [kind] if kind else list(KINDS)
        return [e for k in kinds for e in sorted(self._entries[k].values(), key=lambda e: e.name)]

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def get(self, kind: str, name: str) -> Any:
        try:
            return self._entries[kind][name].obj
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise KdiffError(f"unknown {kind} {name!r} (available: {known})") from None


def builtin_modules() -> list[str]:
    import kdiff_plugins

    return sorted(f"kdiff_plugins.{m.name}" for m in pkgutil.iter_modules(kdiff_plugins.__path__))


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("kdiff")
    pm.add_hookspecs(hookspecs)
    for modname in builtin_modules():
        pm.register(importlib.import_module(modname), name=modname)
    if load_entry_points:
        pm.load_setuptools_entrypoints("kdiff")
    return pm


@lru_cache(maxsize=1)
def registry() -> PluginRegistry:
    """The process-wide registry, built on first use."""
    return PluginRegistry(make_plugin_manager())


def get(kind: str, name: str) -> Any:
    """Look up a component by kind and name; unknown names raise a one-line :class:`KdiffError`."""
    return registry().get(kind, name)


def names(kind: str) -> list[str]:
    return registry().names(kind)


def keywords(fn: Callable) -> tuple[set[str], bool]:
    """The keyword names ``fn`` declares, and whether it also takes ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def accepted(fn: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``fn`` takes as keywords (all of them when it takes ``**kwargs``)."""
    named, var = keywords(fn)
    return dict(options) if var else {k: v for k, v in options.items() if k in named}


#: keywords of a component's callable that only the apps supply (progress, the true kernel, the random generator)
NOT_OPTIONS = ("callback", "k_true", "generator")


def option_names(component: Any, fn: Callable) -> set[str] | None:
    """The options ``component`` declares: its ``option_names()`` when it has one, else the keyword
    names of ``fn`` after its first parameter (the input: ``run(y, ...)``) but :data:`NOT_OPTIONS`; None
    when it takes any option (``fn`` takes ``**kwargs`` and nothing is declared)."""
    declared = getattr(component, "option_names", None)
    if callable(declared):
        return set(declared())
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - set(NOT_OPTIONS)


def check_options(what: str, valid: set[str] | None, given) -> None:
    """A one-line error listing the valid keys when ``given`` holds a key outside ``valid``
    (``what``: ``"method 'kernel-diff'"``; ``valid`` None accepts anything)."""
    if valid is None:
        return
    unknown = sorted(set(given) - set(valid))
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise KdiffError(f"{what} takes no option{s} {', '.join(map(repr, unknown))} (valid: {', '.join(sorted(valid)) or 'none'})")
