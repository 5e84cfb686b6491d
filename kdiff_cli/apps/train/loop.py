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
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator

import numpy as np
import torch

from kdiff_cli import __version__
from kdiff_cli import config as config_mod
from kdiff_cli.apps.train import data as data_mod
from kdiff_cli.apps.train import tasks as tasks_mod
from kdiff_cli import weights as weights_mod
from kdiff_cli.device import resolve_device
from kdiff_cli.files import atomic_path
from kdiff_cli.errors import KdiffError

CKPT_LATEST = "ckpt-latest.pt"
CKPT_FORMAT = "kdiff-checkpoint-1"
CONFIG_NAME = "config.toml"
LOG_NAME = "log.csv"
PLOT_NAME = "loss.png"
EMA_NAME = "ema.safetensors"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")
TRAIN_FIELDS = ["step", "loss", "lr", "grad_norm", "it_per_s", "elapsed_s"]

#: ``bar(description, total)`` -> context manager yielding ``update(advance=1, **fields)``
BarFactory = Callable[[str, int], ContextManager[Callable[..., None]]]
Echo = Callable[[str], None]


@contextlib.contextmanager
def null_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    yield lambda advance=1, **fields: None


# --------------------------------------------------------------------------- device, processes


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """:func:`kdiff_cli.device.resolve_device`, with CUDA ranks spread over the visible GPUs."""
    if name not in DEVICES:
        raise KdiffError(f"unknown device {name!r} (choose from {', '.join(DEVICES)})")
    device = resolve_device(name)
    if device.type == "cuda":
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return device


@dataclass
class Dist:
    """This process's place under ``torchrun`` (world_size 1 without it)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        if not self.enabled or torch.distributed.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world_size


# --------------------------------------------------------------------------- RNG states


@dataclass
class Rngs:
    """The random generators of one process: data (numpy), noise/task (torch), and the globals."""

    numpy: np.random.Generator
    torch: torch.Generator

    @classmethod
    def seeded(cls, seed: int, rank: int) -> "Rngs":
        ss = np.random.SeedSequence([seed, rank])
        torch_seed, global_seed = (int(v) for v in ss.generate_state(2, np.uint64) >> np.uint64(1))
        random.seed(global_seed)
        torch.manual_seed(global_seed)  # dropout & co. (model init is seeded separately)
        return cls(np.random.default_rng(ss), torch.Generator().manual_seed(torch_seed))

    def state(self) -> dict[str, Any]:
        s = {
            "numpy": self.numpy.bit_generator.state,
            "torch": self.torch.get_state(),
            "torch_global": torch.get_rng_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            s["cuda"] = torch.cuda.get_rng_state_all()
        return s

    def restore(self, s: dict[str, Any]) -> None:
        self.numpy.bit_generator.state = s["numpy"]
        self.torch.set_state(s["torch"])
        torch.set_rng_state(s["torch_global"])
        random.setstate(_tuples(s["python"]))
        if "cuda" in s and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(s["cuda"])


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


# --------------------------------------------------------------------------- EMA, schedule, precision


class EMA:
    """Exponential moving average of a model's weights: ``ema <- d ema + (1 - d) w`` with
    ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates; buffers are copied."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise KdiffError(f"train.ema_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, n: int) -> None:
        d = min(self.decay, (1 + n) / (10 + n))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


def lr_factor(step: int, steps: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier before optimisation step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def autocast(device: torch.device, precision: str) -> ContextManager:
    """The autocast context of ``train.precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "mps":
        raise KdiffError('train.precision must be "fp32" on mps')
    if device.type == "cpu" and precision == "fp16":
        raise KdiffError('train.precision = "fp16" needs CUDA; use "bf16" on the CPU')
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def check_init(name_or_path: str, task_name: str) -> Path:
    """The path of ``train.init``, checked from its header: a missing file or another task's
    weights is an error naming it (before the run folder is made)."""
    path = weights_mod.resolve(name_or_path)
    _, meta = weights_mod.read(path, tensors=False)
    if meta.get("task") not in (None, task_name):
        raise KdiffError(f"train.init: {path} holds {meta['task']!r} weights, not {task_name!r}")
    return path


def check_train_config(cfg: dict) -> None:
    """Early checks of the ``[train]`` values (before any data or model is built)."""
    t = cfg["train"]
    if t["precision"] not in PRECISIONS:
        raise KdiffError(f"unknown train.precision {t['precision']!r} (choose from {', '.join(PRECISIONS)})")
    if t["schedule"] not in SCHEDULES:
        raise KdiffError(f"unknown train.schedule {t['schedule']!r} (choose from {', '.join(SCHEDULES)})")
    if t["device"] not in DEVICES:
        raise KdiffError(f"unknown train.device {t['device']!r} (choose from {', '.join(DEVICES)})")
    for key in ("steps", "log_every"):
        if t[key] < 1:
            raise KdiffError(f"train.{key} must be at least 1, got {t[key]}")
    for key in ("warmup", "val_every", "ckpt_every", "keep_every", "threads"):
        if t[key] < 0:
            raise KdiffError(f"train.{key} must be >= 0, got {t[key]}")
    if t["lr"] <= 0:
        raise KdiffError(f"train.lr must be positive, got {t['lr']}")
    if len(t["betas"]) != 2:
        raise KdiffError(f"train.betas must have two values, got {t['betas']}")
    if cfg["seed"] < 0:
        raise KdiffError(f"seed must be >= 0, got {cfg['seed']}")
    if cfg["data"]["batch"] < 1:
        raise KdiffError(f"data.batch must be at least 1, got {cfg['data']['batch']}")


# --------------------------------------------------------------------------- checkpoints


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's ``ckpt-latest.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / CKPT_LATEST
        if not p.is_file():
            raise KdiffError(f"no checkpoint in run folder {path} (expected {CKPT_LATEST})")
    elif not p.is_file():
        raise KdiffError(f"checkpoint not found: {path}")
    return p


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace`` (atomic)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint (``weights_only``: plain data and tensors only, no code)."""
    path = find_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise KdiffError(f"cannot read checkpoint {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise KdiffError(f"{path} is not a kdiff checkpoint")
    return state


# --------------------------------------------------------------------------- log and plot


class CsvLog:
    """``log.csv``: training rows every ``log_every`` steps, validation columns when measured.

    Opening it for a resumed run drops rows past the resumed step (written after the
    checkpoint by the interrupted session) and widens the header when new columns appear.
    """

    def __init__(self, path: Path, start_step: int):
        self.path = path
        self.fields: list[str] = list(TRAIN_FIELDS)
        self.rows: list[dict[str, str]] = []
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or TRAIN_FIELDS)
                self.rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
        self._rewrite()

    def _rewrite(self) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, self.fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(self.rows)

    @property
    def val_names(self) -> list[str]:
        return [f[4:] for f in self.fields if f.startswith("val_")]

    def write(self, row: dict[str, Any]) -> None:
        text = {k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in row.items()}
        self.rows.append(text)
        new = [k for k in text if k not in self.fields]
        if new:
            self.fields += new
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(text)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        steps, values = [], []
        for r in self.rows:
            if r.get(key) not in (None, ""):
                steps.append(int(r["step"]))
                values.append(float(r[key]))
        return steps, values


def plot_log(log: CsvLog, path: Path, title: str) -> Path:
    """The loss curve (log scale) and the headline validation metric, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    s, v = log.series("loss")
    if s:
        ax.plot(s, v, color="tab:blue", lw=1, label="train loss")
        if min(v) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_title(title)
    names = log.val_names
    if names:
        vs, vv = log.series("val_" + names[0])
        if vs:
            ax2 = ax.twinx()
            ax2.plot(vs, vv, "o-", color="tab:orange", ms=3, label=f"val {names[0]}")
            ax2.set_ylabel(f"val {names[0]}", color="tab:orange")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def machine_info(device: torch.device, world_size: int) -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # steps done in total
    steps: int  # train.steps
    wall_time_s: float  # training time over all sessions
    val: dict[str, float] = field(default_factory=dict)
    weights: Path | None = None  # ema.safetensors in the run folder
    exported: Path | None = None


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def fit(
    task: tasks_mod.Task,
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

    # model (identical init on every rank), EMA, optimizer, schedule
    torch.manual_seed(cfg["seed"])
    model = task.build_model(cfg).to(device)
    ema = EMA(model, t["ema_decay"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"], weight_decay=t["weight_decay"])
    steps, warmup, schedule, min_ratio = t["steps"], t["warmup"], t["schedule"], t["min_lr_ratio"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, schedule, min_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=(t["precision"] == "fp16" and device.type == "cuda"))
    rngs = Rngs.seeded(cfg["seed"], dist.rank)

    step, wall_before, last_val = 0, 0.0, {}
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        ema.module.load_state_dict(resume_state["ema"])
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        if resume_state["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(resume_state["scaler"])
        step, wall_before = int(resume_state["step"]), float(resume_state["wall_time_s"])
        last_val = dict(resume_state.get("val", {}))
        saved = resume_state["rng"]
        if len(saved) == dist.world_size:
            rngs.restore(saved[dist.rank])
        else:  # another process count: fresh streams for this step (not an exact continuation)
            rngs = Rngs.seeded(cfg["seed"] + 1_000_003 * step, dist.rank)
            echo(f"note: checkpoint from {len(saved)} processes, now {dist.world_size}: new random streams")
    elif t["init"]:  # fine-tune: model and EMA start from a weights file of the same task
        path = weights_mod.resolve(t["init"])  # checked by run(): check_init
        weights_mod.load_state(model, weights_mod.read(path)[0], path)
        ema.module.load_state_dict(model.state_dict())
        echo(f"initialised from {path}")
    stop = steps if stop_at is None else min(stop_at, steps)

    net: torch.nn.Module = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if d["bank"] > 0:
        from kdiff_cli.apps.train import device_data

        source = device_data.from_config(d, device, cfg["seed"])
    else:
        source = data_mod.from_config(d)
    val_batches = [_to(b, device) for b in data_mod.validation_batches(d)] if dist.main else []
    log = CsvLog(run_dir / LOG_NAME, step) if dist.main else None
    title = f"kdiff train {task.name}"

    def validate() -> dict[str, float]:
        if not val_batches:
            return {}
        ema.module.eval()
        with torch.no_grad():
            g = torch.Generator().manual_seed(d["val_seed"])
            return {k: float(v) for k, v in task.validate(ema.module, val_batches, cfg, g).items()}

    def checkpoint(at: int, wall: float) -> None:
        states = dist.gather(rngs.state())
        if not dist.main:
            return
        state = {
            "format": CKPT_FORMAT, "kdiff_version": __version__, "task": task.name, "step": at,
            "config": cfg, "model": model.state_dict(), "ema": ema.module.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "rng": states, "wall_time_s": wall, "val": last_val, "world_size": dist.world_size,
        }
        save_checkpoint(run_dir / CKPT_LATEST, state)
        if t["keep_every"] and at % t["keep_every"] == 0:
            save_checkpoint(run_dir / f"ckpt-{at:07d}.pt", state)

    session_start = time.perf_counter()
    if dist.main and log is not None and val_batches and (step == 0 or not log.val_names):
        last_val = validate()
        log.write({"step": step, **{f"val_{k}": v for k, v in last_val.items()}})
    dist.barrier()

    shown: dict[str, float] = {}
    loss_sum, gn_sum, n_sum = 0.0, 0.0, 0
    t_last, step_last = time.perf_counter(), step
    budget_from, budget_t0 = step, time.perf_counter()
    with bar(f"train {task.name}" + (f" (from step {step})" if step else ""), stop - step) as update:
        while step < stop:
            net.train()
            batch = source.sample(d["batch"], rngs.numpy, rngs.torch, device=device)
            with amp:
                loss = task.loss(net, batch, rngs.torch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t["grad_clip"] > 0:
                scaler.unscale_(opt)
                gn = torch.nn.utils.clip_grad_norm_(params, t["grad_clip"])
                gn_sum += float(gn)
            scaler.step(opt)
            scaler.update()
            sched.step()
            ema.update(model, step)
            step += 1
            if t["time_budget_s"] > 0 and step - budget_from == BUDGET_PROBE_STEPS:
                steps = budget_steps(step, steps, time.perf_counter() - budget_t0, session_start, t["time_budget_s"])
                stop = min(stop, steps)
                cfg["train"]["steps"] = steps  # checkpoints and weights record the schedule actually run
                echo(f"time budget {t['time_budget_s']} s: training to step {steps}")
            loss_sum += float(loss.detach())
            n_sum += 1

            row: dict[str, Any] = {}
            if step % t["log_every"] == 0 or step == stop:
                now = time.perf_counter()
                mean_loss = dist.mean(loss_sum / n_sum)
                if not math.isfinite(mean_loss):
                    raise KdiffError(f"training diverged: loss is {mean_loss} at step {step} "
                                     '(try a lower train.lr, train.grad_clip, or train.precision = "fp32")')
                row = {"step": step, "loss": mean_loss, "lr": opt.param_groups[0]["lr"],
                       "grad_norm": gn_sum / n_sum if t["grad_clip"] > 0 else "",
                       "it_per_s": (step - step_last) / max(now - t_last, 1e-9),
                       "elapsed_s": wall_before + now - session_start}
                shown["loss"] = mean_loss
                loss_sum, gn_sum, n_sum, t_last, step_last = 0.0, 0.0, 0, now, step
            if dist.main and val_batches and ((t["val_every"] and step % t["val_every"] == 0) or step == steps):
                last_val = validate()
                row.update({"step": step, **{f"val_{k}": v for k, v in last_val.items()}})
                if last_val:
                    k0 = next(iter(last_val))
                    shown[k0] = last_val[k0]
            if log is not None and row:
                log.write(row)
                if any(k.startswith("val_") for k in row):
                    plot_log(log, run_dir / PLOT_NAME, title)
            if (t["ckpt_every"] and step % t["ckpt_every"] == 0) or step == stop:
                checkpoint(step, wall_before + time.perf_counter() - session_start)
            update(1, lr=opt.param_groups[0]["lr"], **shown)

    wall = wall_before + time.perf_counter() - session_start
    result = TrainResult(run_dir, step, steps, wall, last_val)
    if dist.main:
        if log is not None:
            plot_log(log, run_dir / PLOT_NAME, title)
        meta = {
            "task": task.name, "kdiff_version": __version__, "steps": step, "wall_time_s": round(wall, 3),
            "machine": machine_info(device, dist.world_size), "validation": last_val, "config": cfg,
            **task.weights_metadata(cfg),
        }
        state = {k: v.detach().clone() for k, v in ema.module.state_dict().items()}
        result.weights = weights_mod.save(run_dir / EMA_NAME, state, meta)
        if export:
            result.exported = weights_mod.save(export, state, meta)
    dist.barrier()
    return result


# --------------------------------------------------------------------------- a run, from the CLI


#: steps timed before ``train.time_budget_s`` sets the step count
BUDGET_PROBE_STEPS = 50


def budget_steps(step: int, steps: int, probe_s: float, session_start: float, budget_s: float) -> int:
    """The total step count that ends the session about ``budget_s`` after ``session_start``,
    given that the last :data:`BUDGET_PROBE_STEPS` steps took ``probe_s`` (never above ``steps``,
    never below ``step``). Validation and checkpoints are not counted: leave them a margin."""
    rate = BUDGET_PROBE_STEPS / max(probe_s, 1e-9)
    left = budget_s - (time.perf_counter() - session_start)
    return int(min(steps, max(step, step + rate * left)))


def default_run_dir(task_name: str) -> Path:
    return Path("runs") / f"{task_name}-{time.strftime('%Y%m%d-%H%M%S')}"


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
