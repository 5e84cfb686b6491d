"""Stage II refiner plugins: ``reblur`` (the paper's gradient steps) and ``alternating`` (MAP_{x,k} from k0)."""

import numpy as np
import pytest
import torch

from kdiff_cli.maths import ops
from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.guidance import ReblurGuidance, refine

SIZE = 15  # kernel side of linear_motion_kernel (conftest.py)


@pytest.fixture(scope="module")
def batch(shapes_scene, linear_motion_kernel):
    """Two images blurred by the same motion kernel, a Wiener guidance over them, and the truth."""
    x = torch.cat([shapes_scene(np.random.default_rng(s)) for s in (1, 2)])
    k_true = linear_motion_kernel(SIZE)
    y = (ops.conv2d(x, k_true) + 0.005 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)).float()
    g = ReblurGuidance(plugins.get("solver", "wiener")(), y, 0.005)
    return g, k_true


def test_both_registered_with_defaults():
    assert {"reblur", "alternating"} <= set(plugins.names("refiner"))
    assert plugins.get("refiner", "reblur").default_steps == 50
    assert plugins.get("refiner", "alternating").default_steps == 10
    with pytest.raises(KdiffError, match="unknown refiner 'nope'"):
        plugins.get("refiner", "nope")


def test_reblur_refiner_is_the_papers_stage_ii(soft_kernel, batch):
    g, k_true = batch
    k0 = soft_kernel(k_true).float().expand(2, -1, -1, -1)
    a = plugins.get("refiner", "reblur").refine(g, k0, steps=3)
    b = refine(g, k0, steps=3)
    assert torch.equal(a.k, b.k) and torch.equal(a.residual, b.residual)
    assert plugins.get("refiner", "reblur").total_steps(3, SIZE, 2) == 3


def test_alternating_refiner_sharpens_each_sample(soft_kernel, batch):
    g, k_true = batch
    k0 = soft_kernel(k_true).float().expand(2, -1, -1, -1).contiguous()
    R = plugins.get("refiner", "alternating")
    calls = []
    out = R.refine(g, k0, steps=4, callback=lambda j, r: calls.append(j))
    assert out.k.shape == (2, 1, SIZE, SIZE) and out.k.dtype == k0.dtype
    assert torch.allclose(out.k.sum((1, 2, 3)), torch.ones(2)) and float(out.k.min()) >= 0
    assert out.residual.shape == (2,) and torch.allclose(out.residual, g.residual(out.k))
    # progress: one call per round per sample, numbered 0..total-1
    assert calls == list(range(R.total_steps(4, SIZE, 2)))
    for b in range(2):
        assert float(ops.mnc(out.k[b : b + 1].double(), k_true)) > float(ops.mnc(k0[:1].double(), k_true)) + 0.1


def test_wiener_reblur_loss_is_blind_to_the_kernels_phase(shapes_scene, batch, hook_kernel):
    """Why ``alternating`` is the default Stage II: R(k) barely tells an asymmetric kernel from its
    180-degree rotation (same Fourier magnitude, a different kernel), far less than from the same
    kernel turned by 90 degrees."""
    g, _ = batch
    k = hook_kernel
    flipped = torch.flip(k, (-2, -1))
    assert float(ops.mnc(flipped.double(), k.double())) < 0.8  # a genuinely different kernel
    # y blurred by k itself
    x = torch.cat([shapes_scene(np.random.default_rng(s)) for s in (1, 2)]).float()
    y = ops.conv2d(x, k) + 0.005 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    g = ReblurGuidance(g.solver, y, 0.005)
    kb = k.expand(2, -1, -1, -1)
    r, r_flip, r_turn = g.residual(kb), g.residual(torch.flip(kb, (-2, -1))), g.residual(torch.rot90(kb, 1, (-2, -1)))
    # the rotation's excess residual over the truth is a fraction of the 90-degree turn's (boundary
    # effects of the symmetric forward model keep it from being exactly zero)
    assert bool(((r_flip - r) < 0.4 * (r_turn - r)).all())
    assert bool((r_turn > 2 * r).all())
