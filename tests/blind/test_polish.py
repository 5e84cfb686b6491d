"""The full-resolution polish of a photo's kernel (kdiff_cli.blind.polish)."""

import pytest
import torch
import torch.nn.functional as F

from kdiff_cli import plugins
from kdiff_cli.blind import polish
from kdiff_cli.maths import ops


def _scene(n: int = 192, seed: int = 4) -> torch.Tensor:
    """Piecewise-constant RGB blocks: strong edges in every direction."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, n // 12, n // 12, generator=g), size=(n, n), mode="nearest")


def _shake() -> torch.Tensor:
    """A 15 px bent path with a bright dwell point at one end, as recorded camera shake has."""
    k = torch.zeros(1, 1, 15, 15)
    for t, (r, c) in enumerate([(7, 2), (7, 3), (7, 4), (6, 5), (5, 6), (4, 7), (4, 8), (5, 9), (6, 10), (7, 11)]):
        k[0, 0, r, c] = 1.0
    k[0, 0, 7, 2] = 4.0
    return ops.center_kernel(ops.normalize_kernel(k))


def _smeared(k: torch.Tensor) -> torch.Tensor:
    """``k`` as an upsampled coarse estimate looks: blurred by a 3 x 3 box, renormalised."""
    box = torch.full((1, 1, 3, 3), 1 / 9)
    return ops.center_kernel(ops.normalize_kernel(F.conv2d(k, box, padding=1)))


def test_polish_sharpens_a_smeared_kernel():
    k_true = _shake()
    y = ops.conv2d(_scene(), k_true)
    k0 = _smeared(k_true)
    k1 = polish.polish_kernel(y, k0, rounds=20)
    assert k1.shape == k0.shape and abs(float(k1.sum()) - 1) < 1e-5 and float(k1.min()) >= 0
    before, after = float(ops.mnc(k0[0, 0].double(), k_true[0, 0].double())), float(ops.mnc(k1[0, 0].double(), k_true[0, 0].double()))
    assert after > before + 0.1, (before, after)  # measured: 0.50 -> 0.66
    assert torch.equal(k1, polish.polish_kernel(y, k0, rounds=20))  # deterministic
    assert torch.equal(polish.polish_kernel(y, k0, rounds=0), k0)  # no rounds, no change


def test_polish_keeps_the_sharper_of_the_two():
    """The polished kernel replaces the estimate only when its deconvolution of the window scores
    sparser; either way the report says which and why."""
    solver = plugins.get("solver", "wiener")()
    k_true = _shake()
    y = ops.conv2d(_scene(), k_true)
    k0 = _smeared(k_true)
    k, done = polish.polish(y, k0, 5, solver, torch.tensor([0.01]))
    before, after = done.scores
    assert done.kept == (after < before)
    assert torch.equal(k, polish.polish_kernel(y[..., : done.window[3], : done.window[2]], k0, 5)) if done.kept else torch.equal(k, k0)
    assert done.window == (0, 0, 192, 192)  # smaller than the window: the whole image
    report = done.report()
    assert report == {"rounds": 5, "kept": done.kept, "scores": [before, after], "window": [0, 0, 192, 192]}


def test_polish_is_reported_on_photos_and_off_on_crops(tiny_weights):
    def _photo(n: int = 320) -> torch.Tensor:  # as tests/blind/test_photo_path.py's: a 9 px horizontal blur
        k = torch.zeros(1, 1, 9, 9)
        k[0, 0, 4, :] = 1 / 9
        return ops.conv2d(_scene(n, seed=1), k).clamp(0, 1)

    method = plugins.get("method", "kernel-diff")
    opts = dict(weights=str(tiny_weights), steps=2, refine_steps=1, seed=3, fallback=False)
    info = method.run(_photo(), **opts).info
    assert info["polish"]["rounds"] == 20 and len(info["polish"]["scores"]) == 2
    assert method.run(_photo(), polish=0, **opts).info["polish"] is None
    assert method.run(_photo(96), **opts).info["polish"] is None  # a crop: estimated at full resolution


@pytest.mark.parametrize("bad", [-1, -5])
def test_negative_polish_is_refused(bad):
    from kdiff_cli.blind.settings import BlindSettings
    from kdiff_cli.errors import KdiffError

    with pytest.raises(KdiffError, match="--polish must be >= 0"):
        BlindSettings(polish=bad).validate()
