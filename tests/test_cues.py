"""The gradient-autocorrelation cue, the autocorr kernel prior, the device-resident batches,
the training time budget and fast FFT lengths."""

import numpy as np
import pytest
import torch

from kdiff_cli.maths import cues, ops
from kdiff_cli.apps.train import device_data, loop as train
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.unet import KernelUNet, build_unet


def _noise_image(seed=0, size=128):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _line_kernel(size=32, length=13, horizontal=True):
    k = torch.zeros(1, 1, size, size)
    c = size // 2
    if horizontal:
        k[..., c, c - length // 2 : c + length // 2 + 1] = 1
    else:
        k[..., c - length // 2 : c + length // 2 + 1, c] = 1
    return k / k.sum()


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


def test_cue_follows_the_blur_direction_and_not_its_sign():
    """A horizontal motion blur spreads the cue along the horizontal lags, a vertical one along the
    vertical lags; k and k rotated by 180 degrees give the same cue (the phase is lost)."""
    x = _noise_image(2, 160)
    kh, kv = _line_kernel(horizontal=True), _line_kernel(horizontal=False)
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


def _tiny_autocorr(**kw):
    torch.manual_seed(0)
    return KernelUNet(kernel_size=16, condition="autocorr", model_channels=8, channel_mult=(1, 2),
                      image_model_channels=8, image_channel_mult=(1, 2), image_res_blocks=(0, 1),
                      attention_resolutions=(8,), norm_groups=4, **kw)


def test_autocorr_prior_takes_any_image_size_and_depends_on_y():
    m = _tiny_autocorr()
    k = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 900])
    for H, W in ((40, 40), (37, 53)):  # no stride constraint: the cue lives on the kernel canvas
        assert m(k, torch.rand(2, 3, H, W), t).shape == (2, 1, 16, 16)
    for p in m.parameters():  # zero-initialised output layers hide the dependence; wake them
        torch.nn.init.normal_(p, std=0.05)
    y1, y2 = _noise_image(3, 48), ops.conv2d(_noise_image(3, 48), _line_kernel(16, 9))
    assert not torch.allclose(m(k[:1], y1, t[:1]), m(k[:1], y2, t[:1]))
    # the features of encode_image give the same output as y itself
    assert torch.allclose(m(k[:1], y2, t[:1]), m(k[:1], None, t[:1], image_features=m.encode_image(y2)))


def test_condition_round_trips_through_the_config_and_is_checked():
    m = _tiny_autocorr()
    assert m.config["condition"] == "autocorr"
    assert build_unet(m.config).config == m.config
    with pytest.raises(KdiffError, match="unknown condition"):
        KernelUNet(kernel_size=16, condition="spectrum")
    # configs written before the option existed load as the image-conditioned network
    old = {k: v for k, v in m.config.items() if k != "condition"}
    assert build_unet(old).condition == "image"


def _bank(n=12, size=16, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.random((n, size, size)).astype(np.float32)
    return b / b.sum(axis=(1, 2), keepdims=True)


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), rng.integers(0, 256, (90, 60, 3), dtype=np.uint8)]


def test_device_crops_are_deterministic_per_seed_and_well_formed():
    src = device_data.DeviceCrops(_images(), _bank(), 48, 0.0, 0.02, "cpu")
    a = src.sample(5, None, torch.Generator().manual_seed(7))
    b = src.sample(5, None, torch.Generator().manual_seed(7))
    c = src.sample(5, None, torch.Generator().manual_seed(8))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["x"], c["x"])
    assert a["x"].shape == (5, 3, 48, 48) and a["k"].shape == (5, 1, 16, 16) and a["y"].shape == (5, 3, 48, 48)
    assert torch.allclose(a["k"].sum(dim=(-2, -1)), torch.ones(5, 1))
    assert float(a["x"].min()) >= 0 and float(a["x"].max()) <= 1
    # y is the blur of x plus noise of the drawn level
    noise = a["y"] - ops.conv2d(a["x"], a["k"])
    assert torch.allclose(noise.std(dim=(1, 2, 3)), a["sigma"], rtol=0.15, atol=1e-3)


def test_device_crops_kernels_are_bank_kernels_up_to_rotation_and_reflection():
    bank = _bank(4)
    src = device_data.DeviceCrops(_images(), bank, 32, 0.0, 0.0, "cpu")
    k = src.sample(16, None, torch.Generator().manual_seed(0))["k"][:, 0].numpy()
    variants = [v for b in bank for v in (b, b[::-1], b[:, ::-1], b[::-1, ::-1], b.T, b.T[::-1], b.T[:, ::-1], b.T[::-1, ::-1])]
    for ki in k:
        assert min(np.abs(ki - v).max() for v in variants) < 1e-7


def test_kernel_bank_follows_the_mixture_and_refuses_huge_banks():
    d = {"bank": 40, "kernel_size": 16, "generators": ["linear", "gaussian"], "generator_weights": [3, 1],
         "generator_params": {}, "kernels_file": ""}
    bank = device_data.kernel_bank(d, seed=0)
    assert bank.shape == (40, 16, 16) and np.allclose(bank.sum(axis=(1, 2)), 1, atol=1e-5)
    assert np.array_equal(bank, device_data.kernel_bank(d, seed=0))
    with pytest.raises(KdiffError, match="lower data.bank"):
        device_data.kernel_bank({**d, "bank": 10**9}, seed=0)


def test_budget_steps_fits_the_schedule_to_the_time_left(monkeypatch):
    monkeypatch.setattr(train.time, "perf_counter", lambda: 100.0)
    # 50 steps in 10 s -> 5 it/s; 60 s of a 160 s budget left -> 300 more steps
    assert train.budget_steps(60, 10_000, 10.0, session_start=0.0, budget_s=160.0) == 360
    assert train.budget_steps(60, 200, 10.0, session_start=0.0, budget_s=160.0) == 200  # never above train.steps
    assert train.budget_steps(60, 10_000, 10.0, session_start=0.0, budget_s=50.0) == 60  # budget spent


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


def test_autocorr_prior_learns_to_follow_y():
    """Trained for a few hundred steps on two blurs (a horizontal and a vertical line), the tiny
    autocorr prior denoises a kernel far better given the y that kernel blurred than given the
    other blur's y: its prediction depends on y (the conditional prior conditions)."""
    from kdiff_cli.maths import diffusion
    from kdiff_cli.maths.schedule import NoiseSchedule

    m = _tiny_autocorr()
    schedule = NoiseSchedule()
    kh, kv = _line_kernel(16, 9, True), _line_kernel(16, 9, False)
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
