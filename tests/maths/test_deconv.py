"""kdiff_cli.maths.deconv: FFT sizes, the OTF, padding, noise estimation, the unknown-boundary
conjugate gradient, tiled solves and the proximal step of the unrolled solver."""

from __future__ import annotations

import pytest
import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import deconv, ops


def test_fft_size_is_even_5_smooth_and_minimal():
    for n in (1, 7, 97, 256, 384, 641):
        m = deconv.fft_size(n)
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        assert m >= n and m % 2 == 0 and r == 1
        assert all(deconv.fft_size(j) == m for j in range(n, m + 1) if j % 2 == 0 or j == n)
    assert deconv.fft_size(384) == 384 and deconv.fft_size(385) == 400


@pytest.mark.parametrize("hw", [(5, 5), (6, 4), (1, 8)])
def test_psf2otf_matches_circular_convolution(hw):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 24, 20, generator=g, dtype=torch.float64)
    k = torch.rand(2, 1, *hw, generator=g, dtype=torch.float64)
    Kf = deconv.psf2otf(k, (24, 20))
    y = torch.fft.irfft2(torch.fft.rfft2(x) * Kf, s=(24, 20))
    assert torch.allclose(y, ops.conv2d(x, k, "circular"), atol=1e-12)


def test_pad_taper_keeps_image_and_meets_fill_at_the_seam(textured_image):
    y = textured_image(2, 3, 20, 30, dtype=torch.float64)
    pads = deconv.canvas_pads(20, 30, 6, 7)
    assert min(pads[0], pads[2]) >= 6 and min(pads[1], pads[3]) >= 6
    yp = deconv.pad_taper(y, pads)
    assert (20 + pads[0] + pads[1]) == deconv.fft_size(20 + 12)
    assert torch.equal(deconv.crop(yp, pads), y)
    mean = y.mean(dim=(-2, -1), keepdim=True).expand(-1, -1, 1, yp.shape[-1])
    assert torch.allclose(yp[..., :1, :], mean) and torch.allclose(yp[..., -1:, :], mean)
    # the pixel next to the image is (almost) the mirror copy: no edge at the image border
    assert torch.allclose(yp[..., pads[0] - 1, pads[2] : pads[2] + 30], y[..., 0, :], atol=0.02)


def test_estimate_noise_recovers_sigma_on_flat_image():
    g = torch.Generator().manual_seed(3)
    for sigma in (0.005, 0.02, 0.05):
        y = ops.add_noise(torch.full((2, 3, 128, 128), 0.5), sigma, g)
        est = deconv.estimate_noise(y)
        assert est.shape == (2,) and torch.allclose(est, torch.full((2,), sigma), rtol=0.05)


def test_noise_level_forms_and_errors():
    y = torch.zeros(3, 1, 8, 8)
    assert deconv.noise_level(0.1, y).tolist() == pytest.approx([0.1] * 3)
    assert deconv.noise_level(torch.tensor([0.1, 0.2, 0.3]), y).tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(KdiffError, match="one value per image"):
        deconv.noise_level(torch.tensor([0.1, 0.2]), y)
    with pytest.raises(KdiffError, match="nonnegative"):
        deconv.noise_level(-1.0, y)


def test_check_inputs_errors():
    with pytest.raises(KdiffError, match="smaller than the kernel"):
        deconv.check_inputs(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 9, 3))
    with pytest.raises(KdiffError, match="kernel batch"):
        deconv.check_inputs(torch.zeros(2, 1, 8, 8), torch.ones(3, 1, 3, 3))
    with pytest.raises(KdiffError, match=r"\(B, C, H, W\)"):
        deconv.check_inputs(torch.zeros(8, 8), torch.ones(1, 1, 3, 3))


def _objective(canvas: deconv.Canvas, y: torch.Tensor, lam: float) -> torch.Tensor:
    """``||M (k * x) - y||^2 + lam ||D x||^2`` of the canvas estimate (periodic differences)."""
    x = canvas.spatial()
    kx = torch.fft.irfft2(canvas.Kf * torch.fft.rfft2(x), s=canvas.size)
    r = deconv.crop(kx, canvas.pads) - y
    dx = x - torch.roll(x, 1, -1)
    dy = x - torch.roll(x, 1, -2)
    return r.square().sum() + lam * (dx.square().sum() + dy.square().sum())


def test_conjugate_gradient_decreases_the_unknown_boundary_objective(curved_kernel, textured_image):
    x = textured_image(1, 1, 40, 40, dtype=torch.float64)
    k = curved_kernel(9, 9, torch.float64)
    y = ops.add_noise(ops.conv2d(x, k), 0.01, torch.Generator().manual_seed(0))
    lam = torch.tensor([0.01], dtype=torch.float64)
    values = [float(_objective(deconv.deconvolve_canvas(y, k, lam, iters=n), y, 0.01)) for n in (0, 1, 3, 10, 40)]
    assert all(a > b for a, b in zip(values, values[1:]))
    # converged: the exact minimiser's gradient vanishes
    c = deconv.deconvolve_canvas(y, k, lam, iters=200)
    xs = c.spatial().detach().requires_grad_(True)
    obj = _objective(deconv.Canvas(torch.fft.rfft2(xs), c.Kf, c.pads, c.size), y, 0.01)
    (grad,) = torch.autograd.grad(obj, xs)
    assert grad.abs().max() < 1e-6


def test_solve_tiled_blends_exactly_and_matches_direct_solve(psnr, make_solver, curved_kernel, textured_image):
    y = textured_image(1, 3, 70, 90)
    k = curved_kernel(5, 5)
    # an identity "solver": the blended tiles must give back the image exactly
    same = deconv.solve_tiled(lambda y, k, s: y, y, k, 0.0, tile=32, overlap=8)
    assert torch.allclose(same, y, atol=1e-6)
    calls = []
    wiener = make_solver("wiener")
    direct = wiener(y, k, 0.01)
    tiled = deconv.solve_tiled(wiener, y, k, 0.01, tile=40, callback=lambda i, n: calls.append((i, n)))
    assert calls[-1][0] == calls[-1][1] > 1
    assert psnr(tiled, direct) > 40
    assert torch.equal(deconv.solve_tiled(wiener, y, k, 0.01, tile=128), direct)


def test_solve_tiled_halo_brings_the_tiles_close_to_the_whole_image_solve(psnr, make_solver, curved_kernel, textured_image):
    y = textured_image(1, 3, 96, 96)
    k = curved_kernel(9, 9)
    wiener = make_solver("wiener")
    direct = wiener(y, k, 0.01)
    # the same kept parts (28 px): solved bare (their edges unknown to the solver) or with the default
    # halo of twice the kernel size (18 px each side: 64 px solves)
    bare = deconv.solve_tiled(wiener, y, k, 0.01, tile=28, overlap=8, halo=0)
    haloed = deconv.solve_tiled(wiener, y, k, 0.01, tile=64, overlap=8)
    assert psnr(haloed, direct) > psnr(bare, direct) + 3
    # the identity solver still blends back exactly with a halo
    assert torch.allclose(deconv.solve_tiled(lambda y, k, s: y, y, k, 0.0, tile=64, overlap=8), y, atol=1e-6)


def test_prox_canvas_minimises_its_objective_and_keeps_the_tikhonov_fixed_point(curved_kernel, textured_image):
    torch.manual_seed(0)
    y = textured_image(1, 3, 24, 24, seed=13, dtype=torch.float64)
    k = curved_kernel(5, 5, torch.float64)
    lam = torch.tensor([0.01], dtype=torch.float64)
    canvas = deconv.deconvolve_canvas(y, k, lam, iters=500)  # converged Tikhonov solution
    size, (top, bottom, left, right) = canvas.size, canvas.pads
    prior = deconv.gradient_spectrum(size, torch.float64)

    def objective(X, Z, mu):
        x = torch.fft.irfft2(X, s=size)
        fit = (canvas.mask * (torch.fft.irfft2(canvas.Kf * X, s=size) - torch.nn.functional.pad(y, (left, right, top, bottom)))).square().sum()
        gx, gy = x - x.roll(1, -1), x - x.roll(1, -2)
        return fit + lam * (gx.square().sum() + gy.square().sum()) + mu * (x - torch.fft.irfft2(Z, s=size)).square().sum()

    mu = torch.tensor([0.05], dtype=torch.float64)
    X_fixed = deconv.prox_canvas(canvas, y, lam, mu, canvas.X, iters=4)
    assert torch.allclose(torch.fft.irfft2(X_fixed, s=size), canvas.spatial(), atol=1e-6)
    z = deconv.embed(textured_image(1, 3, 24, 24, seed=14, dtype=torch.float64), canvas)
    Z = torch.fft.rfft2(z)
    before = objective(canvas.X, Z, mu)
    after = [objective(deconv.prox_canvas(canvas, y, lam, mu, Z, iters=n), Z, mu) for n in (1, 4, 40)]
    assert before > after[0] > after[1] >= after[2] - 1e-9
    # the exact minimiser: the normal equations hold
    X = deconv.prox_canvas(canvas, y, lam, mu, Z, iters=500)
    Xr = X.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(Xr, Z, mu), Xr)
    assert g.abs().max() < 1e-6 * (1 + before)
