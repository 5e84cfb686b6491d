import pytest
import torch

from kdiff_cli.maths import ops
from kdiff_cli.errors import KdiffError


def _data(B=2, C=3, H=20, W=17, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, C, H, W, generator=g, dtype=torch.float64)
    k = torch.rand(B, 1, h, w, generator=g, dtype=torch.float64)
    return x, k


@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
@pytest.mark.parametrize("hw", [(6, 5), (7, 7), (4, 9)])
def test_fft_equals_direct(boundary, hw):
    x, k = _data(h=hw[0], w=hw[1])
    assert torch.allclose(ops.conv2d(x, k, boundary, "direct"), ops.conv2d(x, k, boundary, "fft"), atol=1e-12)


@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
def test_adjoint(boundary):
    x, k = _data()
    r = torch.rand(2, 3, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lhs = (ops.conv2d(x, k, boundary) * r).sum()
    rhs = (x * ops.conv2d_adjoint(r, k, boundary)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
def test_adjoint_kernel_larger_than_image(boundary):
    x, k = _data(H=5, W=6, h=9, w=8)
    r = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    lhs = (ops.conv2d(x, k, boundary) * r).sum()
    assert torch.allclose(lhs, (x * ops.conv2d_adjoint(r, k, boundary)).sum(), rtol=1e-12)


def test_delta_is_identity_and_shift_direction():
    x, _ = _data()
    for h in (5, 6):
        d = torch.zeros(1, 1, h, h, dtype=torch.float64)
        d[..., h // 2, h // 2] = 1
        assert torch.equal(ops.conv2d(x, d, "zero", "direct"), x)
    # a delta one pixel right of centre shifts the image right (true convolution, not correlation)
    d = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    d[0, 0, 1, 2] = 1
    y = ops.conv2d(x, d, "zero")
    assert torch.allclose(y[..., 1:], x[..., :-1])


def test_symmetric_boundary_golden():
    x = torch.arange(4, dtype=torch.float64).reshape(1, 1, 1, 4)
    xp = ops.pad(x, (0, 0, 3, 3), "symmetric")
    assert xp.flatten().tolist() == [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]
    xr = ops.pad(x, (0, 0, 2, 2), "reflect")
    assert xr.flatten().tolist() == [2, 1, 0, 1, 2, 3, 2, 1]
    xc = ops.pad(x, (0, 0, 2, 2), "circular")
    assert xc.flatten().tolist() == [2, 3, 0, 1, 2, 3, 0, 1]


def test_box_blur_golden_sum():
    x = torch.arange(64, dtype=torch.float64).reshape(1, 1, 8, 8)
    k = torch.full((1, 1, 3, 3), 1 / 9, dtype=torch.float64)
    y = ops.conv2d(x, k, "symmetric")
    # mean is preserved by symmetric boundary with a sum-1 kernel only up to the border; golden value
    assert y.sum().item() == pytest.approx(2016.0, abs=1e-9)
    assert y[0, 0, 3, 3].item() == pytest.approx(27.0)


def test_gradients_wrt_kernel(device):
    x, k = _data(B=1, C=1, H=8, W=8, h=3, w=3)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda kk: ops.conv2d(x, kk, "symmetric", "fft"), (k,))
    assert torch.autograd.gradcheck(lambda kk: ops.conv2d(x, kk, "symmetric", "direct"), (k,))


def test_batch_broadcast_and_errors():
    x, k = _data()
    y1 = ops.conv2d(x, k[:1])
    y2 = ops.conv2d(x, k[:1].expand(2, -1, -1, -1).contiguous())
    assert torch.allclose(y1, y2)
    with pytest.raises(KdiffError):
        ops.conv2d(x[0], k)
    with pytest.raises(KdiffError):
        ops.conv2d(x, torch.rand(3, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(KdiffError):
        ops.conv2d(x, k, "mirror")


def test_kernel_utilities():
    k = torch.zeros(1, 1, 9, 9)
    k[0, 0, 1, 2] = 2.0
    k[0, 0, 1, 3] = -1.0
    n = ops.normalize_kernel(k)
    assert n.min() >= 0 and n.sum().item() == pytest.approx(1.0)
    c = ops.center_kernel(n)
    assert c[0, 0, 4, 4] == pytest.approx(1.0)
    assert ops.normalize_kernel(torch.zeros(1, 1, 4, 4))[0, 0, 2, 2] == 1
    big = ops.resize_kernel_canvas(c, 15)
    assert big.shape[-1] == 15 and big[0, 0, 7, 7] == 1
    assert torch.equal(ops.resize_kernel_canvas(big, 9), c)


def test_mnc():
    g = torch.Generator().manual_seed(0)
    k = torch.zeros(15, 15)
    k[4:11, 4:11] = torch.rand(7, 7, generator=g)
    assert ops.mnc(ops.shift(k, 2, -3), k).item() == pytest.approx(1.0, abs=1e-9)
    assert ops.mnc(3.0 * k, k).item() == pytest.approx(1.0, abs=1e-9)
    other = torch.zeros(15, 15)
    other[7, 2:13] = 1
    v = ops.mnc(other, k).item()
    assert 0 < v < 0.9
    batch = ops.mnc(torch.stack([k, other])[:, None], torch.stack([k, k])[:, None])
    assert batch.shape == (2,) and batch[0] == pytest.approx(1.0) and batch[1] == pytest.approx(v)


@pytest.mark.parametrize("sa, sb", [((15, 15), (15, 15)), ((9, 21), (15, 15)), ((5, 5), (3, 7))])
def test_mnc_is_the_peak_of_the_direct_cross_correlation(sa, sb):
    # mnc correlates by FFT: the same peak as the direct correlation over every shift, sizes mixed
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 1, *sa, generator=g).double(), torch.rand(2, 1, *sb, generator=g).double()
    a[1] -= 0.5  # signed values too (the peak is still over the correlation, not its magnitude)
    direct = torch.stack([torch.nn.functional.conv2d(a[i : i + 1], b[i : i + 1], padding=(sb[0] - 1, sb[1] - 1)).max()
                          / (a[i].norm() * b[i].norm()) for i in range(2)])
    assert torch.allclose(ops.mnc(a, b), direct, atol=1e-12)


@pytest.mark.parametrize("hw", [(6, 4), (5, 4), (6, 7), (5, 7)])
def test_signal_center_convention_matches_scipy_signal(hw):
    """``from_center_convention(k, "signal")`` turns a kernel written for scipy.signal's 'same'
    convolution (centre (size - 1) // 2) into kdiff's (size // 2): same blur, nothing cut."""
    import numpy as np
    from scipy.ndimage import convolve
    from scipy.signal import convolve2d

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 30, 32, generator=g, dtype=torch.float64)
    k = torch.rand(1, 1, *hw, generator=g, dtype=torch.float64)
    k = k / k.sum()
    ks = ops.from_center_convention(k, "signal")
    assert ks.shape[-2:] == tuple(s + 1 - s % 2 for s in hw) and float(ks.sum()) == pytest.approx(1.0)
    want = convolve2d(x[0, 0].numpy(), k[0, 0].numpy(), mode="same", boundary="symm")
    got = ops.conv2d(x, ks)[0, 0].numpy()
    assert np.allclose(got[8:-8, 8:-8], want[8:-8, 8:-8], atol=1e-12)
    # ndimage (the default) is kdiff's own convention: unchanged, and it matches scipy.ndimage
    assert ops.from_center_convention(k) is k
    nd = convolve(x[0, 0].numpy(), k[0, 0].numpy(), mode="reflect")
    assert np.allclose(ops.conv2d(x, k)[0, 0].numpy()[8:-8, 8:-8], nd[8:-8, 8:-8], atol=1e-12)
    with pytest.raises(KdiffError, match="unknown kernel centre convention"):
        ops.from_center_convention(k, "middle")
