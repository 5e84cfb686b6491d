"""Samplers, reblur guidance and Stage II on a tiny random network and a closed-form solver (the
blind settings and the window: blind/)."""

import pytest
import torch

from kdiff_cli import plugins
from kdiff_cli.maths import diffusion, ops
from kdiff_cli.maths.guidance import ReblurGuidance, clean_kernel, refine
from kdiff_cli.maths.schedule import NoiseSchedule


class Tikhonov(torch.nn.Module):
    """x = argmin ||y - k*x||^2 + lam ||x||^2 with circular FFT: tiny, exact, differentiable in k."""

    def __init__(self, lam=1e-3):
        super().__init__()
        self.lam = lam

    def forward(self, y, k, sigma=None):
        H, W = y.shape[-2:]
        kc = ops.resize_kernel_canvas(k, max(H, W))[..., :H, :W] if k.shape[-1] != H else k
        kc = torch.roll(kc, shifts=(-(kc.shape[-2] // 2), -(kc.shape[-1] // 2)), dims=(-2, -1))
        Kf = torch.fft.rfft2(kc)
        Yf = torch.fft.rfft2(y)
        return torch.fft.irfft2(Kf.conj() * Yf / (Kf.abs() ** 2 + self.lam), s=(H, W))


@pytest.mark.parametrize("name", ["ddpm", "ddim", "unguided"])
def test_samplers_valid_kernels_and_deterministic(smooth_image, tiny_unet, name):
    model, sched = tiny_unet().eval(), NoiseSchedule()
    y = smooth_image()
    sampler = plugins.get("sampler", name)
    a = sampler.sample(model, sched, y, steps=8, generator=torch.Generator().manual_seed(3)).k
    b = sampler.sample(model, sched, y, steps=8, generator=torch.Generator().manual_seed(3)).k
    c = sampler.sample(model, sched, y, steps=8, generator=torch.Generator().manual_seed(4)).k
    assert a.shape == (1, 1, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("route", ["k0", "kt"])
def test_guidance_records_residual_and_changes_sample(line_kernel, smooth_image, tiny_unet, route):
    model, sched = tiny_unet().eval(), NoiseSchedule()
    x = smooth_image()
    y = ops.conv2d(x, line_kernel(16, 7), "circular")
    g = ReblurGuidance(Tikhonov(), y, route=route, scale=0.5)
    ddim = plugins.get("sampler", "ddim")
    guided = ddim.sample(model, sched, y, steps=6, guidance=g, generator=torch.Generator().manual_seed(0))
    plain = ddim.sample(model, sched, y, steps=6, generator=torch.Generator().manual_seed(0))
    assert len(guided.trace) == 6 and guided.residual.shape == (1,)
    assert not torch.allclose(guided.k, plain.k)
    assert guided.k.min() >= 0 and guided.k.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_guidance_step_is_a_descent_direction(line_kernel, smooth_image):
    """One k0-route guidance step with a small c lowers the reblur residual (first-order check)."""
    x = smooth_image(seed=2)
    k_true = line_kernel(16, 7)
    y = ops.conv2d(x, k_true, "circular")
    g = ReblurGuidance(Tikhonov(), y, scale=1e-3)
    k_d = diffusion.to_diffusion(ops.normalize_kernel(k_true + 0.02)).requires_grad_(True)
    r = g.residual(diffusion.from_diffusion(k_d))
    (grad,) = torch.autograd.grad(r.sum(), k_d)
    r2 = g.residual(diffusion.from_diffusion(k_d.detach() - g.step_size(r) * grad))
    assert r2.item() < r.item()


def test_stage_two_is_monotone_and_projected(line_kernel, smooth_image):
    x = smooth_image(seed=1)
    k_true = line_kernel(16, 7)
    y = ops.conv2d(x, k_true, "circular")
    g = ReblurGuidance(Tikhonov(), y.expand(2, -1, -1, -1))
    k0 = ops.normalize_kernel(torch.stack([ops.shift(k_true[0], 1, 0), torch.full_like(k_true[0], 1.0)]))
    res = refine(g, k0, steps=10)
    trace = torch.tensor(res.trace)
    assert (trace[1:] <= trace[:-1] + 1e-9).all(), "Stage II must never raise the residual"
    assert trace[-1, 1] < trace[0, 1]
    assert res.k.min() >= 0
    assert torch.allclose(res.k.sum((-2, -1)), torch.ones(2, 1), atol=1e-5)


def test_clean_kernel_removes_haze_and_stray_pieces(line_kernel):
    k_true = line_kernel(16, 7)  # (1, 1, 16, 16), sum 1
    haze = torch.full_like(k_true, 1e-3)  # a faint floor over the canvas: 0.256 of the mass
    stray = torch.zeros_like(k_true)
    stray[..., 1, 1] = 0.3 * float(k_true.max())  # above the threshold, but a piece of 1.4% of the mass
    k = torch.cat([k_true + haze + stray, k_true])
    out = clean_kernel(k)
    assert out.min() >= 0 and torch.allclose(out.sum((-2, -1)), torch.ones(2, 1), atol=1e-6)
    assert torch.allclose(out[0], k_true[0], atol=1e-6), "haze and the stray pixel must go, the path stay"
    assert torch.allclose(out[1], k_true[0], atol=1e-6), "a clean kernel is left as it is"
    # threshold 0: the plain projection (nonnegative, sum 1), nothing removed
    assert torch.allclose(clean_kernel(k, 0.0), ops.normalize_kernel(k))


def test_reblur_residual_favours_small_kernels_and_discrepancy_corrects_it(line_kernel, smooth_image):
    """With a regularised solver a delta kernel reblurs y almost exactly (R << N sigma^2) while the
    true kernel leaves the noise (R ~ N sigma^2); the discrepancy penalty ranks the truth first."""
    from kdiff_cli import plugins as plg

    x = smooth_image(64, 64, seed=5)
    k_true = line_kernel(16, 7)
    sigma = 0.02
    y = ops.add_noise(ops.conv2d(x, k_true, "symmetric"), torch.tensor([sigma]), torch.Generator().manual_seed(0))
    delta = torch.zeros_like(k_true)
    delta[0, 0, 8, 8] = 1.0
    g = ReblurGuidance(plg.get("solver", "wiener")(), y, sigma)
    T = g.noise_energy()
    assert T.item() == pytest.approx(y[0].numel() * sigma**2)
    with torch.no_grad():
        r_true, r_delta = g.residual(k_true), g.residual(delta)
    assert r_delta < 0.3 * r_true, "the plain reblur loss prefers the delta kernel"
    assert 0.5 < (r_true / T).item() < 1.5, "the true kernel leaves about the noise energy"
    g.discrepancy = 1.0
    assert g.penalty(r_true) < g.penalty(r_delta), "the discrepancy penalty prefers the true kernel"


def test_discrepancy_penalty_is_minimal_at_the_noise_level():
    y = torch.zeros(2, 3, 8, 8)
    g = ReblurGuidance(Tikhonov(), y, sigma=torch.tensor([0.1, 0.2]), discrepancy=2.0)
    T = 2.0 * 192 * torch.tensor([0.01, 0.04])
    r = torch.stack([T * f for f in (0.5, 0.99, 1.0, 1.01, 2.0)], dim=1).requires_grad_(True)  # (2, 5)
    pen = torch.stack([g.penalty(r[:, j]) for j in range(5)], dim=1)
    (grad,) = torch.autograd.grad(pen.sum(), r)
    assert (pen.argmin(dim=1) == 2).all()
    assert (grad[:, :2] < 0).all() and (grad[:, 3:] > 0).all()
    assert torch.allclose(grad[:, 2], torch.zeros(2), atol=1e-6)
    assert torch.allclose(grad[:, 4], torch.full((2,), 0.5))  # 1 - T / R at R = 2T
    g.discrepancy = None
    assert torch.equal(g.penalty(r[:, 0]), r[:, 0])
