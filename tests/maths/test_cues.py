"""The gradient-autocorrelation cue, the autocorr kernel prior and fast FFT lengths (the
device-resident training batches: apps/test_device_data.py)."""

import pytest
import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import cues, ops
from kdiff_cli.maths.unet import KernelUNet, build_unet


def _noise_image(seed=0, size=128):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_cue_shape_normalisation_and_lag_zero():
    cue = cues.gradient_autocorrelation(_noise_image(), 32)
    assert cue.shape == (1, cues.CUE_CHANNELS, 32, 32)
    assert torch.allclose(cue.abs().amax(dim=(-2, -1)), torch.ones(1, 4))
    # for an unblurred image the autocorrelation peaks at lag 0, index size // 2 (the kernel centre)
    for c in range(4):
        assert divmod(int(cue[0, c].argmax()), 32) == (16, 16)


def test_cue_is_invariant_to_contrast_offset_and_range():
    y = _noise_image(1)
    a = cues.gradient_autocorrelation(y, 32)
    b = cues.gradient_autocorrelation(2 * y - 1, 32)
    c = cues.gradient_autocorrelation(0.3 * y + 0.5, 32)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_cue_follows_the_blur_direction_and_not_its_sign(line_kernel):
    """A horizontal motion blur spreads the cue along the horizontal lags, a vertical one along the
    vertical lags; k and k rotated by 180 degrees give the same cue (the phase is lost)."""
    x = _noise_image(2, 160)
    kh, kv = line_kernel(horizontal=True), line_kernel(horizontal=False)
    ch = cues.gradient_autocorrelation(ops.conv2d(x, kh), 32)[0, 1]  # vertical differences: no cancellation
    cv = cues.gradient_autocorrelation(ops.conv2d(x, kv), 32)[0, 0]
    assert ch[16, 16 + 6] > 0.3 and ch[16 + 6, 16] < 0.1
    assert cv[16 + 6, 16] > 0.3 and cv[16, 16 + 6] < 0.1
    k = torch.zeros(1, 1, 32, 32)
    k[..., 10, 12], k[..., 16, 16], k[..., 20, 25] = 0.2, 0.5, 0.3
    a = cues.gradient_autocorrelation(ops.conv2d(x, k, "circular"), 32)
    b = cues.gradient_autocorrelation(ops.conv2d(x, k.flip(-2, -1), "circular"), 32)
    c = cues.gradient_autocorrelation(ops.conv2d(x, k.transpose(-1, -2), "circular"), 32)
    # equal up to the window's edge effects; a transposed kernel (another blur) is far apart
    assert float((a - b).abs().max()) < 0.03 < 0.2 < float((a - c).abs().max())


def test_cue_refuses_tiny_or_malformed_images():
    with pytest.raises(KdiffError, match="too small"):
        cues.gradient_autocorrelation(torch.rand(1, 1, 8, 40), 16)
    with pytest.raises(KdiffError, match="expected images"):
        cues.gradient_autocorrelation(torch.rand(3, 40, 40), 16)


@pytest.fixture
def tiny_autocorr(tiny_unet):
    """Function: the tiny U-Net for 16 x 16 kernels with the autocorrelation condition (and attention at 8)."""
    return lambda: tiny_unet(16, condition="autocorr", attention_resolutions=(8,), num_heads=4)


def test_autocorr_prior_takes_any_image_size_and_depends_on_y(tiny_autocorr, line_kernel):
    m = tiny_autocorr()
    k = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 900])
    for H, W in ((40, 40), (37, 53)):  # no stride constraint: the cue lives on the kernel canvas
        assert m(k, torch.rand(2, 3, H, W), t).shape == (2, 1, 16, 16)
    for p in m.parameters():  # zero-initialised output layers hide the dependence; wake them
        torch.nn.init.normal_(p, std=0.05)
    y1, y2 = _noise_image(3, 48), ops.conv2d(_noise_image(3, 48), line_kernel(16, 9))
    assert not torch.allclose(m(k[:1], y1, t[:1]), m(k[:1], y2, t[:1]))
    # the features of encode_image give the same output as y itself
    assert torch.allclose(m(k[:1], y2, t[:1]), m(k[:1], None, t[:1], image_features=m.encode_image(y2)))


def test_condition_round_trips_through_the_config_and_is_checked(tiny_autocorr):
    m = tiny_autocorr()
    assert m.config["condition"] == "autocorr"
    assert build_unet(m.config).config == m.config
    with pytest.raises(KdiffError, match="unknown condition"):
        KernelUNet(kernel_size=16, condition="spectrum")
    # configs written before the option existed load as the image-conditioned network
    old = {k: v for k, v in m.config.items() if k != "condition"}
    assert build_unet(old).condition == "image"


@pytest.mark.parametrize("n, m", [(1, 1), (7, 8), (11, 12), (319, 320), (383, 384), (1000, 1000)])
def test_fast_fft_len(n, m):
    assert ops.fast_fft_len(n) == m


def test_fft_blur_with_padded_length_equals_direct_convolution():
    x = torch.rand(2, 3, 45, 51, generator=torch.Generator().manual_seed(0))
    k = torch.rand(2, 1, 19, 19, generator=torch.Generator().manual_seed(1))
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    for boundary in ("symmetric", "circular", "zero"):
        a = ops.conv2d(x, k, boundary, method="fft")
        b = ops.conv2d(x, k, boundary, method="direct")
        assert torch.allclose(a, b, atol=1e-5), boundary


@pytest.mark.slow
def test_autocorr_prior_learns_to_follow_y(tiny_autocorr, line_kernel):
    """Trained for a few hundred steps on two blurs (a horizontal and a vertical line), the tiny
    autocorr prior denoises a kernel far better given the y that kernel blurred than given the
    other blur's y: its prediction depends on y (the conditional prior conditions)."""
    from kdiff_cli.maths import diffusion
    from kdiff_cli.maths.schedule import NoiseSchedule

    m = tiny_autocorr()
    schedule = NoiseSchedule()
    kh, kv = line_kernel(16, 9, True), line_kernel(16, 9, False)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        x = torch.rand(8, 3, 48, 48, generator=g)
        k = torch.cat([kh.expand(4, -1, -1, -1), kv.expand(4, -1, -1, -1)])
        y = ops.add_noise(ops.conv2d(x, k), 0.01, g)
        loss = diffusion.training_loss(m, diffusion.to_diffusion(k), diffusion.image_to_condition(y), schedule.alpha_bar, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    x = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(9))
    k = torch.cat([kh.expand(4, -1, -1, -1), kv.expand(4, -1, -1, -1)])
    y = ops.conv2d(x, k)

    def loss_with(cond):  # the denoising loss at fixed (t, epsilon) given a condition
        with torch.no_grad():
            return float(diffusion.training_loss(m, diffusion.to_diffusion(k), diffusion.image_to_condition(cond),
                                                 schedule.alpha_bar, torch.Generator().manual_seed(5)))

    matched, swapped = loss_with(y), loss_with(y.roll(4, dims=0))  # swapped: each k given the other blur's y
    assert matched < 0.7 * swapped, (matched, swapped)
