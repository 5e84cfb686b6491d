"""The classical blind baseline ``alternating`` (MAP_{x,k} by alternating minimization), kdiff_cli.maths.alternating
(the ``alternating`` method plugin: plugins/test_methods.py)."""

import numpy as np
import pytest
import torch

from kdiff_cli.maths import alternating as A
from kdiff_cli.maths import deconv, ops
from kdiff_cli.errors import KdiffError

SIZE = 15  # kernel side of the synthetic problem (motion_problem, in conftest.py)


@pytest.fixture(scope="module")
def estimate(motion_problem):
    _, _, y = motion_problem
    return A.estimate_kernel(y, A.AlternatingSettings(kernel_size=SIZE, iterations=5))


# --------------------------------------------------------------------------- the estimate


def test_kernel_beats_delta_and_gaussian_guesses(gaussian_kernel, motion_problem, estimate):
    _, k_true, _ = motion_problem
    delta = torch.zeros(1, 1, SIZE, SIZE, dtype=torch.float64)
    delta[..., SIZE // 2, SIZE // 2] = 1
    best_guess = max(
        [float(ops.mnc(delta, k_true))] + [float(ops.mnc(gaussian_kernel(SIZE, s), k_true)) for s in (0.5, 1, 1.5, 2, 3, 4)]
    )
    got = float(ops.mnc(estimate.k.double(), k_true))
    assert got > 0.75
    assert got > best_guess + 0.2


def test_kernel_is_a_kernel(estimate):
    k = estimate.k
    assert k.shape == (1, 1, SIZE, SIZE)
    assert float(k.min()) >= 0
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-5)
    r, c = ops.center_of_mass(k[0, 0])
    assert abs(float(r) - SIZE // 2) <= 0.5 and abs(float(c) - SIZE // 2) <= 0.5


def test_residual_trace_recorded(estimate):
    levels = len(estimate.kernel_sizes)
    assert estimate.kernel_sizes == [5, 7, 11, 15]
    polish = A.AlternatingSettings().polish  # extra rounds at the finest level (window k-step)
    assert polish > 0 and len(estimate.residual) == levels * 5 + polish
    assert estimate.residual_level == [lv for lv in range(levels) for _ in range(5)] + [levels - 1] * polish
    r = np.array(estimate.residual)
    assert np.all(np.isfinite(r)) and np.all(r > 0)
    # the finest level ends with the L0 latent image reblurring to within a few noise std (0.005)
    assert r[-1] < 0.03


def test_deterministic(motion_problem, estimate):
    _, _, y = motion_problem
    again = A.estimate_kernel(y, A.AlternatingSettings(kernel_size=SIZE, iterations=5))
    assert torch.equal(again.k, estimate.k)
    assert again.residual == estimate.residual


def test_float64_finds_the_same_kernel(motion_problem, estimate):
    # the default float32 arithmetic (1.7x faster on CPU) estimates what float64 does
    _, _, y = motion_problem
    wide = A.estimate_kernel(y, A.AlternatingSettings(kernel_size=SIZE, iterations=5, precision="float64"))
    assert estimate.k.dtype == wide.k.dtype == torch.float32
    assert not torch.equal(wide.k, estimate.k)  # the precision option is honoured
    assert float(ops.mnc(wide.k.double(), estimate.k.double())) > 0.99


def test_random_init_uses_seed():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    a = A.initial_kernel(7, "random", g1)
    b = A.initial_kernel(7, "random", torch.Generator().manual_seed(1))
    c = A.initial_kernel(7, "random", g2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for init in A.INITS:
        k = A.initial_kernel(7, init, torch.Generator().manual_seed(0))
        assert float(k.sum()) == pytest.approx(1.0) and float(k.min()) >= 0


# --------------------------------------------------------------------------- building blocks


def test_k_step_recovers_kernel_from_true_image(motion_problem):
    x, k_true, _ = motion_problem
    y = ops.conv2d(x, k_true)
    pads = deconv.canvas_pads(*x.shape[-2:], SIZE, SIZE)
    settings = A.AlternatingSettings(kernel_size=SIZE, gamma=1e-5)
    k = A.k_step(deconv.pad_taper(x, pads), deconv.pad_taper(y, pads), SIZE, settings)
    assert float(ops.mnc(k, k_true)) > 0.95


def test_window_k_step_fits_the_observed_pixels_only(gaussian_kernel, motion_problem):
    # a true kernel from the true image: the closed form also fits the canvas's tapered margin,
    # the window fit only the observed pixels, so it is more accurate (and reaches ~1)
    x, k_true, _ = motion_problem
    y = ops.conv2d(x, k_true, "symmetric")
    pads = deconv.canvas_pads(*x.shape[-2:], SIZE, SIZE)
    x_can, y_can = deconv.pad_taper(x, pads), deconv.pad_taper(y, pads)
    settings = A.AlternatingSettings(kernel_size=SIZE, cg_iters=60, gamma_window=1e-6)
    k_fft = A.k_step(x_can, y_can, SIZE, settings)
    k_win = A.k_step(x_can, y_can, SIZE, settings, window=pads, k0=gaussian_kernel(SIZE, 2.0))
    assert float(ops.mnc(k_win, k_true)) > 0.99
    assert float(ops.mnc(k_win, k_true)) > float(ops.mnc(k_fft, k_true))
    assert float(k_win.min()) >= 0 and float(k_win.sum()) == pytest.approx(1.0)
    with pytest.raises(KdiffError, match="k0"):
        A.k_step(x_can, y_can, SIZE, settings, window=pads)


def test_window_operator_adjoint():
    g = torch.Generator().manual_seed(3)
    x_can = torch.randn(1, 1, 40, 48, generator=g, dtype=torch.float64)
    forward, adjoint, mask = A.window_operator(x_can, 9, (6, 8, 5, 9))
    assert float(mask.sum()) == (40 - 14) * (48 - 14)
    k = torch.randn(1, 1, 9, 9, generator=g, dtype=torch.float64)
    rs = list(torch.randn(2, 1, 1, 40, 48, generator=g, dtype=torch.float64))
    lhs = sum((a * b).sum() for a, b in zip(forward(k), rs))
    assert float(lhs) == pytest.approx(float((k * adjoint(rs)).sum()), rel=1e-10)
    # a delta kernel reproduces the masked gradients of x
    delta = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    delta[..., 4, 4] = 1
    for got, want in zip(forward(delta), A._grad(x_can)):
        assert torch.allclose(got, mask * want, atol=1e-10)


def test_x_step_fits_data_with_true_kernel(motion_problem):
    x, k_true, y = motion_problem
    y = y.double()
    pads = deconv.canvas_pads(*y.shape[-2:], SIZE, SIZE)
    y_can = deconv.pad_taper(y, pads)
    Kf = deconv.psf2otf(k_true, tuple(y_can.shape[-2:]))
    x_hat = deconv.crop(A.x_step(y_can, Kf, 1e-4, A.AlternatingSettings()), pads)
    assert A.residual_rms(y, x_hat, k_true) < 0.02
    # and it is much closer to the sharp scene than the blurred input is
    assert float((x_hat - x).abs().median()) < 0.5 * float((y - x).abs().median())


def test_gradient_adjoint():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 9, 11, generator=g, dtype=torch.float64)
    h, v = torch.randn(2, 1, 1, 9, 11, generator=g, dtype=torch.float64)
    dh, dv = A._grad(x)
    lhs = float((dh * h).sum() + (dv * v).sum())
    assert lhs == pytest.approx(float((x * A._grad_adjoint(h, v)).sum()), rel=1e-12)


def test_pyramid_sizes():
    assert A.pyramid_kernel_sizes(64, 2**-0.5) == [5, 7, 9, 11, 17, 23, 33, 45, 64]
    assert A.pyramid_kernel_sizes(3, 2**-0.5) == [3]
    assert A.pyramid_kernel_sizes(31, 0.5) == [5, 9, 17, 31]  # 15.5 -> 17, 7.75 -> 9, 3.9 -> 5


def test_drop_small_components():
    k = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    k[..., 1, 1:4] = 0.3  # 0.9 of the mass
    k[..., 5, 5] = 0.04  # a stray speck
    k[..., 6, 0] = 0.06
    out = A.drop_small_components(k, 0.05)
    assert float(out[..., 5, 5]) == 0 and float(out[..., 6, 0]) == pytest.approx(0.06)
    assert torch.equal(A.drop_small_components(k, 0.0), k)


def test_luminance():
    y = torch.rand(1, 3, 4, 5)
    lum = A.luminance(y)
    assert lum.shape == (1, 1, 4, 5)
    assert torch.allclose(lum, 0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:])
    with pytest.raises(KdiffError, match="channels"):
        A.luminance(torch.rand(1, 2, 4, 4))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"kernel_size": 200}, "exceeds the image"),
        ({"kernel_size": 2}, "kernel_size"),
        ({"iterations": 0}, "iterations"),
        ({"init": "zeros"}, "unknown init"),
        ({"gamma": 0.0}, "gamma"),
        ({"threshold": 1.0}, "threshold"),
        ({"polish": -1}, "polish"),
        ({"cg_iters": 0}, "cg_iters"),
        ({"gamma_window": -1.0}, "gamma_window"),
        ({"precision": "float16"}, "precision"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(KdiffError, match=match):
        A.estimate_kernel(torch.rand(1, 1, 64, 64), A.AlternatingSettings(**{"kernel_size": 9, **options}))


def test_batch_rejected():
    with pytest.raises(KdiffError, match="one image"):
        A.estimate_kernel(torch.rand(2, 1, 32, 32), A.AlternatingSettings(kernel_size=5))


# --------------------------------------------------------------------------- from an initial kernel (Stage II)


@pytest.mark.parametrize("start, sizes", [(0.5, [11, 15]), (1.0, [15])])
def test_refine_from_initial_kernel(soft_kernel, motion_problem, start, sizes):
    _, k_true, y = motion_problem
    k0 = soft_kernel(k_true)
    est = A.estimate_kernel(y, A.AlternatingSettings(kernel_size=SIZE, iterations=5), k_init=k0, start=start)
    assert est.kernel_sizes == sizes  # only the levels of side >= start * SIZE run
    assert len(est.residual) == 5 * len(sizes) + A.AlternatingSettings().polish
    before, after = float(ops.mnc(k0, k_true)), float(ops.mnc(est.k.double(), k_true))
    assert before < 0.8 and after > before + 0.1


def test_refine_from_initial_kernel_bad_input(motion_problem):
    _, k_true, y = motion_problem
    settings = A.AlternatingSettings(kernel_size=SIZE)
    with pytest.raises(KdiffError, match="initial kernel"):
        A.estimate_kernel(y, settings, k_init=k_true[0])
    with pytest.raises(KdiffError, match="start"):
        A.estimate_kernel(y, settings, k_init=k_true, start=1.5)


def test_resample_kernel_projects(gaussian_kernel):
    k = torch.roll(gaussian_kernel(64, 5.0), (3, -2), (-2, -1)) * (1 + torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    for size in (33, 64, 90):
        r = A.resample_kernel(k, size)
        assert r.shape == (1, 1, size, size) and float(r.min()) >= 0
        assert float(r.sum()) == pytest.approx(1.0)
        cy, cx = ops.center_of_mass(r[0, 0])
        assert abs(float(cy) - size // 2) <= 0.5 and abs(float(cx) - size // 2) <= 0.5
