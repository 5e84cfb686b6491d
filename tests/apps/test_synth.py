"""Kernel database synthesis: chunk seeding, worker independence, the preview, `kdiff synth-kernels`
(the .npz writer itself: foundation/test_npz.py)."""

import json
import os

import numpy as np
import pytest

from kdiff_cli import __version__
from kdiff_cli.apps import synth, synth_chunks
from kdiff_cli.errors import KdiffError


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 kernels so that small databases have several chunks (forked workers see it)."""
    monkeypatch.setattr(synth_chunks, "CHUNK", 16)


# --------------------------------------------------------------------------- synthesize


@pytest.mark.parametrize("name", ["borodenko", "boracchi-foi", "gaussian", "linear"])
def test_workers_do_not_change_the_kernels(small_chunks, name):
    params = {"samples": 100} if name == "boracchi-foi" else {}
    one = synth.synthesize(name, 50, 12, seed=3, workers=1, params=params)
    two = synth.synthesize(name, 50, 12, seed=3, workers=2, params=params)
    assert one.shape == (50, 12, 12) and np.array_equal(one, two)
    np.testing.assert_allclose(one.sum(axis=(1, 2)), 1.0, atol=1e-12)


def test_chunks_are_seeded_by_seed_and_index(small_chunks):
    from kdiff_cli import plugins

    k = synth.synthesize("borodenko", 40, 10, seed=5)
    g = plugins.get("generator", "borodenko")
    np.testing.assert_array_equal(k[16:32], g.sample(synth.chunk_rng(5, 1), 16, 10))
    np.testing.assert_array_equal(k[32:], g.sample(synth.chunk_rng(5, 2), 8, 10))
    assert not np.allclose(k[:16], k[16:32])
    assert not np.allclose(k, synth.synthesize("borodenko", 40, 10, seed=6))


def test_synthesize_callback_dtype_and_generator_object(small_chunks):
    seen = []

    class Ones:
        name = "ones"

        def sample(self, rng, count, size):
            return np.full((count, size, size), 1.0 / size**2)

    k = synth.synthesize(Ones(), 40, 5, seed=0, workers=2, callback=seen.append, dtype=np.float16)
    assert k.dtype == np.float16 and sorted(seen) == [8, 16, 16]
    np.testing.assert_allclose(k, 1 / 25, rtol=1e-3)
    assert synth.synthesize(Ones(), 0, 5, seed=0).shape == (0, 5, 5)


def test_synthesize_errors():
    with pytest.raises(KdiffError, match="unknown generator 'nope'"):
        synth.synthesize("nope", 2, 8, 0)
    with pytest.raises(KdiffError, match="seed"):
        synth.synthesize("gaussian", 2, 8, -1)

    class Broken:
        name = "broken"

        def sample(self, rng, count, size):
            return np.zeros((count, size + 1, size))

    with pytest.raises(KdiffError, match="returned shape"):
        synth.synthesize(Broken(), 2, 8, 0)


def test_parse_params():
    from kdiff_cli import plugins

    g = plugins.get("generator", "gaussian")
    assert synth.parse_params(g, ["sigma_max=2.5", "isotropic=true"]) == {
        "sigma_min": 0.5, "sigma_max": 2.5, "isotropic": True
    }
    assert synth.parse_params("borodenko", ["intensity=0.3"]) == {"intensity": 0.3}
    assert synth.parse_params("borodenko", ["intensity=none"]) == {"intensity": None}
    assert synth.parse_params("boracchi-foi", ["samples=300"])["samples"] == 300
    for bad, message in [
        (["nope=1"], "unknown parameter 'nope' for generator 'gaussian' .known: isotropic, sigma_max, sigma_min."),
        (["sigma_max"], "expected key=value"),
        (["sigma_max=big"], "expected a number"),
        (["isotropic=maybe"], "expected true or false"),
        (["sigma_max=1", "sigma_max=2"], "given twice"),
    ]:
        with pytest.raises(KdiffError, match=message):
            synth.parse_params(g, bad)


def test_preview_grid_layout():
    k = np.zeros((10, 4, 4))
    k[:, 1, 2] = 1.0
    g = synth.preview_grid(k)
    zoom = 8  # tiles enlarged to 32 px
    assert g.shape == (2 * (4 * zoom + 1) + 1, 8 * (4 * zoom + 1) + 1) and g.dtype == np.uint8
    assert g[1 + 1 * zoom, 1 + 2 * zoom] == 255 and g[1, 1] == 0


# --------------------------------------------------------------------------- the command


def test_cli_writes_database_and_preview(cli, tmp_path, small_chunks):
    out, png = tmp_path / "k.npz", tmp_path / "k.png"
    res = cli("synth-kernels", "--generator", "borodenko", "--count", 70, "--size", 16, "--seed", 1, "--out", out,
              "--preview", png, "--workers", 2, "--param", "intensity=0.4")
    assert res.exit_code == 0, res.output
    assert "wrote 70 kernels 16x16" in res.output
    kernels, meta = synth.load(out)
    assert kernels.shape == (70, 16, 16) and kernels.dtype == np.float32
    np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert meta["generator"] == "borodenko" and meta["seed"] == 1 and meta["kdiff_version"] == __version__
    assert meta["params"] == {"intensity": 0.4} and meta["count"] == 70 and meta["size"] == 16
    expected = synth.synthesize("borodenko", 70, 16, seed=1, params={"intensity": 0.4}, dtype=np.float32)
    np.testing.assert_array_equal(kernels, expected)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (8 * 33 + 1, 8 * 33 + 1)  # 64 tiles of 16 px enlarged to 32, 1-px gaps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npz", "k.png"]


def test_cli_same_seed_byte_identical_any_workers(cli, tmp_path, small_chunks):
    paths = []
    for i, workers in enumerate([1, 2, 1]):
        paths.append(tmp_path / f"k{i}.npz")
        res = cli("synth-kernels", "--generator", "borodenko", "--count", 40, "--size", 9, "--out", paths[-1], "--workers", workers)
        assert res.exit_code == 0, res.output
    data = [p.read_bytes() for p in paths]
    assert data[0] == data[1] == data[2]
    cli("synth-kernels", "--generator", "borodenko", "--count", 40, "--size", 9, "--out", tmp_path / "other.npz", "--seed", 1)
    assert (tmp_path / "other.npz").read_bytes() != data[0]


def test_cli_float16(cli, tmp_path):
    res = cli("synth-kernels", "--generator", "gaussian", "--count", 3, "--size", 7, "--out", tmp_path / "k.npz", "--dtype", "float16")
    assert res.exit_code == 0, res.output
    kernels, meta = synth.load(tmp_path / "k.npz")
    assert kernels.dtype == np.float16 and meta["dtype"] == "float16"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--generator", "nope"], "unknown generator 'nope'"),
        (["--count", "0"], "--count must be >= 1"),
        (["--size", "2"], "--size must be >= 3"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--dtype", "float64"], "--dtype must be one of float32, float16"),
        (["--param", "intensity"], "bad --param 'intensity': expected key=value"),
        (["--param", "speed=3"], "unknown parameter 'speed' for generator 'borodenko'"),
        (["--param", "intensity=strong"], "bad --param intensity='strong'"),
        (["--param", "intensity=3"], "parameter intensity must be in [0, 1]"),  # raised while generating
        (["--out", "{tmp}/missing/k.npz"], "directory {tmp}/missing does not exist"),
        (["--out", "{tmp}/k.txt"], "--out must be a .npz file"),
        (["--out", "{tmp}"], "--out must be a .npz file"),
        (["--out", "{tmp}/d.npz"], "is a directory"),
        (["--preview", "{tmp}/p.jpg"], "--preview must be a .png file"),
    ],
)
def test_cli_errors_one_line_exit_2_nothing_left(cli, tmp_path, args, message):
    (tmp_path / "d.npz").mkdir()
    base = {"--generator": "borodenko", "--count": "20", "--size": "8", "--out": str(tmp_path / "k.npz"),
            "--preview": str(tmp_path / "k.png")}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value.format(tmp=tmp_path)
    flat = [x for kv in base.items() for x in kv]
    res = cli("synth-kernels", *flat)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.format(tmp=tmp_path) in lines[0], res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]  # no output, no temporary file


def test_cli_failure_in_workers_keeps_an_existing_output(cli, tmp_path, small_chunks):
    out = tmp_path / "k.npz"
    out.write_bytes(b"previous")
    res = cli("synth-kernels", "--generator", "borodenko", "--count", 50, "--size", 8, "--out", out, "--workers", 2,
              "--param", "intensity=2", "--overwrite")
    assert res.exit_code == 2 and res.output.startswith("error: parameter intensity must be in")
    assert out.read_bytes() == b"previous" and os.listdir(tmp_path) == ["k.npz"]


def test_meta_is_json_without_pickle(cli, tmp_path):
    res = cli("synth-kernels", "--generator", "linear", "--count", 2, "--size", 5, "--out", tmp_path / "k.npz", "--param", "angle=30")
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "k.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["kernels", "meta"]
        meta = json.loads(f["meta"].item())
    assert meta["params"] == {"angle": 30.0, "length_max": None, "length_min": 1.0}
