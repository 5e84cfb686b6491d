"""The conditional U-Net epsilon_theta(k_t, y, t): shapes, conditioning, time embedding, config."""

from __future__ import annotations

import pytest
import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.unet import KernelUNet, build_unet, count_parameters, resize_features, timestep_embedding

TINY = dict(
    model_channels=8,
    channel_mult=(1, 2, 2),
    num_res_blocks=1,
    image_model_channels=4,
    image_channel_mult=(1, 2, 2, 4),
    image_res_blocks=(0, 1, 1, 1),
    attention_resolutions=(8,),
    num_heads=2,
    norm_groups=4,
)


def tiny(kernel_size: int = 32, seed: int = 0, **kw) -> KernelUNet:
    """A tiny U-Net with its zero-initialised output layers randomised (so outputs are not all 0)."""
    torch.manual_seed(seed)
    model = KernelUNet(kernel_size=kernel_size, **{**TINY, **kw})
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs(B: int, S: int, P: int, seed: int = 0, C: int = 3):
    g = torch.Generator().manual_seed(seed)
    k_t = torch.randn(B, 1, S, S, generator=g)
    y = 2 * torch.rand(B, C, P, P, generator=g) - 1
    t = torch.randint(0, 1000, (B,), generator=g)
    return k_t, y, t


@pytest.mark.parametrize("S", [32, 64])
@pytest.mark.parametrize("P", [128, 256])
def test_output_is_kernel_sized_for_any_image_size(S, P):
    model = tiny(S)
    k_t, y, t = inputs(2, S, P)
    with torch.no_grad():
        eps = model(k_t, y, t)
    assert eps.shape == (2, 1, S, S)
    assert torch.isfinite(eps).all()
    assert eps.abs().sum() > 0


@pytest.mark.parametrize("H, W", [(64, 128), (24, 256), (8, 8)])
def test_non_square_and_small_images(H, W):
    model = tiny(32)
    k_t, _, t = inputs(2, 32, 8)
    y = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(k_t, y, t).shape == (2, 1, 32, 32)


def test_resize_features():
    h = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(resize_features(h, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    up = resize_features(h, (8, 8))
    assert torch.equal(up[..., ::2, ::2], h) and torch.equal(up[..., 1::2, 1::2], h)
    assert resize_features(h, (4, 4)) is h
    assert resize_features(h, (2, 8)).shape == (1, 1, 2, 8)


def test_fresh_model_predicts_zero():
    """The output convolution is zero-initialised (ADM): the untrained prediction is epsilon = 0."""
    model = KernelUNet(kernel_size=32, **TINY)
    k_t, y, t = inputs(2, 32, 64)
    assert torch.equal(model(k_t, y, t), torch.zeros(2, 1, 32, 32))


def test_output_depends_on_kernel_image_and_time():
    model = tiny(32)
    k_t, y, t = inputs(2, 32, 64)
    with torch.no_grad():
        base = model(k_t, y, t)
        assert not torch.allclose(base, model(k_t + 0.5, y, t))
        assert not torch.allclose(base, model(k_t, y.flip(-1), t))
        assert not torch.allclose(base, model(k_t, y, (t + 300) % 1000))


def test_batch_items_are_independent():
    """Each item's prediction uses only its own k_t, y and t (GroupNorm, not BatchNorm)."""
    model = tiny(32)
    k_t, y, t = inputs(3, 32, 64)
    with torch.no_grad():
        full = model(k_t, y, t)
        one = model(k_t[1:2], y[1:2], t[1:2])
    torch.testing.assert_close(full[1:2], one, atol=1e-5, rtol=1e-5)


def test_cached_image_features_match_forward():
    """encode_image(y) once, then reuse it at every step: same result as passing y."""
    model = tiny(32)
    k_t, y, t = inputs(2, 32, 64)
    with torch.no_grad():
        features = model.encode_image(y)
        torch.testing.assert_close(model(k_t, None, t, image_features=features), model(k_t, y, t))
        # one image for a batch of kernels (several samples of one y) broadcasts
        many = model(k_t, None, t, image_features=features[:1])
        torch.testing.assert_close(many[1:], model(k_t[1:], y[:1], t[1:]), atol=1e-5, rtol=1e-5)


def test_scalar_timestep_broadcasts():
    model = tiny(32)
    k_t, y, _ = inputs(2, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(k_t, y, torch.tensor(7)), model(k_t, y, torch.tensor([7, 7])))


def test_same_seed_same_model():
    k_t, y, t = inputs(2, 32, 64)
    with torch.no_grad():
        assert torch.equal(tiny(32, seed=3)(k_t, y, t), tiny(32, seed=3)(k_t, y, t))
        assert not torch.equal(tiny(32, seed=3)(k_t, y, t), tiny(32, seed=4)(k_t, y, t))


def test_without_global_conditioning():
    with_global = tiny(32)
    model = tiny(32, image_global=False)
    assert count_parameters(model) < count_parameters(with_global)
    k_t, y, t = inputs(2, 32, 128)
    with torch.no_grad():
        assert model(k_t, y, t).shape == (2, 1, 32, 32)
        assert not torch.allclose(model(k_t, y, t), model(k_t, y.flip(-1), t))


def test_gray_image_model():
    model = tiny(32, image_channels=1)
    k_t, y, t = inputs(2, 32, 64, C=1)
    with torch.no_grad():
        assert model(k_t, y, t).shape == (2, 1, 32, 32)


def test_gradients_reach_both_encoders():
    model = tiny(32).train()
    k_t, y, t = inputs(2, 32, 64)
    model(k_t, y, t).pow(2).mean().backward()
    assert model.image_stem.weight.grad.abs().sum() > 0
    assert model.kernel_stem.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- time embedding


def test_time_embedding_golden_and_distinct():
    t = torch.arange(1000)
    emb = timestep_embedding(t, 32)
    assert emb.shape == (1000, 32)
    # t = 0: cos(0) = 1 in the first half, sin(0) = 0 in the second
    assert torch.equal(emb[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    # lowest frequency w_0 = 1: emb[t, 0] = cos(t), emb[t, 16] = sin(t)
    torch.testing.assert_close(emb[:, 0], torch.cos(t.float()))
    torch.testing.assert_close(emb[:, 16], torch.sin(t.float()))
    dist = torch.cdist(emb, emb) + torch.eye(1000) * 1e9
    assert dist.min() > 1e-2  # every timestep has its own embedding
    assert timestep_embedding(t[:4], 33).shape == (4, 33)


# --------------------------------------------------------------------------- config and errors


def test_config_round_trip_rebuilds_the_same_architecture():
    model = KernelUNet(kernel_size=32, **TINY)
    again = build_unet(model.config)
    assert again.config == model.config
    a = {k: v.shape for k, v in model.state_dict().items()}
    b = {k: v.shape for k, v in again.state_dict().items()}
    assert a == b
    again.load_state_dict(model.state_dict())


def test_default_model_is_cpu_sized():
    """The default (CPU) U-Net is ~2M parameters: ~5,000+ it/h at batch 16 on two cores."""
    n = count_parameters(KernelUNet())
    assert 1_000_000 < n < 2_500_000


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: build_unet({"widht": 3}), "unknown U-Net option"),
        (lambda: KernelUNet(kernel_size=30, channel_mult=(1, 2, 2)), "not a multiple of the kernel stride"),
        (lambda: KernelUNet(image_res_blocks=(1, 1)), "one entry per image level"),
    ],
)
def test_bad_construction(build, message):
    with pytest.raises(KdiffError, match=message):
        build()


def test_bad_inputs():
    model = tiny(32)
    k_t, y, t = inputs(2, 32, 64)
    with pytest.raises(KdiffError, match="multiple of the image-encoder stride"):
        model(k_t, y[..., :60, :60], t)
    with pytest.raises(KdiffError, match="noisy kernels"):
        model(k_t[..., :16, :16], y, t)
    with pytest.raises(KdiffError, match="expected images"):
        model(k_t, y[:, :1], t)
    with pytest.raises(KdiffError, match="does not match kernel batch"):
        model(k_t, y.repeat(2, 1, 1, 1)[:3], t)
    with pytest.raises(KdiffError, match="pass y or image_features"):
        model(k_t, None, t)
