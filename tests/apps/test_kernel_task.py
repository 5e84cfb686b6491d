"""The kernel-diff training task (kdiff_cli.apps.train.kernel_task): defaults, loss, validation,
weights metadata, the unguided validation sampler, and a tiny U-Net that overfits one kernel."""

from __future__ import annotations

import json

import pytest
import torch

from kdiff_cli import config, weights
from kdiff_cli.apps.train.kernel_task import KernelDiffTask, sample_unguided, unet_config
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import ops
from kdiff_cli.maths.schedule import NoiseSchedule
from kdiff_cli.maths.unet import KernelUNet, build_unet


TINY_MODEL = {
    "model_channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "image_model_channels": 4,
    "image_channel_mult": [1, 2, 2],
    "image_res_blocks": [0, 1, 1],
    "attention_resolutions": [8],
    "num_heads": 2,
    "norm_groups": 4,
}


def tiny_cfg(**model) -> dict:
    task = KernelDiffTask()
    cfg = config.resolve(task.name, task.defaults, overrides=[
        "data.crop=32", "data.kernel_size=16", "data.batch=4", "validate.steps=5", "validate.count=3",
    ])
    cfg["model"].update({**TINY_MODEL, **model})
    return cfg


@pytest.fixture
def tiny_batch(random_kernels):
    """Function ``tiny_batch(B=4, seed=0, P=32, S=16)``: a training batch (x, k, y, sigma) of random
    crops blurred by random kernels, noise 0.01."""

    def make(B: int = 4, seed: int = 0, P: int = 32, S: int = 16) -> dict:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(B, 3, P, P, generator=g)
        k = random_kernels(B, S, seed, dtype=torch.float32)
        sigma = torch.full((B,), 0.01)
        return {"x": x, "k": k, "y": ops.add_noise(ops.conv2d(x, k), sigma, g), "sigma": sigma}

    return make


def test_task_defaults_resolve_and_build():
    task = KernelDiffTask()
    cfg = config.resolve(task.name, task.defaults)
    assert cfg["data"]["crop"] == 128 and cfg["data"]["kernel_size"] == 64 and cfg["data"]["batch"] == 16
    assert cfg["diffusion"] == NoiseSchedule().to_dict()
    model = task.build_model(cfg)
    assert isinstance(model, KernelUNet) and model.kernel_size == 64
    with pytest.raises(KdiffError, match="not a multiple of the image-encoder stride"):
        task.build_model({**cfg, "data": {**cfg["data"], "crop": 100}})


def test_task_loss_seeded_scalar_with_gradient(tiny_batch):
    task = KernelDiffTask()
    torch.manual_seed(0)
    model = task.build_model(tiny_cfg())
    batch = tiny_batch()
    a = task.loss(model, batch, torch.Generator().manual_seed(1))
    b = task.loss(model, batch, torch.Generator().manual_seed(1))
    assert a.shape == () and a.dtype == torch.float32 and a.item() == b.item()
    assert a.item() == pytest.approx(1.0, abs=0.3)  # zero-initialised output: loss = E[eps^2]
    a.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert task.loss(model, batch, torch.Generator().manual_seed(1)).dtype == torch.float32


def test_task_validate_and_metadata(tiny_batch, tmp_path):
    task = KernelDiffTask()
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = task.build_model(cfg).eval()
    batches = [tiny_batch(2, seed=1), tiny_batch(2, seed=2)]
    with torch.no_grad():
        v = task.validate(model, batches, cfg, torch.Generator().manual_seed(3))
        again = task.validate(model, batches, cfg, torch.Generator().manual_seed(3))
    assert list(v) == ["mnc", "mnc_random", "eps_mse"] and v == again
    assert 0 < v["mnc"] <= 1 and 0 < v["mnc_random"] <= 1
    # the metadata rebuilds the model and the schedule (what `kdiff deblur` loads)
    meta = json.loads(json.dumps(task.weights_metadata(cfg)))
    path = weights.save(tmp_path / "kd.safetensors", model.state_dict(), {"task": "kernel-diff", **meta})
    state, meta2 = weights.read(path)
    rebuilt = build_unet(meta2["unet"])
    rebuilt.load_state_dict(state)
    assert NoiseSchedule.from_dict(meta2["schedule"]).to_dict() == task.schedule.to_dict()
    assert meta2["unet"]["kernel_size"] == 16
    assert {k: meta2["unet"][k] for k in unet_config(cfg)} == unet_config(cfg)


def test_sample_unguided_returns_kernels(tiny_batch):
    torch.manual_seed(0)
    model = build_unet(unet_config(tiny_cfg())).eval()
    y = tiny_batch(2)["y"]
    with torch.no_grad():
        k = sample_unguided(model, NoiseSchedule(), y, 4, torch.Generator().manual_seed(0))
        k2 = sample_unguided(model, NoiseSchedule(), y, 4, torch.Generator().manual_seed(0))
    assert k.shape == (2, 1, 16, 16) and torch.equal(k, k2)
    assert bool((k >= 0).all())
    torch.testing.assert_close(k.sum(dim=(-2, -1)), torch.ones(2, 1))


@pytest.mark.slow
def test_tiny_unet_overfits_one_kernel(tiny_batch):
    """~100 Adam steps on one (y, k) pair: the denoising loss at fixed (t, epsilon) drops a lot."""
    task = KernelDiffTask()
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = task.build_model(cfg)
    batch = tiny_batch(8, seed=4)
    batch["k"] = batch["k"][:1].expand(8, -1, -1, -1).contiguous()  # one kernel, eight crops
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def held_out() -> float:
        with torch.no_grad():
            return task.loss(model, batch, torch.Generator().manual_seed(123)).item()

    before = held_out()
    for _ in range(100):
        loss = task.loss(model, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out()
    assert after < 0.25 * before, (before, after)
