"""The non-blind solver plugins (wiener, hqs, dwdn, unrolled): accuracy, shapes, batches, gradients,
their starting point and bf16 (the FFT pieces: maths/test_deconv.py; loading weights:
foundation/test_solver_loading.py; `kdiff deblur --kernel`: apps/test_deblur_known_kernel.py)."""

from __future__ import annotations

import pytest
import torch

from kdiff_cli import plugins
from kdiff_cli.maths import ops

SOLVERS = ("wiener", "hqs", "dwdn", "unrolled")


# --------------------------------------------------------------------------- wiener


def test_wiener_gradcheck_in_k(make_solver):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 2, 16, 16, generator=g, dtype=torch.float64)
    k = (torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    solver = make_solver("wiener", dtype=torch.float64)
    f = lambda kk: solver(y, kk / kk.sum(), 0.02)[..., ::3, ::3]  # noqa: E731 - 72 outputs keep it fast
    assert torch.autograd.gradcheck(f, (k,), eps=1e-6, atol=1e-6)


def test_wiener_recovers_noiseless_blur(psnr, make_solver, curved_kernel, textured_image):
    x = textured_image(1, 3, 64, 64)
    k = curved_kernel(9, 9)
    y = ops.conv2d(x, k)
    x_hat = make_solver("wiener")(y, k, 0.0)
    assert psnr(x_hat, x) > psnr(y, x) + 5


def test_wiener_beats_blurred_input_with_noise_and_estimated_sigma(psnr, make_solver, curved_kernel, textured_image):
    x = textured_image(2, 3, 64, 64, seed=4)
    k = curved_kernel(11, 11)
    y = ops.add_noise(ops.conv2d(x, k), 0.01, torch.Generator().manual_seed(1))
    assert psnr(make_solver("wiener")(y, k), x) > psnr(y, x) + 1.5


def test_wiener_boundary_refinement_helps_large_kernels(psnr, curved_kernel, textured_image):
    x = textured_image(1, 1, 64, 64, seed=5)
    k = curved_kernel(21, 21)
    y = ops.conv2d(x, k)
    plain = plugins.get("solver", "wiener")(iters=0)(y, k, 0.0)
    refined = plugins.get("solver", "wiener")()(y, k, 0.0)
    assert psnr(refined, x) > psnr(plain, x) + 1


def test_wiener_for_guidance_keeps_the_regularisation_with_fewer_cg_steps(psnr, curved_kernel, textured_image):
    W = plugins.get("solver", "wiener")
    full = W(lambda_scale=50.0, lambda_floor=2e-3, margin=0.5)
    cheap = full.for_guidance()
    assert (cheap.lambda_scale, cheap.lambda_floor, cheap.margin) == (50.0, 2e-3, 0.5)
    assert cheap.iters == W.guidance_iters < full.iters
    assert W(iters=2).for_guidance().iters == 2  # never more steps than the solver itself takes
    x = textured_image(1, 1, 64, 64, seed=5)
    k = curved_kernel(21, 21)
    y = ops.conv2d(x, k)
    p_plain, p_cheap, p_full = (psnr(s(y, k, 0.0), x) for s in (W(50.0, 2e-3, 0.5, iters=0), cheap, full))
    # three CG steps already bring most of the boundary refinement (here 67%: 24.5 / 28.0 / 29.8 dB)
    assert p_plain + 0.6 * (p_full - p_plain) < p_cheap < p_full


# --------------------------------------------------------------------------- hqs (hyper-Laplacian prior)


def test_shrink_is_the_soft_threshold_at_p1_and_keeps_large_gradients():
    from kdiff_cli.maths import hqs

    gx = torch.tensor([0.0, 0.05, 0.3, -0.3, 2.0])
    gy = torch.zeros(5)
    wx, wy = hqs.shrink(gx, gy, 0.1, 1.0)
    assert torch.allclose(wx, torch.tensor([0.0, 0.0, 0.2, -0.2, 1.9])) and not wy.any()
    # p < 1 shrinks large gradients less than the soft threshold does, and never flips a sign
    wx8, _ = hqs.shrink(gx, gy, 0.1, 0.8)
    assert wx8[-1] > wx[-1] and wx8[1] == 0 and bool((wx8 * gx >= 0).all())
    # isotropic: the direction is kept
    wx, wy = hqs.shrink(torch.tensor([0.3]), torch.tensor([0.4]), 0.1, 1.0)
    assert torch.allclose(torch.stack([wx, wy]).flatten(), torch.tensor([0.24, 0.32]))


def _edges(seed: int = 3) -> torch.Tensor:
    """A piecewise-constant RGB image (the hyper-Laplacian prior's kind of scene), 64 x 64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 3, 64, 64), 0.5)
    for _ in range(8):
        r, c, h, w = torch.randint(0, 48, (4,), generator=g).tolist()
        x[..., r : r + 4 + h % 16, c : c + 4 + w % 16] = torch.rand(3, 1, 1, generator=g)
    return x


def test_hqs_beats_wiener_on_edges_with_noise(psnr, make_solver, curved_kernel):
    x = _edges()
    k = curved_kernel(11, 11)
    y = ops.add_noise(ops.conv2d(x, k), 0.01, torch.Generator().manual_seed(2))
    wiener, hqs = make_solver("wiener")(y, k, 0.01), make_solver("hqs")(y, k, 0.01)
    assert psnr(hqs, x) > psnr(wiener, x) + 1.0 > psnr(y, x) + 1.0


def test_hqs_without_prior_moves_from_the_wiener_start_towards_y_for_a_delta(make_solver):
    y = _edges(5)
    delta = torch.zeros(1, 1, 5, 5)
    delta[..., 2, 2] = 1
    start = plugins.get("solver", "wiener")()(y, delta, 0.05)
    x = plugins.get("solver", "hqs")(rho_scale=0.0)(y, delta, 0.05)
    assert (x - y).abs().max() < 0.5 * (start - y).abs().max()


def test_hqs_leaves_clipped_lights_out_of_the_data_term(psnr, make_solver, curved_kernel):
    x = _edges(9)
    for r, c in ((10, 12), (30, 40), (50, 20)):
        x[..., r : r + 3, c : c + 3] = 4.0  # lights far above white: the blurred photo clips around them
    k = curved_kernel(11, 11)
    y = ops.add_noise(ops.conv2d(x, k), 0.005, torch.Generator().manual_seed(3)).clamp(0, 1)
    assert bool((y >= 0.98).any())
    aware = plugins.get("solver", "hqs")()(y, k, 0.01)
    blind_to_clipping = plugins.get("solver", "hqs")(clip=None)(y, k, 0.01)
    assert psnr(aware, x.clamp(0, 1)) > psnr(blind_to_clipping, x.clamp(0, 1)) + 0.2  # measured: +0.39 dB


def test_hqs_regularises_more_with_more_noise(make_solver, curved_kernel):
    y = ops.conv2d(_edges(7), curved_kernel(9, 9))
    tv = lambda a: float((a[..., 1:, :] - a[..., :-1, :]).abs().mean())  # noqa: E731
    low, high = (make_solver("hqs")(y, curved_kernel(9, 9), s) for s in (0.005, 0.03))
    assert tv(high) < tv(low)


# --------------------------------------------------------------------------- all solvers


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("shape", [(2, 17, 23, 4, 6), (1, 16, 16, 16, 16), (3, 21, 20, 5, 5)])
def test_shapes_gray_rgb_batch_even_odd(make_solver, name, C, shape):
    B, H, W, h, w = shape
    g = torch.Generator().manual_seed(2)
    y = torch.rand(B, C, H, W, generator=g)
    k = torch.rand(B, 1, h, w, generator=g)
    x = make_solver(name)(y, k / k.sum(dim=(-2, -1), keepdim=True), None)
    assert x.shape == y.shape and x.dtype == y.dtype and torch.isfinite(x).all()


@pytest.mark.parametrize("name", SOLVERS)
def test_batch_equals_one_by_one_and_broadcast_kernel(make_solver, curved_kernel, textured_image, name):
    solver = make_solver(name, randomize=True)
    y = textured_image(3, 3, 24, 28, seed=6)
    base = curved_kernel(5, 5)[0]
    k = torch.stack([base, base.flip(-1), base.transpose(-1, -2)])  # three different kernels
    sigma = torch.tensor([0.01, 0.02, 0.0])
    with torch.no_grad():
        batch = solver(y, k, sigma)
        single = torch.cat([solver(y[i : i + 1], k[i : i + 1], sigma[i]) for i in range(3)])
        shared = solver(y, k[:1], sigma)
        shared_one = torch.cat([solver(y[i : i + 1], k[:1], sigma[i]) for i in range(3)])
    assert torch.allclose(batch, single, atol=1e-5)
    assert torch.allclose(shared, shared_one, atol=1e-5)


@pytest.mark.parametrize("name", SOLVERS)
def test_gray_equals_rgb_with_equal_channels(make_solver, curved_kernel, textured_image, name):
    solver = make_solver(name, randomize=True)
    y = textured_image(1, 1, 24, 24, seed=7)
    k = curved_kernel(5, 5)
    with torch.no_grad():
        gray = solver(y, k, 0.01)
        rgb = solver(y.expand(-1, 3, -1, -1).contiguous(), k, 0.01)
    assert torch.allclose(gray, rgb.mean(dim=1, keepdim=True), atol=1e-5)


@pytest.mark.parametrize("name", ["dwdn", "unrolled"])
def test_learned_solvers_differentiable_in_k_at_random_init(make_solver, curved_kernel, textured_image, name):
    y = textured_image(2, 3, 32, 32, seed=8)
    k = curved_kernel(7, 7).repeat(2, 1, 1, 1).requires_grad_(True)
    for randomize in (False, True):
        solver = make_solver(name, randomize=randomize).train()
        x = solver(y, k, None)
        (gk,) = torch.autograd.grad(x.square().sum(), k)
        assert torch.isfinite(gk).all() and gk.abs().sum() > 0
        params = [p for p in solver.parameters() if p.requires_grad]
        gp = torch.autograd.grad(solver(y, k.detach(), 0.01).square().sum(), params, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in gp)


def test_dwdn_starts_as_the_wiener_solver(make_solver, curved_kernel, textured_image):
    y = textured_image(1, 3, 32, 36, seed=9)
    k = curved_kernel(7, 7)
    dwdn = make_solver("dwdn")
    wiener = plugins.get("solver", "wiener")(iters=dwdn.iters)
    with torch.no_grad():
        assert torch.allclose(dwdn(y, k, 0.01), wiener(y, k, 0.01), atol=1e-5)


def test_unrolled_starts_as_the_wiener_solver(psnr, make_solver, curved_kernel, textured_image):
    """Untrained, the denoiser is the identity and the Wiener estimate is a fixed point of every
    data step, so the unrolled solver returns (up to the data steps' CG tolerance) wiener's output."""
    y = ops.add_noise(ops.conv2d(textured_image(1, 3, 32, 36, seed=9), curved_kernel(7, 7), "symmetric"), 0.01,
                      torch.Generator().manual_seed(0))
    k = curved_kernel(7, 7)
    unrolled = make_solver("unrolled")
    wiener = plugins.get("solver", "wiener")(iters=unrolled.iters)
    with torch.no_grad():
        x_u, x_w = unrolled(y, k, 0.01), wiener(y, k, 0.01)
    assert (x_u - x_w).abs().mean() < 5e-4 and (x_u - x_w).abs().max() < 1e-2
    assert abs(psnr(x_u, textured_image(1, 3, 32, 36, seed=9)) - psnr(x_w, textured_image(1, 3, 32, 36, seed=9))) < 0.02


def test_network_path_changes_output_when_trained(make_solver, curved_kernel, textured_image):
    y = textured_image(1, 3, 32, 32, seed=10)
    k = curved_kernel(7, 7)
    for name in ("dwdn", "unrolled"):
        with torch.no_grad():
            assert not torch.allclose(make_solver(name)(y, k, 0.01), make_solver(name, randomize=True)(y, k, 0.01), atol=1e-4)


def test_solver_classes_document_themselves():
    for name in SOLVERS:
        cls = plugins.get("solver", name)
        assert cls.name == name and cls.description and issubclass(cls, torch.nn.Module)
    assert plugins.get("solver", "wiener").default_weights is None
    assert plugins.get("solver", "dwdn").default_weights == "dwdn"
    assert plugins.get("solver", "unrolled").default_weights == "unrolled"


@pytest.mark.parametrize("name", ["dwdn", "unrolled"])
def test_bf16_autocast_keeps_the_fft_parts_in_float32(make_solver, curved_kernel, textured_image, name):
    solver = make_solver(name, randomize=True)
    y, k = textured_image(1, 3, 32, 32, seed=12), curved_kernel(7, 7)
    with torch.no_grad():
        full = solver(y, k, 0.01)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = solver(y, k, 0.01)
    assert half.dtype == torch.float32
    assert (half - full).abs().mean() < 0.01  # bf16 convolutions only; FFT Wiener in bf16 is far worse
