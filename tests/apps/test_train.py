"""The training engine: config, data pipeline, loop, checkpoints/resume, logs, DDP, CLI.

A tiny test-only task (``toy``: a residual two-layer conv net with dropout) stands in for the real
models, on a synthetic image folder in tmp_path (crop 32, kernels 9 x 9, batch 2).
"""

from __future__ import annotations

import csv
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdiff_cli import config, weights
from kdiff_cli.apps.train import data, log, runtime, state, task_base, tasks, loop as train
from kdiff_cli.errors import KdiffError

class ToyNet(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.2),
            torch.nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, y):
        return y + self.body(y)


class ToyTask(tasks.Task):
    """Uses every random stream: numpy (data), the task generator (loss weights), torch global (dropout)."""

    name = "toy"
    description = "tiny residual conv net (tests only)"
    defaults = {
        "model": {"width": 4},
        "data": {"crop": 32, "kernel_size": 9, "batch": 2, "val_count": 3, "val_batch": 2, "sigma_max": 0.05},
        "train": {"steps": 10, "lr": 1e-2, "warmup": 2, "log_every": 2, "val_every": 5, "ckpt_every": 5},
    }

    def build_model(self, cfg):
        return ToyNet(cfg["model"]["width"])

    def loss(self, model, batch, generator):
        w = torch.rand(batch["x"].shape[0], 1, 1, 1, generator=generator) + 0.5
        return ((model(batch["y"]) - batch["x"]).abs() * w).float().mean()

    def validate(self, model, batches, cfg, generator):
        return {"psnr": float(torch.cat([task_base.psnr(model(b["y"]), b["x"]) for b in batches]).mean())}

    def weights_metadata(self, cfg):
        return {"model": dict(cfg["model"])}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "toy", ToyTask)
    return ToyTask


def _data_overrides(ds) -> list[str]:
    return [f"data.train_dir={ds['train']}", f"data.val_dir={ds['val']}", f"data.kernels_file={ds['kernels']}"]


def _tensors(path: Path, key: str) -> dict[str, torch.Tensor]:
    return runtime.load_checkpoint(path)[key]


def _assert_same_state(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same_state(x, y)
    else:
        assert a == b


# --------------------------------------------------------------------------- resume


def test_resume_is_exact(toy, dataset, tmp_path):
    """10 steps == 5 steps (interrupted, cosine schedule) + resume 5: bitwise equal on the CPU."""
    ov = _data_overrides(dataset)
    full = train.run("toy", overrides=ov, out=tmp_path / "full")
    half = train.run("toy", overrides=ov, out=tmp_path / "half", stop_at=5)
    assert half.step == 5 and runtime.load_checkpoint(tmp_path / "half")["step"] == 5
    resumed = train.run("toy", resume=tmp_path / "half")
    assert resumed.step == full.step == 10
    a = runtime.load_checkpoint(tmp_path / "full")
    b = runtime.load_checkpoint(tmp_path / "half" / runtime.CKPT_LATEST)
    for key in ("model", "ema", "optimizer", "scheduler", "rng"):
        _assert_same_state(a[key], b[key])
    wa, _ = weights.read(full.weights)
    wb, meta = weights.read(resumed.weights)
    _assert_same_state(wa, wb)
    assert meta["task"] == "toy" and meta["steps"] == 10 and meta["model"] == {"width": 4}
    assert "psnr" in meta["validation"] and meta["machine"]["world_size"] == 1
    # the logs agree too (the interrupted session's rows up to step 5, then the resumed ones)
    la = dict(zip(*log.CsvLog(tmp_path / "full" / log.LOG_NAME, 10).series("loss")))
    lb = dict(zip(*log.CsvLog(tmp_path / "half" / log.LOG_NAME, 10).series("loss")))
    assert list(la) == [2, 4, 6, 8, 10] and list(lb) == [2, 4, 5, 6, 8, 10]  # + the session end at 5
    assert all(la[s] == lb[s] for s in (2, 4, 8, 10))
    # the weights changed at all (a test of "equal" needs training to do something)
    torch.manual_seed(0)  # the run's seed: the same initial weights
    init = ToyTask().build_model({"model": {"width": 4}}).state_dict()
    assert not torch.equal(a["model"]["body.0.weight"], init["body.0.weight"])


def test_resume_cli_more_steps(cli, toy, dataset, tmp_path):
    """`kdiff train --steps 5`, then `--resume RUN --steps 10` == `--steps 10` (constant lr)."""
    common = ["train", "toy"] + [a for o in _data_overrides(dataset) for a in ("--set", o)]
    common += ["--set", "train.schedule=constant"]
    r = cli(*common, "--steps", "10", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    r = cli(*common, "--steps", "5", "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    r = cli("train", "toy", "--resume", tmp_path / "b", "--steps", "10", "--export", tmp_path / "w" / "toy.safetensors")
    assert r.exit_code == 0, r.output
    assert "trained 10/10 steps" in r.output
    _assert_same_state(_tensors(tmp_path / "a", "model"), _tensors(tmp_path / "b", "model"))
    exported, meta = weights.read(tmp_path / "w" / "toy.safetensors")
    _assert_same_state(exported, _tensors(tmp_path / "b", "ema"))
    saved = config.read_toml(tmp_path / "b" / train.CONFIG_NAME)
    assert saved["train"]["steps"] == 10 and saved["meta"]["task"] == "toy"
    # a finished run with --export only writes its EMA weights (no training step)
    r = cli("train", "toy", "--resume", tmp_path / "b", "--export", tmp_path / "w" / "again.safetensors")
    assert r.exit_code == 0 and "trained 10/10 steps" in r.output, r.output
    again, meta2 = weights.read(tmp_path / "w" / "again.safetensors")
    _assert_same_state(again, exported)
    assert meta2["steps"] == 10 and meta2["task"] == "toy"
    # a finished run, an occupied folder, --config with --resume: one-line errors, exit 2
    for args, msg in [
        (["train", "toy", "--resume", str(tmp_path / "b")], "already at step 10"),
        (common + ["--out", str(tmp_path / "a")], "already holds a run"),
        (["train", "toy", "--resume", str(tmp_path / "b"), "--config", str(tmp_path / "b" / "config.toml")],
         "cannot be combined"),
        (["train", "toy", "--resume", str(tmp_path / "nothing")], "checkpoint not found"),
    ]:
        r = cli(*args)
        assert r.exit_code == 2 and msg in r.output and r.output.count("\n") == 1, r.output


def test_resumed_config_is_reusable(toy, dataset, tmp_path):
    """The saved config.toml is a valid --config for a new run and reproduces the first."""
    a = train.run("toy", overrides=_data_overrides(dataset) + ["train.steps=3"], out=tmp_path / "a")
    b = train.run("toy", config_file=a.run_dir / train.CONFIG_NAME, out=tmp_path / "b")
    _assert_same_state(_tensors(tmp_path / "a", "model"), _tensors(tmp_path / "b", "model"))
    assert b.step == 3


# --------------------------------------------------------------------------- checkpoints, logs


def test_checkpoint_atomic(toy, dataset, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train.run("toy", overrides=_data_overrides(dataset) + ["train.keep_every=5"], out=run_dir)
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["ckpt-0000005.pt", "ckpt-0000010.pt", "ckpt-latest.pt", "config.toml", "ema.safetensors",
                     "log.csv", "loss.png"]
    before = (run_dir / runtime.CKPT_LATEST).read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        runtime.save_checkpoint(run_dir / runtime.CKPT_LATEST, {"x": 1})
    assert (run_dir / runtime.CKPT_LATEST).read_bytes() == before
    assert sorted(p.name for p in run_dir.iterdir()) == names  # no temp file left
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(KdiffError, match="cannot read checkpoint"):
        runtime.load_checkpoint(tmp_path / "junk.pt")


def test_csv_and_png(toy, dataset, tmp_path):
    res = train.run("toy", overrides=_data_overrides(dataset), out=tmp_path / "run")
    with open(res.run_dir / log.LOG_NAME, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == log.TRAIN_FIELDS + ["val_psnr"]
    assert [int(r["step"]) for r in rows] == [0, 2, 4, 5, 6, 8, 10]
    val_rows = [r for r in rows if r["val_psnr"]]
    assert [int(r["step"]) for r in val_rows] == [0, 5, 10]
    assert float(val_rows[-1]["val_psnr"]) == pytest.approx(res.val["psnr"], rel=1e-5)
    train_rows = [r for r in rows if r["loss"]]
    assert all(float(r["loss"]) > 0 and float(r["it_per_s"]) > 0 for r in train_rows)
    lrs = [float(r["lr"]) for r in train_rows]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-2 * 0.05)  # warmup 2, cosine to 5%
    assert (res.run_dir / log.PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_precision(toy, dataset, tmp_path):
    res = train.run("toy", overrides=_data_overrides(dataset) + ["train.steps=2", "train.precision=bf16"],
                    out=tmp_path / "bf16")
    assert np.isfinite(res.val["psnr"])
    with pytest.raises(KdiffError, match="needs CUDA"):
        train.run("toy", overrides=_data_overrides(dataset) + ["train.precision=fp16"], out=tmp_path / "fp16")
    with pytest.raises(KdiffError, match="unknown train.precision"):
        train.run("toy", overrides=_data_overrides(dataset) + ["train.precision=fp8"], out=tmp_path / "fp8")
    with pytest.raises(KdiffError, match="device"):
        runtime.pick_device("tpu")


# --------------------------------------------------------------------------- config


def test_config_override_typing(toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.resolve("toy", ToyTask.defaults, overrides=[
        "train.lr=1e-3", "train.steps=20", "train.warmup=3.0", "data.flip=false", "train.betas=0.8,0.99",
        "data.generators=a,b", "data.generator_weights=[3, 1]", "model.width=8", "seed=7",
        "data.generator_params.a.intensity=0.5", "data.train_dir=imgs", "train.precision=bf16",
    ])
    assert cfg["train"]["lr"] == 1e-3 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["steps"] == 20 and cfg["train"]["warmup"] == 3 and isinstance(cfg["train"]["warmup"], int)
    assert cfg["data"]["flip"] is False and cfg["seed"] == 7 and cfg["model"]["width"] == 8
    assert cfg["train"]["betas"] == [0.8, 0.99] and cfg["data"]["generators"] == ["a", "b"]
    assert cfg["data"]["generator_weights"] == [3.0, 1.0]
    assert cfg["data"]["generator_params"] == {"a": {"intensity": 0.5}}
    assert cfg["data"]["train_dir"] == str(tmp_path / "imgs")  # --set paths: relative to the CWD
    assert cfg["data"]["crop"] == 32 and cfg["data"]["sigma_min"] == 0.0  # task default, engine default
    for item, msg in [
        ("train.bogus=1", "unknown key 'train.bogus' .*valid keys in \\[train\\]: betas, ckpt_every"),
        ("bogus.x=1", "unknown key 'bogus.x' .*valid keys in the top level: data, model, seed, train"),
        ("train.steps=2.5", "train.steps must be an integer"),
        ("train.lr=fast", "train.lr must be a number"),
        ("data.flip=maybe", "data.flip=.maybe.: expected true or false"),
        ("train.lr", "expects key=value"),
        ("train.steps.x=1", "train.steps is not a table"),
    ]:
        with pytest.raises(KdiffError, match=msg):
            config.resolve("toy", ToyTask.defaults, overrides=[item])


def test_config_file(toy, tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.toml"
    path.write_text('seed = 3\n[data]\ntrain_dir = "../imgs"\ncrop = 64\n[train]\nlr = 1\n')
    cfg = config.resolve("toy", ToyTask.defaults, path, ["data.crop=16"])
    assert cfg["data"]["train_dir"] == str(tmp_path / "imgs")  # relative to the file
    assert cfg["data"]["crop"] == 16 and cfg["train"]["lr"] == 1.0 and cfg["seed"] == 3
    # the saved config round-trips exactly, with [meta]
    cfg["data"]["generator_params"] = {"b-c": {"x": [1, 2], "s": 'q"\\\n'}}
    cfg["train"]["min_lr_ratio"] = 1e-5
    config.save(cfg, tmp_path / "saved.toml", {"task": "toy", "kdiff_version": "0"})
    back = config.read_toml(tmp_path / "saved.toml")
    assert back.pop("meta") == {"task": "toy", "kdiff_version": "0"}
    assert back == cfg
    assert config.resolve("toy", ToyTask.defaults, tmp_path / "saved.toml") == cfg
    with pytest.raises(KdiffError, match="is for task 'toy', not 'other'"):
        config.resolve("other", ToyTask.defaults, tmp_path / "saved.toml")
    for text, msg in [
        ("[train]\nlrr = 1\n", "unknown key 'train.lrr'"),
        ('[data]\ncrop = "big"\n', "data.crop must be an integer"),
        ("[train\n", "cannot parse config file"),
        ("data = 3\n", "data must be a table"),
    ]:
        path.write_text(text)
        with pytest.raises(KdiffError, match=msg):
            config.resolve("toy", ToyTask.defaults, path)
    with pytest.raises(KdiffError, match="config file not found"):
        config.resolve("toy", ToyTask.defaults, tmp_path / "missing.toml")


def test_bad_config_cli(cli, toy, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nsteps = = 3\n")
    r = cli("train", "toy", "--config", bad, "--out", tmp_path / "run")
    assert r.exit_code == 2
    assert r.output.startswith("error: cannot parse config file") and r.output.count("\n") == 1
    r = cli("train", "toy", "--set", "train.nope=1", "--out", tmp_path / "run")
    assert r.exit_code == 2 and "valid keys in [train]" in r.output
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- data (more in test_train_data.py)


def test_validation_batches_fixed(dataset):
    d = config.defaults_for(ToyTask.defaults)["data"]
    d.update(val_dir=str(dataset["val"]), kernels_file=str(dataset["kernels"]), val_count=3, val_batch=2)
    a, b = data.validation_batches(d), data.validation_batches(d)
    assert [x["x"].shape[0] for x in a] == [2, 1]
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert data.validation_batches({**d, "val_dir": ""}) == []


# --------------------------------------------------------------------------- tasks


# --------------------------------------------------------------------------- multi-process


@pytest.mark.slow
def test_ddp_two_processes_cpu(dataset, tmp_path):
    """torchrun --nproc_per_node 2 on the CPU (gloo): 3 steps, one checkpoint holding both ranks' RNGs."""
    out = tmp_path / "ddp"
    script = tmp_path / "launch.py"
    # self-contained (imports only the engine, not this test module or the CLI)
    script.write_text(
        "import torch\n"
        "from kdiff_cli.apps.train import task_base, tasks\n"
        "from kdiff_cli.apps.train import loop as train\n\n"
        + inspect.getsource(ToyNet) + "\n" + inspect.getsource(ToyTask) + "\n"
        "tasks.TASKS['toy'] = ToyTask\n"
        f"train.run('toy', overrides={_data_overrides(dataset) + ['train.steps=3', 'train.threads=1']!r}, out={str(out)!r})\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDIFF_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    ckpt = runtime.load_checkpoint(out)
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert ckpt["rng"][0]["numpy"] != ckpt["rng"][1]["numpy"]  # per-rank data streams
    assert [int(r["step"]) for r in csv.DictReader(open(out / log.LOG_NAME))] == [0, 2, 3]
    assert (out / state.EMA_NAME).is_file()


def test_init_fine_tunes_from_weights_and_refuses_other_tasks(toy, dataset, tmp_path):
    """train.init: model and EMA start from the file (not the seeded random init); another
    task's weights are a one-line error naming the file."""
    ov = _data_overrides(dataset)
    first = train.run("toy", overrides=ov + ["train.steps=4"], out=tmp_path / "a")
    start, _ = weights.read(first.weights)
    tuned = train.run("toy", overrides=ov + [f"train.init={first.weights}", "train.steps=1", "train.lr=1e-12",
                                             "train.warmup=0"], out=tmp_path / "b")
    after, meta = weights.read(tuned.weights)
    assert meta["config"]["train"]["init"] == str(first.weights)
    torch.manual_seed(0)
    random_init = ToyTask().build_model({"model": {"width": 4}}).state_dict()
    for k in start:
        assert torch.allclose(after[k], start[k], atol=1e-6)
    assert not torch.allclose(after["body.0.weight"], random_init["body.0.weight"], atol=1e-3)
    other = tmp_path / "other.safetensors"
    weights.save(other, start, {"task": "dwdn"})
    with pytest.raises(KdiffError, match="other.safetensors.*'dwdn'"):
        train.run("toy", overrides=ov + [f"train.init={other}"], out=tmp_path / "c")
    assert not (tmp_path / "c").exists()  # checked before the run folder is made
    with pytest.raises(KdiffError, match="nothing.safetensors"):
        train.run("toy", overrides=ov + [f"train.init={tmp_path / 'nothing.safetensors'}"], out=tmp_path / "d")
