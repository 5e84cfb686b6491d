"""kdiff_cli.maths.kernels: the rasteriser the generators share, centring, kernel statistics and the
parameter checks (the generator plugins themselves: plugins/test_generators.py)."""

import math

import numpy as np
import pytest

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import kernels


def test_rasterize_point_footprints_have_exact_moments():
    """A point splats with its own mass, centre and (spread) variance, at any sub-pixel offset."""
    y = np.array([10.3, 10.0, 10.5, 9.77])
    x = np.array([10.9, 10.0, 10.25, 11.49])
    kid = np.arange(4)
    yy, xx = np.mgrid[:21, :21]
    for spread, var in [(None, lambda f: f * (1 - f)), (0.25, lambda f: 0.25), (0.6, lambda f: 0.6)]:
        k = kernels.rasterize(kid, y, x, np.ones(4), 4, 21, spread=spread, center=False)
        np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-12)
        np.testing.assert_allclose((k * yy).sum(axis=(1, 2)), y, atol=1e-12)
        np.testing.assert_allclose((k * xx).sum(axis=(1, 2)), x, atol=1e-12)
        fy = y - np.floor(y)
        expected = var(fy) if spread is None else np.full(4, spread)
        np.testing.assert_allclose((k * (yy - y[:, None, None]) ** 2).sum(axis=(1, 2)), expected, atol=1e-12)


def test_rasterize_centres_drops_outside_and_handles_empty_kernels():
    kid = np.array([0, 0, 2])
    y = np.array([1.0, 3.0, 50.0])  # kernel 2's only point is off the grid; kernel 1 has none
    x = np.array([1.0, 1.0, 50.0])
    k = kernels.rasterize(kid, y, x, np.array([1.0, 1.0, 1.0]), 3, 9)
    assert k[0, 3, 4] == pytest.approx(0.5) and k[0, 5, 4] == pytest.approx(0.5)  # centred on (4, 4)
    for i in (1, 2):
        assert k[i, 4, 4] == 1.0 and k[i].sum() == 1.0  # no mass: a delta


def test_center_kernels_shifts_with_zero_fill():
    k = np.zeros((2, 5, 5))
    k[0, 0, 1] = 1.0
    k[1, 2, 2] = 1.0
    kernels.center_kernels(k)
    assert k[0, 2, 2] == 1.0 and k[1, 2, 2] == 1.0 and k.sum() == 2.0


def test_kernel_stats_golden():
    k = np.zeros((2, 9, 9))
    k[0, 2:5, 3:6] = 1 / 9  # 3 x 3 box
    k[1, 4, 1:8] = np.array([0.01, 0.2, 0.2, 0.18, 0.2, 0.2, 0.01])  # a 7-px line with faint ends
    st = kernels.kernel_stats(k)
    assert list(st["area"]) == [9, 5] and list(st["extent"]) == [3, 5]
    np.testing.assert_allclose(st["max"], [1 / 9, 0.2])


def test_check_helpers():
    assert kernels.check_range("a", None, 0, 1) is None
    assert kernels.check_range("a", "0.5", 0, 1) == 0.5
    with pytest.raises(KdiffError):
        kernels.check_range("a", math.nan, 0, 1)
    with pytest.raises(KdiffError, match="count"):
        kernels.check_count_size(-1, 5)
