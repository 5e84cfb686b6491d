"""Device-resident training batches (kdiff_cli.apps.train.device_data): seeded crops, kernels from
the bank up to rotation and reflection, the kernel bank's generator mixture."""

import numpy as np
import pytest
import torch

from kdiff_cli.apps.train import device_data
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops


def _bank(n=12, size=16, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.random((n, size, size)).astype(np.float32)
    return b / b.sum(axis=(1, 2), keepdims=True)


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)]


def test_device_crops_are_deterministic_per_seed_and_well_formed():
    src = device_data.DeviceCrops(_images(), _bank(), 48, 0.0, 0.02, "cpu")
    a = src.sample(5, None, torch.Generator().manual_seed(7))
    b = src.sample(5, None, torch.Generator().manual_seed(7))
    c = src.sample(5, None, torch.Generator().manual_seed(8))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["x"], c["x"])
    assert a["x"].shape == (5, 3, 48, 48) and a["k"].shape == (5, 1, 16, 16) and a["y"].shape == (5, 3, 48, 48)
    assert torch.allclose(a["k"].sum(dim=(-2, -1)), torch.ones(5, 1))
    assert float(a["x"].min()) >= 0 and float(a["x"].max()) <= 1
    # y is the blur of x plus noise of the drawn level
    noise = a["y"] - ops.conv2d(a["x"], a["k"])
    assert torch.allclose(noise.std(dim=(1, 2, 3)), a["sigma"], rtol=0.15, atol=1e-3)


def test_device_crops_kernels_are_bank_kernels_up_to_rotation_and_reflection():
    bank = _bank(4)
    src = device_data.DeviceCrops(_images(), bank, 32, 0.0, 0.0, "cpu")
    k = src.sample(16, None, torch.Generator().manual_seed(0))["k"][:, 0].numpy()
    variants = [v for b in bank for v in (b, b[::-1], b[:, ::-1], b[::-1, ::-1], b.T, b.T[::-1], b.T[:, ::-1], b.T[::-1, ::-1])]
    for ki in k:
        assert min(np.abs(ki - v).max() for v in variants) < 1e-7


def test_kernel_bank_follows_the_mixture_and_refuses_huge_banks():
    d = {"bank": 40, "kernel_size": 16, "generators": ["linear", "gaussian"], "generator_weights": [3, 1],
         "generator_params": {}, "kernels_file": ""}
    bank = device_data.kernel_bank(d, seed=0)
    assert bank.shape == (40, 16, 16) and np.allclose(bank.sum(axis=(1, 2)), 1, atol=1e-5)
    assert np.array_equal(bank, device_data.kernel_bank(d, seed=0))
    with pytest.raises(KdiffError, match="lower data.bank"):
        device_data.kernel_bank({**d, "bank": 10**9}, seed=0)
