"""Noise schedule, diffusion core (q_sample, eq. 19, DDPM eq. 18, DDIM), kernel map (the kernel-diff
training task: apps/test_kernel_task.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import diffusion
from kdiff_cli.maths.schedule import NoiseSchedule

D = torch.float64


# --------------------------------------------------------------------------- schedule


def test_linear_schedule_golden_values():
    s = NoiseSchedule()
    assert s.T == 1000 and s.beta.dtype == D
    assert s.beta[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert s.beta[-1].item() == pytest.approx(0.02, abs=1e-15)
    torch.testing.assert_close(s.alpha, 1 - s.beta)
    assert s.alpha_bar[0].item() == pytest.approx(1 - 1e-4, abs=1e-15)
    # prod_{t=1}^{1000} (1 - beta_t), linear 1e-4..0.02
    assert s.alpha_bar[-1].item() == pytest.approx(4.0358297653756754e-05, rel=1e-9)
    assert s.alpha_bar[499].item() == pytest.approx(0.07858724288177824, rel=1e-9)
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all())
    assert s.alpha_bar_at(-1).item() == 1.0
    assert s.alpha_bar_at(torch.tensor([0, 999])).tolist() == [s.alpha_bar[0].item(), s.alpha_bar[-1].item()]


def test_set_timesteps_strided():
    s = NoiseSchedule()
    assert s.timesteps.tolist() == list(range(999, -1, -1))  # every step until strided
    ts = s.set_timesteps(25).tolist()
    assert len(ts) == 25 and ts[0] == 999 and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert ts[:3] == [999, 957, 916]
    assert s.pairs()[-1] == (0, -1) and s.pairs()[0] == (999, 957)
    assert s.prev_timestep(957) == 916
    torch.testing.assert_close(s.alpha_bar_prev(torch.tensor([999, 0])), torch.tensor([s.alpha_bar[957].item(), 1.0], dtype=D))
    assert s.set_timesteps(1000).tolist() == list(range(999, -1, -1))
    assert s.set_timesteps(1).tolist() == [999]
    for bad in (0, 1001):
        with pytest.raises(KdiffError, match="sampling steps"):
            s.set_timesteps(bad)
    s.set_timesteps(25)
    with pytest.raises(KdiffError, match="not in the current schedule"):
        s.prev_timestep(501)
    with pytest.raises(KdiffError, match="out of range"):
        s.alpha_bar_at(1000)


def test_schedule_serialises():
    s = NoiseSchedule(num_train_timesteps=200, beta_start=2e-4, beta_end=0.03)
    d = json.loads(json.dumps(s.to_dict()))
    again = NoiseSchedule.from_dict(d)
    assert again.to_dict() == s.to_dict()
    torch.testing.assert_close(again.alpha_bar, s.alpha_bar)
    with pytest.raises(KdiffError, match="unknown schedule option"):
        NoiseSchedule.from_dict({**d, "beta_max": 1})
    with pytest.raises(KdiffError, match="unknown beta schedule"):
        NoiseSchedule(beta_schedule="cosine-ish")
    with pytest.raises(KdiffError, match="beta_start <= beta_end"):
        NoiseSchedule(beta_start=0.1, beta_end=0.01)


def test_sample_timesteps_uniform_and_seeded():
    s = NoiseSchedule()
    a = s.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert torch.equal(a, s.sample_timesteps(20000, torch.Generator().manual_seed(0)))
    assert a.min() >= 0 and a.max() <= 999
    assert abs(a.double().mean().item() - 499.5) < 10


# --------------------------------------------------------------------------- kernel <-> diffusion range


def test_map_round_trip_is_exact(random_kernels):
    k = random_kernels(4, 16)
    k_d = diffusion.to_diffusion(k)
    assert torch.equal(k_d.amax(dim=(-2, -1)), torch.ones(4, 1, dtype=D))  # peak -> +1
    assert bool((k_d[..., 0, :] == -1).all())  # background (0) -> -1
    assert k_d.min() >= -1
    torch.testing.assert_close(diffusion.from_diffusion(k_d), k, atol=1e-15, rtol=0)
    k32 = random_kernels(3, 32, seed=1, dtype=torch.float32)
    torch.testing.assert_close(diffusion.from_diffusion(diffusion.to_diffusion(k32)), k32, atol=1e-7, rtol=1e-5)


def test_from_diffusion_gives_valid_kernels():
    g = torch.Generator().manual_seed(0)
    k_d = torch.randn(5, 1, 16, 16, generator=g, dtype=D)
    k = diffusion.from_diffusion(k_d)
    assert bool((k >= 0).all())
    torch.testing.assert_close(k.sum(dim=(-2, -1)), torch.ones(5, 1, dtype=D))
    # nothing above the background: a centred delta
    delta = diffusion.from_diffusion(-torch.ones(1, 1, 5, 5))
    assert delta[0, 0, 2, 2] == 1 and delta.sum() == 1
    with pytest.raises(KdiffError, match="no positive entry"):
        diffusion.to_diffusion(torch.zeros(1, 1, 5, 5))


# --------------------------------------------------------------------------- forward process


def test_q_sample_statistics():
    g = torch.Generator().manual_seed(0)
    ab = 0.3
    k0 = torch.full((4000, 1, 8, 8), 0.7, dtype=D)
    eps = torch.randn(k0.shape, generator=g, dtype=D)
    k_t = diffusion.q_sample(k0, eps, ab)
    assert k_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=3e-3)
    assert k_t.std().item() == pytest.approx(math.sqrt(1 - ab), rel=3e-3)
    # alpha_bar -> 1 keeps k0, alpha_bar -> 0 is pure noise
    torch.testing.assert_close(diffusion.q_sample(k0[:2], eps[:2], 1.0), k0[:2])
    torch.testing.assert_close(diffusion.q_sample(k0[:2], eps[:2], 0.0), eps[:2])


def test_predict_k0_inverts_q_sample_exactly(random_kernels):
    s = NoiseSchedule()
    g = torch.Generator().manual_seed(1)
    k0 = diffusion.to_diffusion(random_kernels(4, 16))
    eps = torch.randn(k0.shape, generator=g, dtype=D)
    ab = s.alpha_bar_at(torch.tensor([0, 10, 500, 999]), like=k0)  # one alpha_bar per kernel
    k_t = diffusion.q_sample(k0, eps, ab)
    torch.testing.assert_close(diffusion.predict_k0(k_t, eps, ab), k0, atol=1e-9, rtol=0)
    torch.testing.assert_close(diffusion.predict_epsilon(k_t, k0, ab), eps, atol=1e-9, rtol=0)
    with pytest.raises(KdiffError, match="per-sample values"):
        diffusion.predict_k0(k_t, eps, ab[:3])


def test_epsilon_loss_is_l2():
    a = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert diffusion.epsilon_loss(torch.zeros(2, 2), a).item() == pytest.approx((1 + 4 + 0.25) / 4)
    assert diffusion.epsilon_loss(a.bfloat16(), a).dtype == torch.float32


def test_training_loss_seeded_and_matches_its_definition(random_kernels):
    s = NoiseSchedule()
    k0 = diffusion.to_diffusion(random_kernels(3, 8, dtype=torch.float32))
    y = torch.zeros(3, 3, 16, 16)
    seen = {}

    def oracle(k_t, cond, t):  # records its inputs, predicts zero noise
        seen.update(k_t=k_t, t=t)
        return torch.zeros_like(k_t)

    loss = diffusion.training_loss(oracle, k0, y, s.alpha_bar, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (3,), generator=g)
    eps = torch.randn(k0.shape, generator=g)
    assert torch.equal(seen["t"], t)
    torch.testing.assert_close(seen["k_t"], diffusion.q_sample(k0, eps, s.alpha_bar[t]))
    assert loss.item() == pytest.approx(eps.pow(2).mean().item(), rel=1e-6)


# --------------------------------------------------------------------------- reverse steps


@pytest.fixture
def noisy(random_kernels):
    """Function ``noisy(t, seed=0, B=2, S=8) -> (schedule, k0, eps, k_t)``: random kernels in the
    diffusion range and their forward-noised version at step t (float64)."""

    def make(t: int, seed: int = 0, B: int = 2, S: int = 8):
        s = NoiseSchedule()
        g = torch.Generator().manual_seed(seed)
        k0 = diffusion.to_diffusion(random_kernels(B, S, seed))
        eps = torch.randn(k0.shape, generator=g, dtype=D)
        return s, k0, eps, diffusion.q_sample(k0, eps, s.alpha_bar[t])

    return make


def test_ddpm_step_is_eq_18(noisy):
    s, k0, eps, k_t = noisy(600)
    z = torch.randn(k_t.shape, generator=torch.Generator().manual_seed(9), dtype=D)
    t = 600
    out = diffusion.ddpm_step(k_t, eps, s.alpha_bar[t], s.alpha_bar[t - 1], noise=z)
    alpha, beta, ab = s.alpha[t], s.beta[t], s.alpha_bar[t]
    sigma = torch.sqrt(beta * (1 - s.alpha_bar[t - 1]) / (1 - ab))
    eq18 = (k_t - (1 - alpha) / torch.sqrt(1 - ab) * eps) / torch.sqrt(alpha) + sigma * z
    torch.testing.assert_close(out.k_prev, eq18, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.k0_hat, k0, atol=1e-9, rtol=0)
    beta_var = diffusion.ddpm_step(k_t, eps, ab, s.alpha_bar[t - 1], noise=z, variance="beta").k_prev
    torch.testing.assert_close(beta_var - (eq18 - sigma * z), torch.sqrt(beta) * z, atol=1e-12, rtol=0)
    with pytest.raises(KdiffError, match="pass noise"):
        diffusion.ddpm_step(k_t, eps, ab, s.alpha_bar[t - 1])
    with pytest.raises(KdiffError, match="unknown DDPM variance"):
        diffusion.ddpm_step(k_t, eps, ab, s.alpha_bar[t - 1], noise=z, variance="large")


def test_ddpm_chain_with_oracle_epsilon_reaches_k0(random_kernels):
    """Ancestral sampling where the network is replaced by the true noise of k_t w.r.t. k0."""
    s = NoiseSchedule()
    k0 = diffusion.to_diffusion(random_kernels(2, 8, seed=3))
    g = torch.Generator().manual_seed(4)
    k_t = torch.randn(k0.shape, generator=g, dtype=D)
    start = (k_t - k0).norm().item()
    dist = []
    for t, t_prev in s.pairs():
        eps = diffusion.predict_epsilon(k_t, k0, s.alpha_bar[t])
        z = torch.randn(k0.shape, generator=g, dtype=D)
        k_t = diffusion.ddpm_step(k_t, eps, s.alpha_bar_at(t), s.alpha_bar_at(t_prev), noise=z).k_prev
        dist.append((k_t - k0).norm().item())
    assert dist[499] < start and dist[949] < 0.2 * start  # t = 500, 50
    torch.testing.assert_close(k_t, k0, atol=1e-9, rtol=0)  # last step: no noise, k0_hat = k0


def test_ddim_eta0_deterministic_and_stays_on_the_oracle_path(noisy):
    s, k0, eps, k_t = noisy(800, seed=5)
    a = diffusion.ddim_step(k_t, eps, s.alpha_bar[800], s.alpha_bar[400])
    b = diffusion.ddim_step(k_t, eps, s.alpha_bar[800], s.alpha_bar[400])
    assert torch.equal(a.k_prev, b.k_prev)
    # with the true epsilon, DDIM (eta = 0) lands on q_sample(k0, eps, alpha_bar_prev)
    torch.testing.assert_close(a.k_prev, diffusion.q_sample(k0, eps, s.alpha_bar[400]), atol=1e-10, rtol=0)
    last = diffusion.ddim_step(k_t, eps, s.alpha_bar[800], 1.0)
    torch.testing.assert_close(last.k_prev, k0, atol=1e-9, rtol=0)


def test_ddim_eta1_is_the_ddpm_posterior(noisy):
    s, k0, eps, k_t = noisy(500, seed=6)
    g = torch.Generator().manual_seed(7)
    eps_net = eps + 0.3 * torch.randn(eps.shape, generator=g, dtype=D)  # an imperfect network
    z = torch.randn(k_t.shape, generator=g, dtype=D)
    for t_prev in (499, 300):  # consecutive and strided
        ddim = diffusion.ddim_step(k_t, eps_net, s.alpha_bar[500], s.alpha_bar[t_prev], eta=1.0, noise=z)
        ddpm = diffusion.ddpm_step(k_t, eps_net, s.alpha_bar[500], s.alpha_bar[t_prev], noise=z)
        torch.testing.assert_close(ddim.k_prev, ddpm.k_prev, atol=1e-12, rtol=0)
    with pytest.raises(KdiffError, match="pass noise"):
        diffusion.ddim_step(k_t, eps, s.alpha_bar[500], s.alpha_bar[300], eta=0.5)
    with pytest.raises(KdiffError, match="eta must be"):
        diffusion.ddim_step(k_t, eps, s.alpha_bar[500], s.alpha_bar[300], eta=-1)


def test_clip_k0(noisy):
    s, k0, eps, k_t = noisy(900, seed=8)
    wild = eps + 5.0  # epsilon that puts k0_hat far outside [-1, 1]
    assert diffusion.predict_k0(k_t, wild, s.alpha_bar[900]).abs().max() > 1
    for step in (diffusion.ddim_step, lambda *a, **kw: diffusion.ddpm_step(*a, noise=torch.zeros_like(k_t), **kw)):
        out = step(k_t, wild, s.alpha_bar[900], s.alpha_bar[899], clip_k0=True)
        assert out.k0_hat.abs().max() <= 1
    # unclipped values are untouched: same result as without clipping
    a = diffusion.ddim_step(k_t, eps, s.alpha_bar[900], s.alpha_bar[899], clip_k0=True).k_prev
    torch.testing.assert_close(a, diffusion.ddim_step(k_t, eps, s.alpha_bar[900], s.alpha_bar[899]).k_prev)
