"""kdiff_cli.solvers.load_solver: the closed-form solver, trained weights, shipped defaults and
weights files that are broken in every way (each error names the file)."""

from __future__ import annotations

import pytest
import torch

from kdiff_cli import weights as wio
from kdiff_cli.errors import KdiffError
from kdiff_cli.solvers import load_solver


def _save(model: torch.nn.Module, path, name: str, kwargs: dict):
    return wio.save(path, model.state_dict(), {"solver": name, "model": kwargs})


def test_load_solver_wiener_and_errors(small_solver_kwargs, make_solver, no_shipped, tmp_path):
    m = load_solver("wiener")
    assert not m.training and m.lambda_scale > 0
    with pytest.raises(KdiffError, match="takes no weights"):
        load_solver("wiener", weights=str(_save(make_solver("dwdn"), tmp_path / "d.safetensors", "dwdn", small_solver_kwargs["dwdn"])))
    with pytest.raises(KdiffError, match="unknown solver"):
        load_solver("nope")
    with pytest.raises(KdiffError, match=r"needs trained weights.*dwdn\.safetensors"):
        load_solver("dwdn")


@pytest.mark.parametrize("name", ["dwdn", "unrolled"])
def test_load_solver_round_trip_and_default_weights(small_solver_kwargs, make_solver, curved_kernel, textured_image, name, no_shipped, tmp_path):
    src = make_solver(name, seed=3, randomize=True)
    path = _save(src, tmp_path / f"{name}.safetensors", name, small_solver_kwargs[name])
    y, k = textured_image(1, 3, 24, 24), curved_kernel(5, 5)
    loaded = load_solver(name, weights=str(path))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(y, k, 0.01), src(y, k, 0.01))
    # shipped under the class's default name -> found without --weights
    _save(src, no_shipped / f"{name}.safetensors", name, small_solver_kwargs[name])
    with torch.no_grad():
        assert torch.equal(load_solver(name)(y, k, 0.01), src(y, k, 0.01))


def test_bad_weights_files_name_the_file(small_solver_kwargs, make_solver, no_shipped, tmp_path):
    good = _save(make_solver("dwdn"), tmp_path / "good.safetensors", "dwdn", small_solver_kwargs["dwdn"])
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64 + data[64:])
    # metadata says features=6 but the tensors are those of features=4
    other_arch = _save(make_solver("dwdn"), tmp_path / "other.safetensors", "dwdn", {**small_solver_kwargs["dwdn"], "features": 6})
    bad_shape = tmp_path / "shape.safetensors"
    wio.save(bad_shape, make_solver("dwdn").state_dict(), {"solver": "dwdn", "model": {**small_solver_kwargs["dwdn"], "widths": [8, 8, 16]}})
    wrong_solver = _save(make_solver("unrolled"), tmp_path / "unrolled.safetensors", "unrolled", small_solver_kwargs["unrolled"])
    nan = tmp_path / "nan.safetensors"
    wio.save(nan, {k: v.float() * float("nan") if v.is_floating_point() else v for k, v in make_solver("dwdn").state_dict().items()},
             {"solver": "dwdn", "model": small_solver_kwargs["dwdn"]})
    with pytest.raises(KdiffError, match="nan.safetensors holds non-finite values"):
        load_solver("dwdn", weights=str(nan))
    for path in (truncated, corrupt, other_arch, bad_shape):
        with pytest.raises(KdiffError, match=str(path.name)):
            load_solver("dwdn", weights=str(path))
    with pytest.raises(KdiffError, match="is for solver 'unrolled'"):
        load_solver("dwdn", weights=str(wrong_solver))
    with pytest.raises(KdiffError, match="not found"):
        load_solver("dwdn", weights=str(tmp_path / "missing.safetensors"))
