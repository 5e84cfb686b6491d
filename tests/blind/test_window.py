"""kdiff_cli.blind.window: the textured window the kernel is estimated on, kernel upscaling after a
downscaled pass, and the border-mass check."""

import pytest
import torch

from kdiff_cli.blind.window import border_mass, select_window, upscale_kernel


def test_select_window_finds_texture(smooth_image):
    y = torch.zeros(1, 3, 300, 400)
    y[..., 100:260, 250:400] = smooth_image(160, 150)
    x0, y0, w, h = select_window(y, 128)
    assert (w, h) == (128, 128)
    assert x0 >= 240 and 90 <= y0 <= 140


def test_small_image_window_is_whole_image_multiple_of_16():
    x0, y0, w, h = select_window(torch.rand(1, 1, 100, 90), 256)
    assert (w, h) == (80, 96) and (x0, y0) == (5, 2)


def test_kernel_upscale_and_border_mass(line_kernel):
    k = line_kernel(16, 7)
    up = upscale_kernel(k, 2)
    assert up.shape == (1, 1, 32, 32) and up.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert border_mass(k) == pytest.approx(0.0)
    edge = torch.zeros(1, 1, 16, 16)
    edge[0, 0, 0, :] = 1
    assert border_mass(edge / edge.sum()) == pytest.approx(1.0)
