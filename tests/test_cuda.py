"""CUDA checks (skipped without a GPU; `scripts/gpu_prior.sh` runs them on a lent GPU):
the cue, the device-resident batches and the autocorr prior give the CPU's results on the GPU."""

import numpy as np
import pytest
import torch

from kdiff_cli.maths import cues, diffusion
from kdiff_cli.apps.train import device_data
from kdiff_cli.maths.unet import KernelUNet

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_cue_matches_cpu():
    y = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    a = cues.gradient_autocorrelation(y, 32)
    b = cues.gradient_autocorrelation(y.cuda(), 32).cpu()
    assert torch.allclose(a, b, atol=1e-4)


def test_device_crops_match_cpu():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8) for _ in range(3)]
    bank = rng.random((10, 16, 16)).astype(np.float32)
    bank /= bank.sum(axis=(1, 2), keepdims=True)
    cpu = device_data.DeviceCrops(images, bank, 48, 0.0, 0.02, "cpu").sample(4, None, torch.Generator().manual_seed(3))
    gpu = device_data.DeviceCrops(images, bank, 48, 0.0, 0.02, "cuda").sample(4, None, torch.Generator().manual_seed(3))
    for key in ("x", "k", "sigma"):
        assert torch.equal(cpu[key], gpu[key].cpu()), key
    noise = (gpu["y"] - device_data.ops.conv2d(gpu["x"], gpu["k"])).cpu()
    assert torch.allclose(noise.std(dim=(1, 2, 3)), cpu["sigma"], rtol=0.1, atol=1e-3)


def test_autocorr_prior_forward_and_loss_on_gpu():
    torch.manual_seed(0)
    m = KernelUNet(kernel_size=16, condition="autocorr", model_channels=8, channel_mult=(1, 2),
                   image_model_channels=8, image_channel_mult=(1, 2), image_res_blocks=(0, 1),
                   attention_resolutions=(8,), norm_groups=4)
    y = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    k = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([5, 500])
    out_cpu = m(k, y, t)
    out_gpu = m.cuda()(k.cuda(), y.cuda(), t.cuda()).cpu()
    assert torch.allclose(out_cpu, out_gpu, atol=1e-3)
    loss = diffusion.training_loss(m, k.cuda() * 2 - 1, y.cuda(), torch.linspace(0.99, 0.01, 1000, device="cuda"),
                                   torch.Generator().manual_seed(4))
    loss.backward()
    assert torch.isfinite(loss)
