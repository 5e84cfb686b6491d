"""`kdiff figures residual` (the paper's Figure 5) on one tiny trial with an untrained network."""

import json

import numpy as np
import torch
from typer.testing import CliRunner

from kdiff_cli import files, weights
from kdiff_cli.cli import app
from kdiff_cli.maths.schedule import NoiseSchedule
from kdiff_cli.maths.unet import KernelUNet


def test_residual_figure(tmp_path):
    torch.manual_seed(0)
    m = KernelUNet(kernel_size=64, model_channels=8, channel_mult=(1, 2), image_model_channels=8,
                   image_channel_mult=(1, 2), image_res_blocks=(0, 1), attention_resolutions=(), num_heads=1, norm_groups=4)
    w = weights.save(tmp_path / "w.safetensors", m.state_dict(), {"task": "kernel-diff", "unet": m.config, "schedule": NoiseSchedule().to_dict()})
    photos = tmp_path / "photos"
    g = np.random.default_rng(1)
    files.write_image(photos / "1.png", np.kron(g.random((20, 20, 3)), np.ones((14, 14, 1))), 8)
    out = tmp_path / "fig"
    r = CliRunner().invoke(app, ["figures", "residual", "--out", str(out), "--data", str(photos), "--trials", "1",
                                 "--weights", str(w), "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert (out / "residual.png").stat().st_size > 1000
    data = json.loads((out / "residual.json").read_text())
    kd = data["traces"]["kernel-diff"][0]
    assert len(kd) == 3 + 21  # guided steps + Stage II (initial + 20 steps)
    assert all(v > 0 for v in kd)
    assert kd[-1] <= kd[3] + 1e-9  # Stage II never raises the residual
    assert len(data["traces"]["alternating"][0]) > 3
    bad = CliRunner().invoke(app, ["figures", "residual", "--out", str(out), "--data", str(tmp_path / "none")])
    assert bad.exit_code == 2 and "not a folder" in bad.output
