"""sRGB transfer and clipped highlights (kdiff_cli.maths.camera)."""

import torch

from kdiff_cli.maths import camera


def test_srgb_round_trip_and_known_values():
    v = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(camera.to_encoded(camera.to_linear(v)), v, atol=1e-12)
    # mid-gray 0.5 encoded is 0.214 linear (IEC 61966-2-1); the linear segment below 0.04045
    assert abs(float(camera.to_linear(torch.tensor(0.5, dtype=torch.float64))) - 0.21404) < 1e-5
    assert float(camera.to_linear(torch.tensor(0.04, dtype=torch.float64))) == 0.04 / 12.92
    assert torch.all(torch.diff(camera.to_linear(v)) > 0)  # monotone: no value swaps order


def test_clipped_mask_grows_by_the_kernel_side():
    y = torch.zeros(1, 3, 21, 21)
    y[0, 1, 10, 10] = 1.0  # one channel clipped is enough
    assert int(camera.clipped(y).sum()) == 1
    grown = camera.clipped(y, grow=5)
    assert int(grown.sum()) == 25 and bool(grown[0, 0, 8, 12]) and not bool(grown[0, 0, 7, 10])
    assert not bool(camera.clipped(y * 0.97).any())
