"""Training batches (kdiff_cli.apps.train.data): blurred crops, crops and flips, the generator
mixture, and the errors on bad data. The loop, checkpoints and config are in test_train.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdiff_cli.apps.train import data
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops


def _source(ds, **kw) -> data.BlurredCrops:
    args = dict(crop=32, sigma_min=0.01, sigma_max=0.03)
    args.update(kw)
    return data.BlurredCrops(data.load_images(ds["train"]), data.FileKernels(ds["kernels"], 9), **args)


def test_batches(dataset):
    src = _source(dataset)
    b = src.sample(5, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert b["x"].shape == (5, 3, 32, 32) and b["y"].shape == (5, 3, 32, 32) and b["k"].shape == (5, 1, 9, 9)
    assert b["x"].dtype == b["y"].dtype == b["k"].dtype == b["sigma"].dtype == torch.float32
    assert 0 <= b["x"].min() and b["x"].max() <= 1
    assert torch.allclose(b["k"].sum((-2, -1)), torch.ones(5, 1)) and b["k"].min() >= 0
    assert b["k"][:, :, 0].abs().sum() == 0  # 7x7 kernels centred on the 9x9 canvas
    assert ((0.01 <= b["sigma"]) & (b["sigma"] <= 0.03)).all()
    noise = b["y"] - ops.conv2d(b["x"], b["k"], "symmetric")
    assert torch.allclose(noise.flatten(1).std(1), b["sigma"], rtol=0.15)
    # noiseless: y is exactly the symmetric-boundary blur
    b0 = _source(dataset, sigma_min=0.0, sigma_max=0.0).sample(3, np.random.default_rng(1), torch.Generator())
    assert torch.equal(b0["y"], ops.conv2d(b0["x"], b0["k"], "symmetric"))
    # same seeds, same batch; other seeds, other batch
    again = src.sample(5, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert all(torch.equal(b[k], again[k]) for k in b)
    other = src.sample(5, np.random.default_rng(1), torch.Generator().manual_seed(0))
    assert not torch.equal(b["x"], other["x"])


def test_crop_and_flips():
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        c = data.random_crop(img, 4, rng, flip=True)
        assert c.shape == (4, 4, 3)
        seen.add((c[0, 0, 0] < c[0, -1, 0], c[0, 0, 0] < c[-1, 0, 0]))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}  # all four flips occur
    c = data.random_crop(img, 4, np.random.default_rng(0), flip=False)
    assert any(np.array_equal(c, img[i:i + 4, j:j + 4]) for i in range(3) for j in range(5))
    assert data.random_crop(img, 10, rng, flip=False).shape == (10, 10, 3)  # mirror-padded


def test_generator_mixture(monkeypatch):
    class Box:
        def __init__(self, name, side):
            self.name, self.side = name, side

        def sample(self, rng, count, size, width=None):
            k = np.zeros((count, size, size))
            s = width or self.side
            c = size // 2
            k[:, c - s // 2 : c - s // 2 + s, c - s // 2 : c - s // 2 + s] = rng.random((count, 1, 1)) + 1
            return k

    gens = {"small": Box("small", 1), "big": Box("big", 3)}
    from kdiff_cli import plugins

    monkeypatch.setattr(plugins, "get", lambda kind, name: gens[name])
    src = data.GeneratorKernels(["small", "big"], [1.0, 3.0], 9, {"big": {"width": 5}})
    k = src.sample(np.random.default_rng(0), 400)
    assert k.shape == (400, 9, 9) and np.allclose(k.sum((1, 2)), 1)
    big = (k > 0).sum((1, 2)) == 25
    assert ((k > 0).sum((1, 2)) == 1).sum() + big.sum() == 400
    assert 0.68 < big.mean() < 0.82  # weights 1:3
    assert np.array_equal(k, src.sample(np.random.default_rng(0), 400))
    with pytest.raises(KdiffError, match="2 generators"):
        data.GeneratorKernels(["small", "big"], [1.0], 9)
    with pytest.raises(KdiffError, match="not in data.generators"):
        data.GeneratorKernels(["small"], [], 9, {"big": {}})
    with pytest.raises(KdiffError, match="bad data.generator_params"):
        data.GeneratorKernels(["small"], [], 9, {"small": {"nope": 1}}).sample(np.random.default_rng(0), 2)


def test_data_errors(dataset, tmp_path):
    with pytest.raises(KdiffError, match="image folder not found"):
        data.load_images(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdiffError, match="no images"):
        data.load_images(tmp_path / "empty")
    np.savez(tmp_path / "k.npz", other=np.ones((2, 3, 3)))
    with pytest.raises(KdiffError, match="no array 'kernels'"):
        data.FileKernels(tmp_path / "k.npz", 9)
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(KdiffError, match="cannot read kernels file"):
        data.FileKernels(tmp_path / "trunc.npz", 9)
    np.savez(tmp_path / "z.npz", kernels=np.zeros((2, 3, 3)))
    with pytest.raises(KdiffError, match="empty or not finite"):
        data.FileKernels(tmp_path / "z.npz", 9)
    with pytest.raises(KdiffError, match="sigma_min"):
        _source(dataset, sigma_min=0.1, sigma_max=0.0)


