"""Blur at photo scale (kdiff_cli.blind.scale): the coarse pass, the extent, the plan."""

import pytest
import torch

from kdiff_cli.blind import scale
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops


def test_extent_side_and_factor():
    k = torch.zeros(1, 1, 31, 31)
    k[0, 0, 15, 8:21] = 1.0  # 13 px horizontal line
    k[0, 0, 10, 15] = 0.01  # below 5% of the peak: not counted
    assert scale.kernel_extent(k) == 13
    assert scale.odd_side(13) == 25 and scale.odd_side(72) % 2 == 1 and scale.odd_side(72) >= 1.25 * 72 + 8
    assert scale.coarse_factor(256, 256) == 1 and scale.coarse_factor(680, 1024) == 2
    assert scale.coarse_factor(3000, 4000) == 8


def test_spread_means_the_kernel_fills_its_canvas():
    k = torch.zeros(1, 1, 45, 45)
    k[0, 0, 22, 2:43] = 1.0  # a 41 px path inside a 45 px canvas (margin 4): spread
    assert scale.spread(k)
    k[0, 0, 22, 2:5] = 0.0  # 38 px: a path, not a blob
    assert not scale.spread(k)
    assert scale.spread(torch.full((1, 1, 64, 64), 1 / 64**2)) and not scale.spread(torch.full((1, 1, 64, 64), 1 / 64**2), margin=-1)


def test_to_scale_keeps_the_shape():
    k = torch.zeros(1, 1, 45, 45)
    k[0, 0, 22, 12:33] = 1.0  # 21 px line at downscale 2 -> 42 px at full resolution
    k = ops.normalize_kernel(k)
    up = scale.to_scale(k, 2, 1, 64)
    assert up.shape[-1] == 64 and abs(float(up.sum()) - 1) < 1e-5
    assert 40 <= scale.kernel_extent(up) <= 44


def test_plan_crop_given_and_coarse():
    small = torch.rand(1, 3, 256, 256)
    assert scale.plan(small, 16, None, "auto").how == "crop"
    given = scale.plan(small, 16, 40, "auto")
    assert (given.how, given.factor, given.kernel_size) == ("given", 3, 40)
    assert scale.plan(small, 16, None, "2").factor == 2
    with pytest.raises(KdiffError, match="--kernel-size"):
        scale.plan(small, 16, 2, "auto")
    # a 320 px photo blurred by a 9 px line: the coarse pass runs at full resolution and measures it
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 1, 40, 40, generator=g), size=(320, 320), mode="nearest")
    k = torch.zeros(1, 1, 9, 9)
    k[0, 0, 4, :] = 1 / 9
    y = ops.conv2d(x.expand(1, 3, -1, -1).contiguous(), k)
    p = scale.plan(y, 16, None, "auto")
    assert p.how == "coarse" and p.coarse_factor == 1 and p.factor == 1
    assert 7 <= p.extent <= 11 and p.kernel_size == scale.odd_side(p.extent)
    assert set(p.report()) == {"factor", "kernel_size", "how", "coarse_factor", "extent", "streaks", "coarse_scores", "spread",
                               "coarse_extents"}
    assert list(p.passes) == [1] and torch.equal(p.passes[1], p.coarse_k) and p.report()["coarse_extents"] == {1: p.extent}
    assert p.spread is False  # a 9 px line in a 16 px canvas found: no fallback
    assert p.streaks is None and p.coarse_scores is None  # one scale: nothing to choose
    two = scale.plan(y, 16, None, "auto", scales=2)  # 320 px: a second pass at 160 px
    assert sorted(two.coarse_scores) == [1, 2] and two.coarse_factor in (1, 2)
    assert two.coarse_scores[two.coarse_factor] == min(two.coarse_scores.values())
    assert 7 <= two.extent <= 12
    # every pass's kernel is kept (bench_photos.py --coarse scores them), the chosen one is the plan's
    assert sorted(two.passes) == [1, 2] and torch.equal(two.passes[two.coarse_factor], two.coarse_k)
    assert two.report()["coarse_extents"][two.coarse_factor] == two.extent
    with pytest.raises(KdiffError, match="--coarse-scales"):
        scale.plan(y, 16, None, "auto", scales=0)


def test_coarse_factors_double_while_the_image_is_large_enough():
    assert scale.coarse_factors(680, 1024, 1) == [2]
    assert scale.coarse_factors(680, 1024, 2) == [2, 4]
    assert scale.coarse_factors(680, 1024, 3) == [2, 4]  # 680 // 8 = 85 px is below MIN_COARSE_SIDE
    assert scale.coarse_factors(3000, 4000, 3) == [8, 16]
    assert scale.coarse_factors(320, 480, 2) == [1, 2] and scale.coarse_factors(300, 480, 2) == [1]


def test_choose_coarse_scores_every_scale_and_keeps_the_sparsest():
    from kdiff_cli.solvers import load_solver

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 24, generator=g), scale_factor=8, mode="nearest")
    k = torch.zeros(1, 1, 9, 9)
    k[0, 0, 4, :] = 1 / 9  # the true blur: a 9 px horizontal line
    y = ops.conv2d(x, k)
    dot, vertical = torch.zeros(1, 1, 9, 9), torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 4] = 1.0
    vertical[0, 0, :, 4] = 1 / 9
    wiener = load_solver("wiener")
    for wrong in (dot, vertical):  # the true kernel at full resolution beats a wrong one at half
        best, scores = scale.choose_coarse(y, {1: k, 2: wrong}, wiener, 0.0)
        assert best == 1 and sorted(scores) == [1, 2] and scores[1] < 0.9 * scores[2]
    # the kept factor is the one with the lowest score
    best, scores = scale.choose_coarse(y, {1: k, 2: k}, wiener, 0.0)
    assert best == min(scores, key=scores.get)
