"""The MAP_k choice score (kdiff_cli.maths.choice): normalized sparsity does not reward the no-blur explanation."""

import torch

from kdiff_cli.maths import choice, ops
from kdiff_cli.solvers import load_solver


def _scene(n: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(1, 3, n // 8, n // 8, generator=g)
    return torch.nn.functional.interpolate(blocks, scale_factor=8, mode="nearest")


def test_normalized_sparsity_prefers_sharp_and_is_scale_free():
    x = _scene()
    k = torch.zeros(1, 1, 9, 9)
    k[0, 0, 4, :] = 1 / 9  # horizontal motion
    y = ops.conv2d(x, k)
    s_sharp, s_blur = choice.normalized_sparsity(x), choice.normalized_sparsity(y)
    assert float(s_sharp) < 0.8 * float(s_blur)
    assert torch.allclose(choice.normalized_sparsity(0.5 * x), s_sharp)


def test_true_kernel_scores_below_a_delta_where_the_reblur_residual_prefers_the_delta():
    x = _scene()
    k = torch.zeros(1, 1, 9, 9)
    k[0, 0, 4, :] = 1 / 9
    y = ops.conv2d(x, k)
    delta = torch.zeros(1, 1, 9, 9)
    delta[0, 0, 4, 4] = 1
    solver = load_solver("wiener")
    scores = choice.sparsity_scores(solver, y, [k, delta], torch.tensor([0.0]))
    assert float(scores[0]) < float(scores[1])
    # the residual the previous rule chose by: the delta explains y better
    residual = [float((y - ops.conv2d(solver(y, kk, torch.tensor([0.01])), kk)).square().sum()) for kk in (k, delta)]
    assert residual[1] < residual[0]


def test_clipped_pixels_are_left_out_of_the_score():
    x = _scene()
    x2 = x.clone()
    x2[..., 40:56, 40:56] = 1.0  # a clipped patch: masked, with its surroundings
    valid = torch.ones(1, 1, 96, 96, dtype=torch.bool)
    valid[..., 30:66, 30:66] = False
    a = choice.normalized_sparsity(x, valid=valid)
    b = choice.normalized_sparsity(x2, valid=valid)
    assert torch.allclose(a, b)


def test_fallback_needs_a_clear_margin():
    assert choice.keep_input(torch.tensor([100.0, 98.0, 86.0]))  # 12% below the best kernel: text3's ringing (14%)
    assert not choice.keep_input(torch.tensor([100.0, 98.0, 89.5]))  # 8.7% lower: real-blur's face, visibly sharper deblurred
    assert not choice.keep_input(torch.tensor([100.0, 98.0, 95.0]))  # 3% lower: deconvolution noise, not failure
    assert not choice.keep_input(torch.tensor([100.0, 98.0, 99.0]))


def test_lights_fallback_needs_the_kernel_clearly_sparser():
    assert not choice.keep_input_lights(torch.tensor([42.2, 77.5]))  # car3's streak kernel: 1.84
    assert choice.keep_input_lights(torch.tensor([93.4, 94.7]))  # istanbul: 1.01, the input kept
    assert choice.keep_input_lights(torch.tensor([100.0, 115.0]))  # exactly the margin: still kept
    assert not choice.keep_input_lights(torch.tensor([100.0, 115.0]), margin=0.1)
