"""Non-blind solvers (wiener, dwdn, unrolled), the FFT deconvolution pieces, load_solver and
the non-blind `kdiff deblur --kernel` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdiff_cli.maths import deconv, ops
from kdiff_cli import files, plugins
from kdiff_cli import weights as wio
from kdiff_cli.cli import app
from kdiff_cli.errors import KdiffError
from kdiff_cli.solvers import load_solver

SOLVERS = ("wiener", "dwdn", "unrolled")
#: small architectures so that the learned solvers' tests stay fast
SMALL = {
    "wiener": {},
    "dwdn": {"features": 4, "feature_blocks": 1, "widths": [8, 8, 8], "blocks": [0, 1, 1]},
    "unrolled": {"stages": 2, "widths": [4, 8], "blocks": 1},
}


def make(name: str, seed: int = 0, randomize: bool = False, dtype=torch.float32) -> torch.nn.Module:
    """A small solver; ``randomize`` also overwrites the zero-initialised output convolutions."""
    torch.manual_seed(seed)
    m = plugins.get("solver", name)(**SMALL[name]).to(dtype)
    if randomize:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m.eval()


def motion_kernel(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """A deterministic diagonal-ish line kernel (1, 1, h, w), sum 1, centred."""
    k = torch.zeros(1, 1, h, w, dtype=dtype)
    n = max(h, w)
    for i in range(n):
        t = i / max(n - 1, 1)
        k[0, 0, round(t * (h - 1)), round((0.15 + 0.7 * t * t) * (w - 1))] += 1  # a curved stroke
    return ops.center_kernel(k / k.sum())


def texture(B: int = 1, C: int = 3, H: int = 48, W: int = 48, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """A seeded synthetic texture: smooth random field plus a few sharp-edged rectangles, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(B, C, H + 4, W + 4, generator=g, dtype=dtype), 5, 1)
    x = 0.3 + 0.4 * (x - x.amin()) / (x.amax() - x.amin())
    for _ in range(4):
        r, c = torch.randint(0, H - 8, (2,), generator=g).tolist()
        x[..., r : r + 8, c : c + 12] += 0.25 * (2 * torch.rand(1, generator=g).item() - 1)
    return x.clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a.clamp(0, 1) - b).square().mean()))


# --------------------------------------------------------------------------- deconv pieces


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


def test_pad_taper_keeps_image_and_meets_fill_at_the_seam():
    y = texture(2, 3, 20, 30, dtype=torch.float64)
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


def test_conjugate_gradient_decreases_the_unknown_boundary_objective():
    x = texture(1, 1, 40, 40, dtype=torch.float64)
    k = motion_kernel(9, 9, torch.float64)
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


def test_solve_tiled_blends_exactly_and_matches_direct_solve():
    y = texture(1, 3, 70, 90)
    k = motion_kernel(5, 5)
    # an identity "solver": the blended tiles must give back the image exactly
    same = deconv.solve_tiled(lambda y, k, s: y, y, k, 0.0, tile=32, overlap=8)
    assert torch.allclose(same, y, atol=1e-6)
    calls = []
    wiener = make("wiener")
    direct = wiener(y, k, 0.01)
    tiled = deconv.solve_tiled(wiener, y, k, 0.01, tile=40, callback=lambda i, n: calls.append((i, n)))
    assert calls[-1][0] == calls[-1][1] > 1
    assert psnr(tiled, direct) > 40
    assert torch.equal(deconv.solve_tiled(wiener, y, k, 0.01, tile=128), direct)


# --------------------------------------------------------------------------- wiener


def test_wiener_gradcheck_in_k():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 2, 16, 16, generator=g, dtype=torch.float64)
    k = (torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    solver = make("wiener", dtype=torch.float64)
    f = lambda kk: solver(y, kk / kk.sum(), 0.02)[..., ::3, ::3]  # noqa: E731 - 72 outputs keep it fast
    assert torch.autograd.gradcheck(f, (k,), eps=1e-6, atol=1e-6)


def test_wiener_recovers_noiseless_blur():
    x = texture(1, 3, 64, 64)
    k = motion_kernel(9, 9)
    y = ops.conv2d(x, k)
    x_hat = make("wiener")(y, k, 0.0)
    assert psnr(x_hat, x) > psnr(y, x) + 5


def test_wiener_beats_blurred_input_with_noise_and_estimated_sigma():
    x = texture(2, 3, 64, 64, seed=4)
    k = motion_kernel(11, 11)
    y = ops.add_noise(ops.conv2d(x, k), 0.01, torch.Generator().manual_seed(1))
    assert psnr(make("wiener")(y, k), x) > psnr(y, x) + 1.5


def test_wiener_boundary_refinement_helps_large_kernels():
    x = texture(1, 1, 64, 64, seed=5)
    k = motion_kernel(21, 21)
    y = ops.conv2d(x, k)
    plain = plugins.get("solver", "wiener")(iters=0)(y, k, 0.0)
    refined = plugins.get("solver", "wiener")()(y, k, 0.0)
    assert psnr(refined, x) > psnr(plain, x) + 1


# --------------------------------------------------------------------------- all solvers


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("shape", [(2, 17, 23, 4, 6), (1, 16, 16, 16, 16), (3, 21, 20, 5, 5)])
def test_shapes_gray_rgb_batch_even_odd(name, C, shape):
    B, H, W, h, w = shape
    g = torch.Generator().manual_seed(2)
    y = torch.rand(B, C, H, W, generator=g)
    k = torch.rand(B, 1, h, w, generator=g)
    x = make(name)(y, k / k.sum(dim=(-2, -1), keepdim=True), None)
    assert x.shape == y.shape and x.dtype == y.dtype and torch.isfinite(x).all()


@pytest.mark.parametrize("name", SOLVERS)
def test_batch_equals_one_by_one_and_broadcast_kernel(name):
    solver = make(name, randomize=True)
    y = texture(3, 3, 24, 28, seed=6)
    base = motion_kernel(5, 5)[0]
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
def test_gray_equals_rgb_with_equal_channels(name):
    solver = make(name, randomize=True)
    y = texture(1, 1, 24, 24, seed=7)
    k = motion_kernel(5, 5)
    with torch.no_grad():
        gray = solver(y, k, 0.01)
        rgb = solver(y.expand(-1, 3, -1, -1).contiguous(), k, 0.01)
    assert torch.allclose(gray, rgb.mean(dim=1, keepdim=True), atol=1e-5)


@pytest.mark.parametrize("name", ["dwdn", "unrolled"])
def test_learned_solvers_differentiable_in_k_at_random_init(name):
    y = texture(2, 3, 32, 32, seed=8)
    k = motion_kernel(7, 7).repeat(2, 1, 1, 1).requires_grad_(True)
    for randomize in (False, True):
        solver = make(name, randomize=randomize).train()
        x = solver(y, k, None)
        (gk,) = torch.autograd.grad(x.square().sum(), k)
        assert torch.isfinite(gk).all() and gk.abs().sum() > 0
        params = [p for p in solver.parameters() if p.requires_grad]
        gp = torch.autograd.grad(solver(y, k.detach(), 0.01).square().sum(), params, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in gp)


def test_dwdn_starts_as_the_wiener_solver():
    y = texture(1, 3, 32, 36, seed=9)
    k = motion_kernel(7, 7)
    dwdn = make("dwdn")
    wiener = plugins.get("solver", "wiener")(iters=dwdn.iters)
    with torch.no_grad():
        assert torch.allclose(dwdn(y, k, 0.01), wiener(y, k, 0.01), atol=1e-5)


def test_unrolled_starts_as_the_wiener_solver():
    """Untrained, the denoiser is the identity and the Wiener estimate is a fixed point of every
    data step, so the unrolled solver returns (up to the data steps' CG tolerance) wiener's output."""
    y = ops.add_noise(ops.conv2d(texture(1, 3, 32, 36, seed=9), motion_kernel(7, 7), "symmetric"), 0.01,
                      torch.Generator().manual_seed(0))
    k = motion_kernel(7, 7)
    unrolled = make("unrolled")
    wiener = plugins.get("solver", "wiener")(iters=unrolled.iters)
    with torch.no_grad():
        x_u, x_w = unrolled(y, k, 0.01), wiener(y, k, 0.01)
    assert (x_u - x_w).abs().mean() < 5e-4 and (x_u - x_w).abs().max() < 1e-2
    assert abs(psnr(x_u, texture(1, 3, 32, 36, seed=9)) - psnr(x_w, texture(1, 3, 32, 36, seed=9))) < 0.02


def test_prox_canvas_minimises_its_objective_and_keeps_the_tikhonov_fixed_point():
    torch.manual_seed(0)
    y = texture(1, 3, 24, 24, seed=13, dtype=torch.float64)
    k = motion_kernel(5, 5, torch.float64)
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
    z = deconv.embed(texture(1, 3, 24, 24, seed=14, dtype=torch.float64), canvas)
    Z = torch.fft.rfft2(z)
    before = objective(canvas.X, Z, mu)
    after = [objective(deconv.prox_canvas(canvas, y, lam, mu, Z, iters=n), Z, mu) for n in (1, 4, 40)]
    assert before > after[0] > after[1] >= after[2] - 1e-9
    # the exact minimiser: the normal equations hold
    X = deconv.prox_canvas(canvas, y, lam, mu, Z, iters=500)
    Xr = X.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(objective(Xr, Z, mu), Xr)
    assert g.abs().max() < 1e-6 * (1 + before)


def test_network_path_changes_output_when_trained():
    y = texture(1, 3, 32, 32, seed=10)
    k = motion_kernel(7, 7)
    for name in ("dwdn", "unrolled"):
        with torch.no_grad():
            assert not torch.allclose(make(name)(y, k, 0.01), make(name, randomize=True)(y, k, 0.01), atol=1e-4)


def test_solver_classes_document_themselves():
    for name in SOLVERS:
        cls = plugins.get("solver", name)
        assert cls.name == name and cls.description and issubclass(cls, torch.nn.Module)
    assert plugins.get("solver", "wiener").default_weights is None
    assert plugins.get("solver", "dwdn").default_weights == "dwdn"
    assert plugins.get("solver", "unrolled").default_weights == "unrolled"


# --------------------------------------------------------------------------- load_solver and weights


@pytest.fixture
def no_shipped(tmp_path, monkeypatch):
    """An empty shipped-weights folder, so tests do not depend on what weights/ holds."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(wio, "shipped_dir", lambda: folder)
    return folder


def _save(model: torch.nn.Module, path, name: str, kwargs: dict):
    return wio.save(path, model.state_dict(), {"solver": name, "model": kwargs})


def test_load_solver_wiener_and_errors(no_shipped, tmp_path):
    m = load_solver("wiener")
    assert not m.training and m.lambda_scale > 0
    with pytest.raises(KdiffError, match="takes no weights"):
        load_solver("wiener", weights=str(_save(make("dwdn"), tmp_path / "d.safetensors", "dwdn", SMALL["dwdn"])))
    with pytest.raises(KdiffError, match="unknown solver"):
        load_solver("nope")
    with pytest.raises(KdiffError, match=r"needs trained weights.*dwdn\.safetensors"):
        load_solver("dwdn")


@pytest.mark.parametrize("name", ["dwdn", "unrolled"])
def test_load_solver_round_trip_and_default_weights(name, no_shipped, tmp_path):
    src = make(name, seed=3, randomize=True)
    path = _save(src, tmp_path / f"{name}.safetensors", name, SMALL[name])
    y, k = texture(1, 3, 24, 24), motion_kernel(5, 5)
    loaded = load_solver(name, weights=str(path))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(y, k, 0.01), src(y, k, 0.01))
    # shipped under the class's default name -> found without --weights
    _save(src, no_shipped / f"{name}.safetensors", name, SMALL[name])
    with torch.no_grad():
        assert torch.equal(load_solver(name)(y, k, 0.01), src(y, k, 0.01))


def test_bad_weights_files_name_the_file(no_shipped, tmp_path):
    good = _save(make("dwdn"), tmp_path / "good.safetensors", "dwdn", SMALL["dwdn"])
    data = good.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 64 + data[64:])
    # metadata says features=6 but the tensors are those of features=4
    other_arch = _save(make("dwdn"), tmp_path / "other.safetensors", "dwdn", {**SMALL["dwdn"], "features": 6})
    bad_shape = tmp_path / "shape.safetensors"
    wio.save(bad_shape, make("dwdn").state_dict(), {"solver": "dwdn", "model": {**SMALL["dwdn"], "widths": [8, 8, 16]}})
    wrong_solver = _save(make("unrolled"), tmp_path / "unrolled.safetensors", "unrolled", SMALL["unrolled"])
    nan = tmp_path / "nan.safetensors"
    wio.save(nan, {k: v.float() * float("nan") if v.is_floating_point() else v for k, v in make("dwdn").state_dict().items()},
             {"solver": "dwdn", "model": SMALL["dwdn"]})
    with pytest.raises(KdiffError, match="nan.safetensors holds non-finite values"):
        load_solver("dwdn", weights=str(nan))
    for path in (truncated, corrupt, other_arch, bad_shape):
        with pytest.raises(KdiffError, match=str(path.name)):
            load_solver("dwdn", weights=str(path))
    with pytest.raises(KdiffError, match="is for solver 'unrolled'"):
        load_solver("dwdn", weights=str(wrong_solver))
    with pytest.raises(KdiffError, match="not found"):
        load_solver("dwdn", weights=str(tmp_path / "missing.safetensors"))


# --------------------------------------------------------------------------- CLI: kdiff deblur --kernel


@pytest.fixture
def images(tmp_path):
    """A tiny blurred 8-bit RGB PNG, a 16-bit gray PNG and a 9x9 kernel (.npy and .png)."""
    k = motion_kernel(9, 9)
    x = texture(1, 3, 40, 44, seed=11)
    y = ops.conv2d(x, k)
    files.write_image(tmp_path / "rgb8.png", files.to_numpy(y), 8)
    files.write_image(tmp_path / "gray16.png", files.to_numpy(y.mean(dim=1, keepdim=True)), 16)
    np.save(tmp_path / "k.npy", k[0, 0].numpy().astype(np.float64))
    files.write_image(tmp_path / "k.png", k[0, 0].numpy() / float(k.max()), 8)
    return tmp_path, x


def _run(*args: str):
    return CliRunner().invoke(app, ["deblur", *args])


def test_cli_nonblind_wiener_keeps_bit_depth_and_inputs(images):
    d, x = images
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    res = _run(str(d / "rgb8.png"), str(d / "gray16.png"), "--kernel", str(d / "k.npy"), "--out", str(d), "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before  # inputs untouched
    out8, info8 = files.read_image(d / "rgb8_deblurred.png")
    out16, info16 = files.read_image(d / "gray16_deblurred.png")
    assert (info8.bit_depth, info8.channels, info16.bit_depth, info16.channels) == (8, 3, 16, 1)
    y8, _ = files.read_image(d / "rgb8.png")
    ref = x[0].permute(1, 2, 0).numpy()
    err = lambda a: float(np.mean((a[8:-8, 8:-8] - ref[8:-8, 8:-8]) ** 2))  # noqa: E731
    assert err(out8) < 0.5 * err(y8)  # actually deblurred
    # a kernel stored as a gray PNG works as well
    res = _run(str(d / "rgb8.png"), "--kernel", str(d / "k.png"), "--out", str(d / "o"), "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (d / "o" / "rgb8_deblurred.png").is_file()


def test_cli_bad_kernel_missing_kernel_and_bad_input(images):
    d, _ = images
    (d / "bad.npy").write_bytes(b"garbage")
    np.save(d / "k3.npy", np.ones((2, 3, 3)))
    (d / "broken.png").write_bytes(b"not an image")
    for bad in ("bad.npy", "k3.npy", "broken.png", "nothere.npy"):
        res = _run(str(d / "rgb8.png"), "--kernel", str(d / bad), "--out", str(d / "o"))
        assert res.exit_code == 2 and f"cannot read kernel {d / bad}" in res.output
    res = _run(str(d / "rgb8.png"), "--out", str(d / "o"), "--weights", "no-such-weights")
    assert res.exit_code == 2 and "no shipped weights named 'no-such-weights'" in res.output
    res = _run(str(d / "broken.png"), str(d / "rgb8.png"), "--kernel", str(d / "k.npy"), "--out", str(d / "o"), "--device", "cpu")
    assert res.exit_code == 1 and "broken.png" in res.output
    assert (d / "o" / "rgb8_deblurred.png").is_file() and not (d / "o" / "broken_deblurred.png").exists()


def test_cli_never_overwrites_an_input(images):
    d, _ = images
    (d / "rgb8_deblurred.png").write_bytes((d / "rgb8.png").read_bytes())
    before = (d / "rgb8_deblurred.png").read_bytes()
    res = _run(str(d / "rgb8.png"), str(d / "rgb8_deblurred.png"), "--kernel", str(d / "k.npy"), "--out", str(d))
    assert res.exit_code == 2 and "overwrite an input" in res.output
    assert (d / "rgb8_deblurred.png").read_bytes() == before


def test_cli_learned_solver_without_weights(images, no_shipped):
    d, _ = images
    res = _run(str(d / "rgb8.png"), "--kernel", str(d / "k.npy"), "--out", str(d / "o"), "--solver", "dwdn")
    assert res.exit_code == 2 and "needs trained weights" in res.output


@pytest.mark.parametrize("name", ["dwdn", "unrolled"])
def test_bf16_autocast_keeps_the_fft_parts_in_float32(name):
    solver = make(name, randomize=True)
    y, k = texture(1, 3, 32, 32, seed=12), motion_kernel(7, 7)
    with torch.no_grad():
        full = solver(y, k, 0.01)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = solver(y, k, 0.01)
    assert half.dtype == torch.float32
    assert (half - full).abs().mean() < 0.01  # bf16 convolutions only; FFT Wiener in bf16 is far worse
