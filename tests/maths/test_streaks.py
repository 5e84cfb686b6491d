"""Light streaks (kdiff_cli.maths.streaks): the kernel read off isolated blurred point lights."""

import numpy as np
import torch

from kdiff_cli.maths import camera, metrics, ops, streaks


def _night(k: torch.Tensor, lights: int = 5) -> torch.Tensor:
    """A dark noisy scene with ``lights`` point lights, blurred by ``k`` in linear light, clipped, encoded."""
    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 3, 200, 200), 0.002, dtype=torch.float64) + 0.001 * torch.rand(1, 3, 200, 200, generator=g, dtype=torch.float64)
    for i in range(lights):
        x[..., 30 + 35 * i, 40 + 27 * (i % 3) * 2] = 60.0  # far brighter than the sensor's range
    y = camera.to_encoded(ops.conv2d(x, k.double()).clamp(0, 1))
    return y.float()


def _zigzag() -> torch.Tensor:
    k = torch.zeros(1, 1, 21, 21)
    rows = [6, 7, 8, 9, 10, 11, 10, 9, 8, 7, 8, 9, 10, 11, 12]  # a connected zigzag, as a hand's shake draws it
    for t, r in enumerate(rows):
        k[0, 0, r, 3 + t] = 1.0
    return ops.normalize_kernel(k)


def test_streaks_recover_the_kernel_shape():
    k = _zigzag()
    found = streaks.streak_kernel(_night(k), 31)
    assert found is not None and found.count >= 3 and found.k.shape == (1, 1, 31, 31)
    from scipy import ndimage

    # clipped streaks give the path, not the weights: compare the paths, smoothed by a pixel
    support = ndimage.gaussian_filter((found.k[0, 0] > 0).double().numpy(), 1.0)
    truth = ndimage.gaussian_filter((ops.resize_kernel_canvas(k, 31)[0, 0] > 0).double().numpy(), 1.0)
    assert metrics.mnc(support, truth) > 0.85
    assert streaks.candidates(_night(k), 31)[0].shape == (31, 31)


def test_no_streaks_in_a_daylight_picture_or_from_one_light():
    g = torch.Generator().manual_seed(1)
    day = torch.nn.functional.interpolate(torch.rand(1, 3, 25, 25, generator=g), size=(200, 200), mode="nearest")
    assert streaks.streak_kernel(day, 31) is None
    assert streaks.streak_kernel(_night(_zigzag(), lights=1), 31) is None  # one shape could be anything
    assert np.isfinite(float(streaks.MIN_STREAKS))
