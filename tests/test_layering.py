"""The package's layers import one way: face -> apps -> blind -> maths -> foundation.

Every module's imports (module level and inside functions) are parsed; a module may import
its own layer and the layers below it, never above. The face is ``cli.py`` with its command
modules ``cli_common.py``, ``cli_deblur.py``, ``cli_eval.py``, plus ``progress.py`` and
``__main__.py``. Plugins may import maths, blind and the foundation, never apps or the face
(docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kdiff_cli"
PLUGINS = ROOT / "plugins"

#: layer rank: a module may import modules of equal or lower rank
RANKS = {"foundation": 0, "maths": 1, "blind": 2, "apps": 3, "face": 4}
#: the face: the command modules (cli.py and its cli_*.py), progress bars and tables, ``python -m kdiff_cli``
FACE = {"kdiff_cli.cli", "kdiff_cli.cli_common", "kdiff_cli.cli_deblur", "kdiff_cli.cli_eval", "kdiff_cli.__main__", "kdiff_cli.progress"}


def layer(module: str) -> str | None:
    """The layer of a ``kdiff_cli`` module name (None for modules outside the package)."""
    if module in FACE:
        return "face"
    parts = module.split(".")
    if parts[0] != "kdiff_cli":
        return None
    if len(parts) > 1 and parts[1] in ("maths", "blind", "apps"):
        return parts[1]
    return "foundation"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "plugins":
        parts[0] = "kdiff_plugins"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Absolute names of the kdiff modules ``path`` imports (``from kdiff_cli import ops`` -> kdiff_cli.ops)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rpartition(".")[0] if path.name != "__init__.py" else module_name(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    kdiff = set()
    for n in names:
        if n.startswith(("kdiff_cli", "kdiff_plugins")):
            # keep names that are modules or packages (drop imported functions and classes)
            rel = n.split(".")
            root = ROOT / ("plugins" if rel[0] == "kdiff_plugins" else "kdiff_cli")
            target = root.joinpath(*rel[1:])
            if target.with_suffix(".py").is_file() or (target / "__init__.py").is_file() or len(rel) == 1:
                kdiff.add(n)
    return kdiff


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def violations_of(path: Path) -> list[str]:
    me = module_name(path)
    if me.startswith("kdiff_plugins"):
        return [f"{me} imports {n} (plugins may not import apps or the CLI)" for n in sorted(imported(path)) if layer(n) in ("apps", "face")]
    mine = RANKS[layer(me)]
    out = []
    for n in sorted(imported(path)):
        if n.startswith("kdiff_plugins") and layer(me) != "foundation":
            out.append(f"{me} imports the plugin {n} (go through kdiff_cli.plugins)")
        lay = layer(n)
        if lay is not None and n != "kdiff_cli" and RANKS[lay] > mine:
            out.append(f"{me} ({layer(me)}) imports {n} ({lay})")
    return out


@pytest.mark.parametrize("path", modules(PACKAGE) + modules(PLUGINS), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    assert violations_of(path) == []


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a maths module importing apps, and a plugin importing apps, are caught."""
    fake = PACKAGE / "maths" / "ops.py"
    source = "import torch\n\ndef f():\n    from kdiff_cli.apps import evaluate\n    from kdiff_cli import cli\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    found = violations_of(fake)
    assert found == ["kdiff_cli.maths.ops (maths) imports kdiff_cli.apps (apps)", "kdiff_cli.maths.ops (maths) imports kdiff_cli.apps.evaluate (apps)", "kdiff_cli.maths.ops (maths) imports kdiff_cli.cli (face)"]
    plugin = PLUGINS / "method_oracle.py"
    assert violations_of(plugin) == ["kdiff_plugins.method_oracle imports kdiff_cli.apps (plugins may not import apps or the CLI)", "kdiff_plugins.method_oracle imports kdiff_cli.apps.evaluate (plugins may not import apps or the CLI)", "kdiff_plugins.method_oracle imports kdiff_cli.cli (plugins may not import apps or the CLI)"]


def test_no_import_cycle_between_modules():
    """Module-level imports form no cycle (imports inside functions are deferred and excluded)."""
    graph: dict[str, set[str]] = {}
    for path in modules(PACKAGE):
        tree = ast.parse(path.read_text())
        top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        me = module_name(path)
        names = set()
        for node in ast.walk(top):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdiff_cli"):
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("kdiff_cli"))
        known = {module_name(p) for p in modules(PACKAGE)}
        graph[me] = {n for n in names if n in known and n != me and n != "kdiff_cli"}
    seen, stack = set(), []

    def visit(n):
        if n in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
        if n in seen:
            return
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            visit(m)
        stack.pop()
        seen.add(n)

    for n in sorted(graph):
        visit(n)
