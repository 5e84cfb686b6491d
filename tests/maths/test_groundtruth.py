"""Ground-truth kernels fitted to their pairs: a kernel stored rotated by 180 degrees is detected and
corrected, a shifted one re-centred, a wrong one warned about; symmetric kernels stay as stored."""

import numpy as np
import pytest
import torch

from kdiff_cli.errors import KdiffWarning
from kdiff_cli.items import Item
from kdiff_cli.maths import groundtruth, ops


def _kernel(size=11):
    """An asymmetric kernel: an L-shaped stroke with a heavy end, centred on (size // 2, size // 2)."""
    k = np.zeros((size, size))
    c = size // 2
    k[c, c - 3 : c + 3] = 1.0
    k[c - 3 : c, c + 2] = 0.5
    k[c, c - 3] = 3.0
    return k / k.sum()


def _pair(shapes_scene, k, sigma=0.005, seed=0):
    """A 96 x 96 scene of rectangles and disks ``x`` and ``y = k * x + noise`` (H, W, 1), float32."""
    rng = np.random.default_rng(seed)
    x = shapes_scene(rng, 96)
    y = ops.conv2d(x, torch.from_numpy(k)[None, None])[0].numpy().transpose(1, 2, 0)
    y = y + sigma * rng.standard_normal(y.shape)
    return x[0].numpy().transpose(1, 2, 0).astype(np.float32), np.clip(y, 0, 1).astype(np.float32)


def test_kernel_as_stored_is_kept(shapes_scene):
    k = _kernel()
    x, y = _pair(shapes_scene, k)
    fit = groundtruth.fit_kernel(x, y, k)
    assert not fit.corrected and fit.shift == (0, 0) and np.array_equal(fit.k, k)
    assert fit.explained and fit.residual < 0.05 and fit.residual == fit.residual_as_stored
    assert 0.003 < fit.noise < 0.008


def test_kernel_stored_rotated_is_detected_and_corrected(shapes_scene):
    k = _kernel()
    x, y = _pair(shapes_scene, k)
    fit = groundtruth.fit_kernel(x, y, groundtruth.rotate180(k))
    assert fit.rotated and fit.shift == (0, 0) and fit.corrected
    assert np.allclose(fit.k, k)
    assert fit.explained and fit.residual < 0.05 < fit.residual_as_stored
    assert fit.record() == {
        "corrected": True, "rotated": True, "shift": [0, 0], "residual": round(fit.residual, 6),
        "residual_as_stored": round(fit.residual_as_stored, 6), "noise": round(fit.noise, 6), "explained": True,
    }


def test_even_kernel_stored_rotated_is_corrected(shapes_scene):
    k = _kernel(10)  # even: no centre pixel is its own image under the rotation
    x, y = _pair(shapes_scene, k, sigma=0.0)
    fit = groundtruth.fit_kernel(x, y, groundtruth.rotate180(k))
    assert fit.rotated and fit.shift == (0, 0)
    assert np.allclose(fit.k, k) and fit.residual == pytest.approx(0.0, abs=1e-6)
    # rotated about its centre pixel (5, 5) instead of the canvas centre: one pixel more to move
    about_centre = np.roll(groundtruth.rotate180(k), (1, 1), axis=(0, 1))
    fit = groundtruth.fit_kernel(x, y, about_centre)
    assert fit.rotated and fit.shift == (1, 1) and np.allclose(fit.k, k)


def test_shifted_kernel_is_recentred(shapes_scene):
    k = _kernel()
    x, y = _pair(shapes_scene, k)
    fit = groundtruth.fit_kernel(x, y, groundtruth.shift_kernel(k, 2, -1))  # stored 2 px low, 1 px left
    assert not fit.rotated and fit.shift == (-2, 1) and fit.corrected
    assert fit.k.shape == k.shape and np.allclose(fit.k, k)
    # a pair that sits 4 px off its kernel: the kernel moves with it; its mass would leave the
    # 11 x 11 canvas, so the canvas grows by 2 x 4 (the centre convention kept, nothing cut)
    y4 = np.roll(y, (0, 4), axis=(0, 1))
    fit = groundtruth.fit_kernel(x, y4, k)
    assert fit.shift == (0, 4) and fit.k.shape == (19, 19)
    assert np.allclose(fit.k, np.roll(np.pad(k, 4), 4, axis=1)) and fit.explained


def test_symmetric_kernel_is_not_rotated(shapes_scene):
    k = np.zeros((9, 9))
    k[4, 1:8] = 1
    k /= k.sum()
    x, y = _pair(shapes_scene, k)
    fit = groundtruth.fit_kernel(x, y, k)
    assert not fit.corrected


def test_wrong_kernel_warns_and_item_records_the_fit(shapes_scene):
    k = _kernel()
    x, y = _pair(shapes_scene, k)
    wrong = k.T.copy()  # another motion: neither orientation explains y
    fit = groundtruth.fit_kernel(x, y, wrong)
    assert fit.explained is False and fit.residual > groundtruth.FIT_THRESHOLD
    item = Item("im1_kernel1", x=x, y=y, k=wrong)
    with pytest.warns(KdiffWarning, match=r"im1_kernel1: neither orientation of the kernel explains the pair .*wrong kernel or spatially varying blur"):
        groundtruth.check_item(item)
    assert item.meta["kernel_fit"]["explained"] is False
    right = Item("im1_kernel2", x=x, y=y, k=groundtruth.rotate180(k))
    groundtruth.check_item(right)
    assert right.meta["kernel_fit"]["rotated"] is True and np.allclose(right.k, k)


def test_spatially_varying_blur_warns(shapes_scene):
    k = _kernel()
    x, y1 = _pair(shapes_scene, k)
    _, y2 = _pair(shapes_scene, k.T.copy())
    y = y1.copy()
    y[:, 48:] = y2[:, 48:]  # the right half blurred by another kernel
    assert groundtruth.fit_kernel(x, y, k).explained is False


def test_image_too_small_to_check():
    k = _kernel()
    x = np.random.default_rng(0).random((20, 24, 3))
    fit = groundtruth.fit_kernel(x, x, k)
    assert fit.residual is None and fit.explained is None and not fit.corrected and np.allclose(fit.k, k)
