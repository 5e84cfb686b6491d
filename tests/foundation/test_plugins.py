"""Plugin system: built-ins, third-party entry points (group ``kdiff``), duplicates, docs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdiff_cli import hookspecs, plugins
from kdiff_cli.errors import KdiffError

FAKE_MODULE = '''
import numpy as np
from kdiff_cli.hookspecs import hookimpl


class Square:
    name = "{name}"
    description = "a centred square kernel (test plugin)"
    params = {{"width": 3}}

    def sample(self, rng, count, size, width=3):
        k = np.zeros((count, size, size))
        c = size // 2
        k[:, c - width // 2 : c + width // 2 + 1, c - width // 2 : c + width // 2 + 1] = 1.0
        return k / k.sum(axis=(1, 2), keepdims=True)


@hookimpl
def register_kernel_generators(register):
    register(Square())
'''


def make_distribution(root: Path, dist: str, module: str, generator_name: str) -> Path:
    """Write a minimal installed distribution (dist-info + entry point) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(FAKE_MODULE.format(name=generator_name))
    info = root / f"{dist.replace('-', '_')}-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text(f"[kdiff]\n{module} = {module}\n")
    return root


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    root = make_distribution(tmp_path / "site", "kdiff-square", "kdiff_square", "square")
    monkeypatch.syspath_prepend(str(root))
    plugins.registry.cache_clear()
    yield root
    plugins.registry.cache_clear()


def test_builtins_registered_and_described():
    reg = plugins.PluginRegistry(plugins.make_plugin_manager(load_entry_points=False))
    for e in reg.entries():
        assert e.source.startswith("built-in")
        assert e.description, f"{e.kind} {e.name} has no description"


@pytest.mark.slow
def test_third_party_plugin_listed_and_usable(third_party):
    gen = plugins.get("generator", "square")
    k = gen.sample(None, 2, 9, width=3)
    assert k.shape == (2, 9, 9) and abs(k[0].sum() - 1) < 1e-12
    entry = [e for e in plugins.registry().entries("generator") if e.name == "square"][0]
    assert entry.source == "kdiff-square 0.3.1"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(third_party), os.environ.get("PYTHONPATH", "")]), COLUMNS="200")
    out = subprocess.run([sys.executable, "-m", "kdiff_cli", "plugins"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    line = [l for l in out.stdout.splitlines() if "square" in l][0]
    assert "generator" in line and "kdiff-square 0.3.1" in line


def test_duplicate_name_is_an_error_naming_both(tmp_path, monkeypatch):
    a = make_distribution(tmp_path / "a", "kdiff-one", "kdiff_one", "twin")
    b = make_distribution(tmp_path / "b", "kdiff-two", "kdiff_two", "twin")
    monkeypatch.syspath_prepend(str(a))
    monkeypatch.syspath_prepend(str(b))
    with pytest.raises(KdiffError) as err:
        plugins.PluginRegistry(plugins.make_plugin_manager())
    msg = str(err.value)
    assert "twin" in msg and "kdiff-one 0.3.1" in msg and "kdiff-two 0.3.1" in msg


def test_unknown_component_lists_available():
    with pytest.raises(KdiffError, match="unknown solver 'nope'"):
        plugins.get("solver", "nope")


def test_every_hook_is_documented(repo_root):
    """Every hook has a docstring and is named in docs/plugins.md (datasette-style doc test)."""
    doc = (repo_root / "docs" / "plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert set(hooks) == set(plugins.KINDS.values())
    for name in hooks:
        assert getattr(hookspecs, name).__doc__, name
        assert f"`{name}`" in doc, f"{name} missing from docs/plugins.md"


# --------------------------------------------------------------------------- declared options


def test_option_names_declared_keywords_or_any():
    class Declares:
        def option_names(self):
            return {"steps", "weights"}

        def run(self, y, **options):
            pass

    class Keywords:
        def run(self, y, *, solver="wiener", sigma=None, callback=None):
            pass

    class Anything:
        def run(self, y, **options):
            pass

    assert plugins.option_names(Declares(), Declares().run) == {"steps", "weights"}
    assert plugins.option_names(Keywords(), Keywords().run) == {"solver", "sigma"}  # not y, not callback
    assert plugins.option_names(Anything(), Anything().run) is None
    # the built-in blind methods declare their settings although run takes **options
    kd = plugins.get("method", "kernel-diff")
    assert {"steps", "samples", "weights", "tile"} <= plugins.option_names(kd, kd.run)


def test_check_options_lists_the_valid_keys():
    plugins.check_options("method 'x'", {"a", "b"}, ["a"])
    plugins.check_options("method 'x'", None, ["anything"])
    with pytest.raises(KdiffError) as e:
        plugins.check_options("method 'x'", {"b", "a"}, ["zz", "a", "nokey"])
    assert str(e.value) == "method 'x' takes no options 'nokey', 'zz' (valid: a, b)"
    with pytest.raises(KdiffError, match=r"takes no option 'k' \(valid: none\)"):
        plugins.check_options("method 'x'", set(), ["k"])
