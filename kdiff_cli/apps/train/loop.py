"""The training engine shared by every trainable task (``kdiff train TASK``).

:func:`run` resolves the config (:mod:`kdiff_cli.config`), prepares the run folder (or resumes
one) and calls :func:`fit`: AdamW, linear warmup then cosine/linear/constant learning rate,
gradient clipping, an EMA of the weights, bf16 autocast on the CPU or AMP on CUDA, periodic
validation, atomic checkpoints and multi-process training under ``torchrun``
(DistributedDataParallel, gloo on the CPU, nccl on CUDA).

A run folder holds::

    config.toml              the resolved config (+ [meta]: kdiff version, task)
    ckpt-latest.pt           the latest checkpoint (model, EMA, optimizer, scheduler, grad
                             scaler, step, RNG states of every process); ckpt-<step>.pt copies
                             every train.keep_every steps
    log.csv                  step, loss, lr, grad_norm, it_per_s, elapsed_s, val_<metric>...
    loss.png                 loss curve (and the headline validation metric)
    ema.safetensors          the EMA weights at the end of the session (+ --export copy)

``--resume`` restores everything in the checkpoint, so on the CPU in float32 a run of 10 steps
and a run of 5 steps resumed for 5 more end with bitwise identical weights. Checkpoints are
torch pickles read back with ``weights_only=True``; they stay in the run folder and are never
shipped (shipped weights are safetensors, see :mod:`kdiff_cli.weights`).

The pieces: :mod:`~kdiff_cli.apps.train.state` (the model and its optimisation state),
:mod:`~kdiff_cli.apps.train.runtime` (devices, processes, RNG streams, EMA, learning rate,
precision, checkpoints), :mod:`~kdiff_cli.apps.train.log` (``log.csv``, ``loss.png``),
:mod:`~kdiff_cli.apps.train.tasks` (what is trained), :mod:`~kdiff_cli.apps.train.data` and
:mod:`~kdiff_cli.apps.train.device_data` (the batches).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator

import torch

from kdiff_cli import __version__
from kdiff_cli import config as config_mod
from kdiff_cli.apps.train import data as data_mod
from kdiff_cli.apps.train import tasks as tasks_mod
from kdiff_cli.apps.train.log import LOG_NAME, PLOT_NAME, CsvLog, plot_log
from kdiff_cli.apps.train.runtime import (
    CKPT_LATEST, Dist, autocast, check_init, check_train_config, find_checkpoint, load_checkpoint, pick_device,
)
from kdiff_cli.apps.train.state import (
    Echo, TrainState, build_state, checkpoint, init_weights, restore_state, save_weights, train_step, validate,
)
from kdiff_cli.apps.train.task_base import Task
from kdiff_cli.errors import KdiffError

CONFIG_NAME = "config.toml"
#: steps timed before ``train.time_budget_s`` sets the step count
BUDGET_PROBE_STEPS = 50

#: ``bar(description, total)`` -> context manager yielding ``update(advance=1, **fields)``
BarFactory = Callable[[str, int], ContextManager[Callable[..., None]]]


@contextlib.contextmanager
def null_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    yield lambda advance=1, **fields: None


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # steps done in total
    steps: int  # train.steps
    wall_time_s: float  # training time over all sessions
    val: dict[str, float] = field(default_factory=dict)
    weights: Path | None = None  # ema.safetensors in the run folder
    exported: Path | None = None


# --------------------------------------------------------------------------- the loop


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _val_columns(val: dict[str, float]) -> dict[str, float]:
    return {f"val_{k}": v for k, v in val.items()}


def batch_sources(cfg: dict, device: torch.device, main: bool) -> tuple[Any, list[dict[str, torch.Tensor]]]:
    """The training batch source (on the device with data.bank > 0) and, on the main process, the
    validation batches on the device."""
    d = cfg["data"]
    if d["bank"] > 0:
        from kdiff_cli.apps.train import device_data

        source = device_data.from_config(d, device, cfg["seed"])
    else:
        source = data_mod.from_config(d)
    return source, ([_to(b, device) for b in data_mod.validation_batches(d)] if main else [])


@dataclass
class LossMeter:
    """Sums of the loss and gradient norm since the last log row, and the step-rate clock."""

    t_last: float  # time of the last row (time.perf_counter)
    step_last: int  # step of the last row
    loss_sum: float = 0.0
    grad_norm_sum: float = 0.0
    n: int = 0

    def add(self, loss: float, grad_norm: float | None) -> None:
        self.loss_sum += loss
        if grad_norm is not None:
            self.grad_norm_sum += grad_norm
        self.n += 1

    def row(self, state: TrainState, dist: Dist, clipped: bool, session_start: float) -> dict[str, Any]:
        """The training columns of ``log.csv`` (loss averaged over the processes); restarts the sums."""
        now = time.perf_counter()
        mean_loss = dist.mean(self.loss_sum / self.n)
        if not math.isfinite(mean_loss):
            raise KdiffError(f"training diverged: loss is {mean_loss} at step {state.step} "
                             '(try a lower train.lr, train.grad_clip, or train.precision = "fp32")')
        row = {"step": state.step, "loss": mean_loss, "lr": state.lr,
               "grad_norm": self.grad_norm_sum / self.n if clipped else "",
               "it_per_s": (state.step - self.step_last) / max(now - self.t_last, 1e-9),
               "elapsed_s": state.wall_before + now - session_start}
        self.loss_sum, self.grad_norm_sum, self.n, self.t_last, self.step_last = 0.0, 0.0, 0, now, state.step
        return row


def budget_steps(step: int, steps: int, probe_s: float, session_start: float, budget_s: float) -> int:
    """The total step count that ends the session about ``budget_s`` after ``session_start``,
    given that the last :data:`BUDGET_PROBE_STEPS` steps took ``probe_s`` (never above ``steps``,
    never below ``step``). Validation and checkpoints are not counted: leave them a margin."""
    rate = BUDGET_PROBE_STEPS / max(probe_s, 1e-9)
    left = budget_s - (time.perf_counter() - session_start)
    return int(min(steps, max(step, step + rate * left)))


def fit(
    task: Task,
    cfg: dict,
    run_dir: Path,
    *,
    dist: Dist | None = None,
    resume_state: dict[str, Any] | None = None,
    stop_at: int | None = None,
    export: str | os.PathLike | None = None,
    bar: BarFactory = null_bar,
    echo: Echo | None = None,
) -> TrainResult:
    """Train ``task`` with the resolved ``cfg`` into ``run_dir`` (which must exist).

    ``stop_at`` ends the session after that many steps in total (with a checkpoint), as an
    interruption would; ``--resume`` then continues it to ``train.steps``.
    """
    dist = dist or Dist()
    t, d = cfg["train"], cfg["data"]
    echo = echo if (echo and dist.main) else (lambda msg: None)
    if t["threads"] > 0:
        torch.set_num_threads(t["threads"])
    device = pick_device(t["device"], dist.local_rank)
    dist.init(device)
    amp = autocast(device, t["precision"])  # checks precision vs device before any work

    state = build_state(task, cfg, device, dist.rank)
    if resume_state is not None:
        restore_state(state, resume_state, cfg, dist, echo)
    elif t["init"]:
        init_weights(state, t["init"], echo)
    stop = t["steps"] if stop_at is None else min(stop_at, t["steps"])
    net: torch.nn.Module = state.model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(state.model, device_ids=[device.index] if device.type == "cuda" else None)
    source, val_batches = batch_sources(cfg, device, dist.main)
    log = CsvLog(run_dir / LOG_NAME, state.step) if dist.main else None
    title = f"kdiff train {task.name}"

    session_start = time.perf_counter()
    if log is not None and val_batches and (state.step == 0 or not log.val_names):
        state.last_val = validate(task, state, val_batches, cfg)
        log.write({"step": state.step, **_val_columns(state.last_val)})
    dist.barrier()

    shown: dict[str, float] = {}  # the progress bar's fields
    meter = LossMeter(time.perf_counter(), state.step)
    budget_from, budget_t0 = state.step, time.perf_counter()
    with bar(f"train {task.name}" + (f" (from step {state.step})" if state.step else ""), stop - state.step) as update:
        while state.step < stop:
            net.train()
            batch = source.sample(d["batch"], state.rngs.numpy, state.rngs.torch, device=device)
            loss, grad_norm = train_step(task, net, state, batch, amp, t["grad_clip"])
            if t["time_budget_s"] > 0 and state.step - budget_from == BUDGET_PROBE_STEPS:
                # checkpoints and weights record the schedule actually run; the lr schedule reads it too
                t["steps"] = budget_steps(state.step, t["steps"], time.perf_counter() - budget_t0, session_start,
                                          t["time_budget_s"])
                stop = min(stop, t["steps"])
                echo(f"time budget {t['time_budget_s']} s: training to step {t['steps']}")
            meter.add(float(loss.detach()), grad_norm)

            row: dict[str, Any] = {}
            if state.step % t["log_every"] == 0 or state.step == stop:
                row = meter.row(state, dist, t["grad_clip"] > 0, session_start)
                shown["loss"] = row["loss"]
            if dist.main and val_batches and ((t["val_every"] and state.step % t["val_every"] == 0) or state.step == t["steps"]):
                state.last_val = validate(task, state, val_batches, cfg)
                row.update({"step": state.step, **_val_columns(state.last_val)})
                if state.last_val:
                    k0 = next(iter(state.last_val))
                    shown[k0] = state.last_val[k0]
            if log is not None and row:
                log.write(row)
                if any(k.startswith("val_") for k in row):
                    plot_log(log, run_dir / PLOT_NAME, title)
            if (t["ckpt_every"] and state.step % t["ckpt_every"] == 0) or state.step == stop:
                checkpoint(state, task, cfg, dist, run_dir, state.wall_before + time.perf_counter() - session_start)
            update(1, lr=state.lr, **shown)

    wall = state.wall_before + time.perf_counter() - session_start
    result = TrainResult(run_dir, state.step, t["steps"], wall, state.last_val)
    if log is not None:  # the main process
        plot_log(log, run_dir / PLOT_NAME, title)
        result.weights, result.exported = save_weights(state, task, cfg, run_dir, wall, device, dist.world_size, export)
    dist.barrier()
    return result


# --------------------------------------------------------------------------- a run, from the CLI


def default_run_dir(task_name: str) -> Path:
    return Path("runs") / f"{task_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve_run(task: Task, config_file: str | os.PathLike | None, overrides: list[str],
                out: str | os.PathLike | None, resume: str | os.PathLike | None,
                export: str | os.PathLike | None) -> tuple[dict, Path, dict[str, Any] | None]:
    """``(cfg, run folder, checkpoint or None)``: the resolved config of a new run, or of the run
    ``resume`` continues (its saved config with ``overrides``), checked before any work."""
    resume_state = None
    if resume is not None:
        if config_file is not None:
            raise KdiffError("--config cannot be combined with --resume (the run's config is used; change keys with --set)")
        ckpt = find_checkpoint(resume)
        resume_state = load_checkpoint(ckpt)
        if resume_state["task"] != task.name:
            raise KdiffError(f"checkpoint {ckpt} is from task {resume_state['task']!r}, not {task.name!r}")
        cfg = config_mod.resolve(task.name, task.defaults, overrides=overrides, base=resume_state["config"])
        if resume_state["step"] >= cfg["train"]["steps"] and export is None:
            raise KdiffError(f"checkpoint {ckpt} is already at step {resume_state['step']} of "
                             f"{cfg['train']['steps']} (give more with --steps, or --export FILE to write its weights)")
        run_dir = Path(out) if out is not None else ckpt.parent
    else:
        cfg = config_mod.resolve(task.name, task.defaults, config_file, overrides)
        run_dir = Path(out) if out is not None else default_run_dir(task.name)
    check_train_config(cfg)
    if resume_state is None and cfg["train"]["init"]:
        check_init(cfg["train"]["init"], task.name)
    return cfg, run_dir, resume_state


def run(
    task_name: str,
    *,
    config_file: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    out: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    device: str | None = None,
    steps: int | None = None,
    export: str | os.PathLike | None = None,
    stop_at: int | None = None,
    bar: BarFactory = null_bar,
    echo: Echo | None = None,
) -> TrainResult:
    """``kdiff train``: resolve the config, prepare (or resume) the run folder, train.

    With ``resume`` (a run folder or a checkpoint file) the run's saved config is the starting
    point (``config_file`` is refused), ``overrides``/``steps`` may still change it (e.g. a
    longer ``train.steps``; any change other than more steps breaks exact continuation), and
    the run folder is the checkpoint's unless ``out`` is given.
    """
    task = tasks_mod.get(task_name)
    dist = Dist.from_env()
    overrides = list(overrides)
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    if device is not None:
        overrides.append(f"train.device={device}")
    cfg, run_dir, resume_state = resolve_run(task, config_file, overrides, out, resume, export)

    # every rank must agree on the folder (the default name holds a timestamp)
    dist.init(pick_device(cfg["train"]["device"], dist.local_rank))
    try:
        run_dir = Path(dist.broadcast(str(run_dir.resolve())))
        if resume_state is None and (run_dir / CKPT_LATEST).exists():
            raise KdiffError(f"run folder {run_dir} already holds a run (continue it with --resume {run_dir}, or pick another --out)")
        if run_dir.exists() and not run_dir.is_dir():
            raise KdiffError(f"run folder {run_dir} is a file")
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            config_mod.save(cfg, run_dir / CONFIG_NAME, {"task": task.name, "kdiff_version": __version__})
            if echo:
                echo(f"run folder: {run_dir}" + (f" (resuming at step {resume_state['step']})" if resume_state else ""))
        dist.barrier()
        return fit(task, cfg, run_dir, dist=dist, resume_state=resume_state, stop_at=stop_at, export=export,
                   bar=bar, echo=echo)
    finally:
        dist.close()
