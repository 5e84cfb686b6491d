"""The latent reblur loss (``--guidance-loss latent``): it sees the kernel's phase, and Stage II on it sharpens."""

import numpy as np
import pytest
import torch

from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops
from kdiff_cli.maths.guidance import ReblurGuidance, refine
from kdiff_cli.maths.latent_guidance import LatentGuidance, build_guidance

SIZE = 15


@pytest.fixture(scope="module")
def scene(shapes_scene, hook_kernel):
    """Two RGB images blurred by the hook kernel (conftest.py; sigma 0.005), and the kernel."""
    k = hook_kernel
    x = torch.cat([shapes_scene(np.random.default_rng(s)) for s in (1, 2)]).float().expand(-1, 3, -1, -1)
    y = ops.conv2d(x, k) + 0.005 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    return y.clamp(0, 1), k


def test_the_latent_loss_tells_a_kernel_from_its_rotation_and_from_a_dot(scene):
    """Where the paper's ``wiener`` loss is blind to the phase (tests/plugins/test_refiners.py), the
    latent loss ranks the true kernel first, its 180-degree rotation and a dot far behind."""
    y, k = scene
    g = LatentGuidance(plugins.get("solver", "wiener")(), y, 0.005)
    kb = k.expand(2, -1, -1, -1)
    dot = torch.zeros_like(kb)
    dot[..., SIZE // 2, SIZE // 2] = 1
    r, r_flip, r_dot = g.residual(kb), g.residual(torch.flip(kb, (-2, -1))), g.residual(dot)
    assert r.shape == (2,)
    assert bool((r_flip > 1.5 * r).all()) and bool((r_dot > 1.5 * r).all())
    # the wiener loss of the same pair differs far less (its phase blindness)
    w = ReblurGuidance(plugins.get("solver", "wiener")(), y, 0.005)
    assert bool(((w.residual(torch.flip(kb, (-2, -1))) / w.residual(kb)) < (r_flip / r)).all())


def test_the_gradient_is_the_k_steps_and_is_deterministic(scene):
    """The gradient flows through ``k`` only (``x_hat`` held): it equals the finite difference of the
    loss with ``x_hat`` frozen, and two evaluations give the same numbers."""
    y, k = scene
    g = LatentGuidance(None, y[:1], None)
    kk = k.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g.residual(kk).sum(), kk)
    assert torch.equal(grad, torch.autograd.grad(LatentGuidance(None, y[:1], None).residual(kk).sum(), kk)[0])
    # directional derivative with x_hat frozen at k: the loss is quadratic in k there, so the
    # central difference is exact up to rounding
    d = torch.randn(k.shape, generator=torch.Generator().manual_seed(0)) * 1e-3
    frozen = LatentGuidance(None, y[:1], None)

    def loss_at(kernel):
        from kdiff_cli.maths import deconv
        from kdiff_cli.maths.alternating_steps import _grad, window_operator, x_step

        pads, y_can, (dh, dv) = frozen._canvases(SIZE)
        x_can = x_step(y_can, deconv.psf2otf(k, tuple(y_can.shape[-2:])), frozen.lam, frozen._steps)
        fwd, _, mask = window_operator(x_can.double(), SIZE, pads)
        ph, pv = fwd(kernel.double())
        return float((ph - mask * dh.double()).square().sum() + (pv - mask * dv.double()).square().sum())

    fd = (loss_at(k + d) - loss_at(k - d)) / 2
    assert fd == pytest.approx(float((grad * d).sum()), rel=2e-3)


def test_stage_ii_on_the_latent_loss_turns_a_rotated_kernel_towards_the_truth(scene):
    """The paper's Stage II (``reblur`` refiner) on the latent loss corrects a kernel's phase, which
    gradient steps on the ``wiener`` loss cannot: from the truth overlaid with its 180-degree
    rotation (MNC 0.77), the latent loss recovers the truth (MNC 0.999), the wiener loss does not."""
    y, k = scene
    k0 = ops.normalize_kernel(torch.flip(k, (-2, -1)) + k)
    before = float(ops.mnc(k0.double(), k.double()))
    latent = refine(LatentGuidance(None, y[:1], None), k0, steps=30)
    wiener = refine(ReblurGuidance(plugins.get("solver", "wiener")(), y[:1], 0.005), k0, steps=30)
    after_latent = float(ops.mnc(latent.k.double(), k.double()))
    after_wiener = float(ops.mnc(wiener.k.double(), k.double()))
    assert before < 0.8 and after_latent > 0.95
    assert after_latent > after_wiener + 0.05
    assert latent.trace[-1][0] < latent.trace[0][0]  # backtracking: the loss went down


def test_one_image_scores_every_kernel_and_batches_must_match(scene):
    """Candidates of one image are scored in one call (the MAP_k use), each as on its own."""
    y, k = scene
    dot = torch.zeros_like(k)
    dot[..., SIZE // 2, SIZE // 2] = 1
    g = LatentGuidance(None, y[:1], None)
    both = g.residual(torch.cat([k, dot]))
    assert torch.allclose(both, torch.cat([g.residual(k), g.residual(dot)]))
    with pytest.raises(KdiffError, match="3 kernels for 2 images"):
        LatentGuidance(None, y, None).residual(k.expand(3, -1, -1, -1))


def test_build_guidance_and_bad_options():
    y = torch.rand(1, 3, 32, 32)
    assert type(build_guidance("reblur", None, y)) is ReblurGuidance
    assert type(build_guidance("latent", None, y, scale=2.0)) is LatentGuidance
    with pytest.raises(KdiffError, match="--guidance-loss must be one of reblur, latent"):
        build_guidance("phase", None, y)
    with pytest.raises(KdiffError, match="--discrepancy applies to --guidance-loss reblur only"):
        build_guidance("latent", None, y, discrepancy=1.0)
