"""The kernel bank searched by y's blur cue (kdiff_cli.maths.lookup) and the `lookup` sampler."""

import numpy as np
import pytest
import torch

from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import cues, lookup, metrics, ops
from kdiff_cli.maths.schedule import NoiseSchedule
from kdiff_cli.maths.unet import KernelUNet

S = 16


def _bank(count=40, seed=3) -> lookup.KernelBank:
    return lookup.make_bank(S, count=count, seed=seed, generators=(("borodenko", 0.7), ("linear", 0.3)))


def _blurred(k: torch.Tensor, seed=0, side=96) -> torch.Tensor:
    """A sharp image with white gradients (a random walk in x and y), blurred by k (1, 1, S, S)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(side)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    spectrum = torch.fft.fft2(torch.randn(side, side, generator=g)) / radius.clamp(min=1.0 / side)
    x = torch.fft.ifft2(spectrum).real[None, None]  # a 1/f image, as natural images are
    x = (x - x.min()) / (x.max() - x.min())
    return ops.conv2d(x.expand(-1, 3, -1, -1).contiguous(), k)


def test_rot180_keeps_the_centre_and_is_an_involution():
    k = torch.zeros(S, S)
    k[S // 2, S // 2] = 1
    assert torch.equal(lookup.rot180(k), k)
    r = torch.rand(5, S, S)
    assert torch.equal(lookup.rot180(lookup.rot180(r)), r)
    odd = torch.rand(7, 7)
    assert torch.equal(lookup.rot180(odd), odd.flip(-2, -1))


def test_kernel_cue_is_phase_free_and_matches_a_wide_fft():
    k = torch.from_numpy(plugins.get("generator", "borodenko").sample(np.random.default_rng(0), 3, S)).float()[:, None]
    k[..., 0, :] = 0  # an even canvas has no rotated place for row and column 0
    k[..., :, 0] = 0
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    a = cues.kernel_autocorrelation(k, S)
    assert a.shape == (3, cues.CUE_CHANNELS, S, S)
    torch.testing.assert_close(cues.kernel_autocorrelation(lookup.rot180(k), S), a, atol=1e-5, rtol=0)
    s = (4 * S, 4 * S)  # no lag can wrap around at this period
    acf = torch.fft.irfft2(torch.fft.rfft2(k, s=s).abs().square(), s=s)
    torch.testing.assert_close(cues._cue_maps(acf.expand(-1, 2, -1, -1), S), a, atol=1e-5, rtol=0)
    with pytest.raises(KdiffError, match="expected kernels"):
        cues.kernel_autocorrelation(k[:, 0], S)


def test_each_bank_kernel_is_found_from_its_own_cue():
    bank = _bank()
    m = bank.search(cues.kernel_autocorrelation(bank.kernels[:, None], S), top=1)
    same = [torch.equal(m.k[i, 0], bank.kernels[i]) or bool(torch.allclose(m.score[i, 0], torch.tensor(1.0), atol=1e-3))
            for i in range(len(bank))]
    assert all(same)
    assert m.score.shape == (len(bank), 1) and bool((m.score <= 1 + 1e-3).all())


def test_the_nearest_kernel_of_a_blurred_image_is_its_kernel():
    bank = _bank()
    k = bank.kernels[7][None, None]
    y = _blurred(k)
    got = lookup.candidates(y, S, bank)[0, 0]
    best = max(metrics.mnc(got.double().numpy(), k[0, 0].double().numpy()),
               metrics.mnc(lookup.rot180(got).double().numpy(), k[0, 0].double().numpy()))
    assert best > 0.9


def test_copies_of_one_image_start_from_successive_candidates():
    bank = _bank()
    a, b = _blurred(bank.kernels[7][None, None]), _blurred(bank.kernels[9][None, None], seed=1)
    c = lookup.candidates(torch.cat([a, a, a, b]), S, bank)[:, 0]
    m = bank.search(cues.gradient_autocorrelation(torch.cat([a, b]), S), top=2)
    assert torch.equal(c[0], m.k[0, 0]) and torch.equal(c[1], lookup.rot180(m.k[0, 0]))
    assert torch.equal(c[2], m.k[0, 1]) and torch.equal(c[3], m.k[1, 0])


def test_bank_errors():
    with pytest.raises(KdiffError, match="size >= 3"):
        lookup.make_bank(2, count=5)
    with pytest.raises(KdiffError, match="no kernel generator"):
        lookup.make_bank(S, count=5, generators=(("nope", 1.0),))
    with pytest.raises(KdiffError, match="does not match"):
        _bank().search(torch.zeros(1, 4, S + 2, S + 2))


def _tiny_model():
    torch.manual_seed(0)
    return KernelUNet(kernel_size=S, condition="autocorr", model_channels=8, channel_mult=(1, 2),
                      image_model_channels=8, image_channel_mult=(1, 2), image_res_blocks=(0, 1),
                      attention_resolutions=(8,), norm_groups=4).eval()


def test_lookup_sampler_is_seeded_and_a_small_strength_keeps_the_bank_kernel():
    sampler = plugins.get("sampler", "lookup")
    bank, model = _bank(), _tiny_model()
    y = _blurred(bank.kernels[7][None, None])
    start = lookup.candidates(y, S, bank, model, NoiseSchedule())[0, 0].double().numpy()  # the default rank="prior"

    def run(strength, seed=0, steps=4):
        with torch.no_grad():
            return sampler.sample(model, NoiseSchedule(), y, steps=steps, strength=strength, bank=bank,
                                  generator=torch.Generator().manual_seed(seed)).k

    assert torch.equal(run(0.3), run(0.3))
    assert not torch.equal(run(0.3, seed=0), run(0.3, seed=1))
    near = run(0.01, steps=1)[0, 0].double().numpy()
    assert metrics.mnc(near, start) > 0.95
    sched = NoiseSchedule()
    with torch.no_grad():
        sampler.sample(model, sched, y, steps=5, strength=0.3, bank=bank)
    ts = sched.timesteps.tolist()
    assert len(ts) == 5 and ts[0] <= round(0.3 * (sched.T - 1)) and ts[-1] == 0
    with pytest.raises(KdiffError, match="strength"):
        run(0.0)
    with pytest.raises(KdiffError, match="rank"):
        sampler.sample(model, NoiseSchedule(), y, steps=2, bank=bank, rank="best")


def test_prior_rank_is_seeded_equivariant_and_orders_the_candidates():
    bank, model = _bank(), _tiny_model()
    y = _blurred(bank.kernels[7][None, None])
    pool = bank.search(cues.gradient_autocorrelation(y, S), top=lookup.RANK_POOL).k[0][:, None]
    loss = lookup.prior_rank(model, NoiseSchedule(), y, pool)
    assert loss.shape == (lookup.RANK_POOL,) and bool((loss > 0).all())
    assert torch.equal(loss, lookup.prior_rank(model, NoiseSchedule(), y, pool))  # seeded
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lookup.prior_rank(model, NoiseSchedule(), y, pool[perm]), loss[perm], atol=1e-5)
    assert not torch.equal(loss, lookup.prior_rank(model, NoiseSchedule(), y, pool, seed=1))
    # the first start is the pool's lowest loss, the second its rotation, the third the second lowest
    c = lookup.candidates(torch.cat([y, y, y]), S, bank, model, NoiseSchedule())[:, 0]
    order = torch.argsort(loss, stable=True)
    assert torch.equal(c[0], pool[order[0], 0]) and torch.equal(c[1], lookup.rot180(pool[order[0], 0]))
    assert torch.equal(c[2], pool[order[1], 0])


def test_the_default_bank_is_cached_and_reloads_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("KDIFF_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(lookup, "BANK_COUNT", 30)
    lookup.default_bank.cache_clear()
    try:
        first = lookup.default_bank(S)
        (cached,) = tmp_path.glob("kernel-bank-*.safetensors")
        lookup.default_bank.cache_clear()
        again = lookup.default_bank(S)
        assert again is not first
        assert torch.equal(again.kernels, first.kernels) and torch.equal(again.features, first.features)
        cached.write_bytes(b"not a safetensors file")  # a broken cache is rebuilt, not an error
        lookup.default_bank.cache_clear()
        assert torch.equal(lookup.default_bank(S).kernels, first.kernels)
    finally:
        lookup.default_bank.cache_clear()
