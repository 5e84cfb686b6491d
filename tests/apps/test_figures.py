"""`kdiff figures residual` (the paper's Figure 5) on one tiny trial with an untrained network."""

import json

import numpy as np
import pytest

from kdiff_cli import files


@pytest.mark.slow
def test_residual_figure(cli, save_tiny_weights, tmp_path):
    w = save_tiny_weights(tmp_path / "w.safetensors", kernel_size=64)
    photos = tmp_path / "photos"
    g = np.random.default_rng(1)
    files.write_image(photos / "1.png", np.kron(g.random((20, 20, 3)), np.ones((14, 14, 1))), 8)
    out = tmp_path / "fig"
    r = cli("figures", "residual", "--out", out, "--data", photos, "--trials", "1", "--weights", w, "--steps", "3")
    assert r.exit_code == 0, r.output
    assert (out / "residual.png").stat().st_size > 1000
    data = json.loads((out / "residual.json").read_text())
    kd = data["traces"]["kernel-diff"][0]
    assert len(kd) == 3 + 21  # guided steps + Stage II (initial + 20 steps)
    assert all(v > 0 for v in kd)
    assert kd[-1] <= kd[3] + 1e-9  # Stage II never raises the residual
    assert len(data["traces"]["alternating"][0]) > 3
    bad = cli("figures", "residual", "--out", out, "--data", tmp_path / "none")
    assert bad.exit_code == 2 and "not a folder" in bad.output
