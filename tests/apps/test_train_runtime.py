"""The training runtime and the task registry: lr schedule, EMA, the time budget, the solver
tasks and the shipped solver configs (the loop itself is tested in test_train.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from kdiff_cli import config
from kdiff_cli.apps.train import loop as train
from kdiff_cli.apps.train import runtime, tasks
from kdiff_cli.errors import KdiffError


def test_lr_schedule():
    f = [runtime.lr_factor(s, 10, 2, "cosine", 0.1) for s in range(10)]
    assert f[:3] == [0.5, 1.0, 1.0]
    assert f[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.5)))
    assert all(a >= b for a, b in zip(f[1:], f[2:]))
    assert runtime.lr_factor(9, 10, 0, "linear", 0.0) == pytest.approx(0.1)
    assert runtime.lr_factor(9, 10, 2, "constant", 0.0) == 1.0


def test_ema_update():
    m = torch.nn.Linear(2, 1)
    ema = runtime.EMA(m, decay=0.9)
    with torch.no_grad():
        w0 = m.weight.clone()
        m.weight.add_(1.0)
    ema.update(m, 0)  # warmed-up decay (1 + 0) / (10 + 0) = 0.1
    assert torch.allclose(ema.module.weight, 0.1 * w0 + 0.9 * m.weight)
    ema.update(m, 1000)  # decay 0.9
    assert torch.allclose(ema.module.weight, 0.9 * (0.1 * w0 + 0.9 * m.weight) + 0.1 * m.weight)
    with pytest.raises(KdiffError):
        runtime.EMA(m, 1.0)


def test_budget_steps_fits_the_schedule_to_the_time_left(monkeypatch):
    monkeypatch.setattr(train.time, "perf_counter", lambda: 100.0)
    # 50 steps in 10 s -> 5 it/s; 60 s of a 160 s budget left -> 300 more steps
    assert train.budget_steps(60, 10_000, 10.0, session_start=0.0, budget_s=160.0) == 360
    assert train.budget_steps(60, 200, 10.0, session_start=0.0, budget_s=160.0) == 200  # never above train.steps
    assert train.budget_steps(60, 10_000, 10.0, session_start=0.0, budget_s=50.0) == 60  # budget spent


def test_task_registry(monkeypatch):
    with pytest.raises(KdiffError, match="unknown task 'nope' \\(choose from dwdn, kernel-diff, unrolled\\)"):
        tasks.get("nope")
    monkeypatch.setitem(sys.modules, "kdiff_cli.apps.train.kernel_task", None)  # as if the file were missing
    with pytest.raises(KdiffError, match="kernel_task.py is missing"):
        tasks.get("kernel-diff")


def test_solver_task(monkeypatch):
    """dwdn/unrolled: the model section comes from the solver's constructor; L1 loss; PSNR."""

    class FakeSolver(torch.nn.Module):
        name = "dwdn"

        def __init__(self, width: int = 4, levels: int = 2, act: str = "relu", scale: float = 1.0, extra=None):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, y, k, sigma=None):
            return y + self.conv(y) * sigma.view(-1, 1, 1, 1)

    from kdiff_cli import plugins

    monkeypatch.setattr(plugins, "get", lambda kind, name: FakeSolver)
    task = tasks.get("dwdn")
    assert task.defaults["model"] == {"width": 4, "levels": 2, "act": "relu", "scale": 1.0}
    cfg = config.resolve("dwdn", task.defaults, overrides=["model.width=8", "loss.kind=charbonnier"])
    model = task.build_model(cfg)
    g = torch.Generator().manual_seed(0)
    x = 0.8 * torch.rand(2, 3, 8, 8, generator=g)  # x + 0.1 stays in [0, 1]: PSNR exactly 20 dB
    batch = {"x": x, "y": x + 0.1, "k": torch.ones(2, 1, 3, 3) / 9, "sigma": torch.zeros(2)}
    assert task.loss(model, batch, g).item() == pytest.approx(float(np.sqrt(0.01 + 1e-6)), rel=1e-5)
    assert task.validate(model, [batch], cfg, g)["psnr"] == pytest.approx(20.0, abs=0.01)
    assert task.weights_metadata(cfg) == {"solver": "dwdn", "model": cfg["model"]}
    with pytest.raises(KdiffError, match="unknown loss.kind"):
        task.build_model({**cfg, "loss": {"kind": "l3", "eps": 1e-3}})


@pytest.mark.parametrize("name", ["dwdn", "unrolled"])
def test_shipped_solver_configs(name, monkeypatch, repo_root):
    """configs/<name>-cpu.toml: valid against the task, one thread, the issue's data settings."""

    class AnySolver(torch.nn.Module):  # free-form [model]: the real solver's keys are not checked here
        def __init__(self, **model):
            super().__init__()

    from kdiff_cli import plugins

    monkeypatch.setattr(plugins, "get", lambda kind, n: AnySolver)
    task = tasks.get(name)
    path = repo_root / "configs" / f"{name}-cpu.toml"
    cfg = config.resolve(name, task.defaults, path)
    runtime.check_train_config(cfg)
    d = cfg["data"]
    assert d["train_dir"] == str((repo_root.parent / "shared" / "data" / "train").resolve())
    assert d["generators"] == ["borodenko", "boracchi-foi"] and d["kernel_size"] == 64 and d["crop"] == 128
    assert (d["sigma_min"], d["sigma_max"]) == (0.0, 0.03) and cfg["train"]["threads"] == 1
