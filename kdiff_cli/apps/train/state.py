"""The training state of a run: the model and what a checkpoint restores with it.

:func:`build_state` makes it (model, EMA, AdamW, the learning-rate schedule, the grad scaler, the
random streams), :func:`restore_state` continues it from a checkpoint, :func:`train_step` takes
one optimisation step, :func:`checkpoint` and :func:`save_weights` write it. The loop that drives
it is :func:`kdiff_cli.apps.train.loop.fit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch

from kdiff_cli import __version__
from kdiff_cli import weights as weights_mod
from kdiff_cli.apps.train.log import machine_info
from kdiff_cli.apps.train.runtime import CKPT_FORMAT, CKPT_LATEST, EMA, Dist, Rngs, lr_factor, save_checkpoint
from kdiff_cli.apps.train.task_base import Task

EMA_NAME = "ema.safetensors"

Echo = Callable[[str], None]


@dataclass
class TrainState:
    """The model and what a checkpoint restores with it."""

    model: torch.nn.Module
    ema: EMA
    params: list[torch.nn.Parameter]  # the trainable ones
    opt: torch.optim.Optimizer  # AdamW
    sched: torch.optim.lr_scheduler.LambdaLR  # warmup, then train.schedule
    scaler: torch.amp.GradScaler  # enabled for fp16 on CUDA only
    rngs: Rngs  # this process's random streams
    step: int = 0  # optimisation steps done
    wall_before: float = 0.0  # training time of the earlier sessions (s)
    last_val: dict[str, float] = field(default_factory=dict)  # the latest validation

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]


def build_state(task: Task, cfg: dict, device: torch.device, rank: int) -> TrainState:
    """A fresh model (identical init on every rank: torch is seeded first), its EMA, the optimizer,
    the learning-rate schedule, the grad scaler and the random streams of process ``rank``."""
    t = cfg["train"]
    torch.manual_seed(cfg["seed"])
    model = task.build_model(cfg).to(device)
    ema = EMA(model, t["ema_decay"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"], weight_decay=t["weight_decay"])
    warmup, schedule, min_ratio = t["warmup"], t["schedule"], t["min_lr_ratio"]
    # train.steps is read at every step: a time budget (fit) shortens the schedule while it runs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, t["steps"], warmup, schedule, min_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=(t["precision"] == "fp16" and device.type == "cuda"))
    return TrainState(model, ema, params, opt, sched, scaler, Rngs.seeded(cfg["seed"], rank))


def restore_state(state: TrainState, saved: dict[str, Any], cfg: dict, dist: Dist, echo: Echo) -> None:
    """Continue from checkpoint ``saved``: weights, EMA, optimizer, schedule, scaler, step, RNGs."""
    state.model.load_state_dict(saved["model"])
    state.ema.module.load_state_dict(saved["ema"])
    state.opt.load_state_dict(saved["optimizer"])
    state.sched.load_state_dict(saved["scheduler"])
    if saved["scaler"] and state.scaler.is_enabled():
        state.scaler.load_state_dict(saved["scaler"])
    state.step, state.wall_before = int(saved["step"]), float(saved["wall_time_s"])
    state.last_val = dict(saved.get("val", {}))
    rngs = saved["rng"]
    if len(rngs) == dist.world_size:
        state.rngs.restore(rngs[dist.rank])
    else:  # another process count: fresh streams for this step (not an exact continuation)
        state.rngs = Rngs.seeded(cfg["seed"] + 1_000_003 * state.step, dist.rank)
        echo(f"note: checkpoint from {len(rngs)} processes, now {dist.world_size}: new random streams")


def init_weights(state: TrainState, name_or_path: str, echo: Echo) -> None:
    """Fine-tune: the model and its EMA start from a weights file of the same task (checked by
    :func:`run` with :func:`~kdiff_cli.apps.train.runtime.check_init`)."""
    path = weights_mod.resolve(name_or_path)
    weights_mod.load_state(state.model, weights_mod.read(path)[0], path)
    state.ema.module.load_state_dict(state.model.state_dict())
    echo(f"initialised from {path}")


def train_step(task: Task, net: torch.nn.Module, state: TrainState, batch: dict[str, torch.Tensor],
               amp: ContextManager, grad_clip: float) -> tuple[torch.Tensor, float | None]:
    """One optimisation step on ``batch``: the loss and, when clipping, the gradient norm before it."""
    with amp:
        loss = task.loss(net, batch, state.rngs.torch)
    state.opt.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    grad_norm = None
    if grad_clip > 0:
        state.scaler.unscale_(state.opt)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(state.params, grad_clip))
    state.scaler.step(state.opt)
    state.scaler.update()
    state.sched.step()
    state.ema.update(state.model, state.step)
    state.step += 1
    return loss, grad_norm


def validate(task: Task, state: TrainState, batches: list[dict[str, torch.Tensor]], cfg: dict) -> dict[str, float]:
    """The task's metrics of the EMA model on the validation batches (generator seeded with data.val_seed)."""
    if not batches:
        return {}
    state.ema.module.eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(cfg["data"]["val_seed"])
        return {k: float(v) for k, v in task.validate(state.ema.module, batches, cfg, g).items()}


def checkpoint(state: TrainState, task: Task, cfg: dict, dist: Dist, run_dir: Path, wall: float) -> None:
    """``ckpt-latest.pt`` (and ``ckpt-<step>.pt`` every train.keep_every steps) with every rank's RNGs."""
    states = dist.gather(state.rngs.state())
    if not dist.main:
        return
    saved = {
        "format": CKPT_FORMAT, "kdiff_version": __version__, "task": task.name, "step": state.step,
        "config": cfg, "model": state.model.state_dict(), "ema": state.ema.module.state_dict(),
        "optimizer": state.opt.state_dict(), "scheduler": state.sched.state_dict(), "scaler": state.scaler.state_dict(),
        "rng": states, "wall_time_s": wall, "val": state.last_val, "world_size": dist.world_size,
    }
    save_checkpoint(run_dir / CKPT_LATEST, saved)
    keep = cfg["train"]["keep_every"]
    if keep and state.step % keep == 0:
        save_checkpoint(run_dir / f"ckpt-{state.step:07d}.pt", saved)


def save_weights(state: TrainState, task: Task, cfg: dict, run_dir: Path, wall: float,
                 device: torch.device, world_size: int, export: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """The EMA weights with their metadata: ``ema.safetensors`` in the run folder (and ``export``)."""
    meta = {
        "task": task.name, "kdiff_version": __version__, "steps": state.step, "wall_time_s": round(wall, 3),
        "machine": machine_info(device, world_size), "validation": state.last_val, "config": cfg,
        **task.weights_metadata(cfg),
    }
    weights = {k: v.detach().clone() for k, v in state.ema.module.state_dict().items()}
    return weights_mod.save(run_dir / EMA_NAME, weights, meta), (weights_mod.save(export, weights, meta) if export else None)
