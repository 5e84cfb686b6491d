"""The building blocks of a training run (:mod:`kdiff_cli.apps.train.loop` puts them together).

* devices and processes: :func:`pick_device`, :class:`Dist` (this process's place under
  ``torchrun``: DistributedDataParallel, gloo on the CPU, nccl on CUDA);
* random streams: :class:`Rngs` (numpy data, torch noise/task, the globals), saved per process;
* :class:`EMA` of the weights, the learning-rate multiplier :func:`lr_factor` (linear warmup then
  cosine/linear/constant), :func:`autocast` (bf16 on the CPU, AMP on CUDA);
* early checks of the ``[train]`` values and of ``train.init``;
* checkpoints: atomic ``torch.save``, read back with ``weights_only=True`` (plain data and tensors,
  no code); they stay in the run folder and are never shipped (shipped weights are safetensors,
  see :mod:`kdiff_cli.weights`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch

from kdiff_cli import limits
from kdiff_cli import weights as weights_mod
from kdiff_cli.device import resolve_device
from kdiff_cli.errors import KdiffError
from kdiff_cli.files import atomic_path

CKPT_LATEST = "ckpt-latest.pt"
CKPT_FORMAT = "kdiff-checkpoint-1"
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")


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
    check_data_sizes(cfg["data"])


#: memory per pixel of a training crop, lower bound: x, y and their blur temporaries (3 channels,
#: float32) and the network's activations with gradients (a small model's; larger ones need more)
TRAIN_BYTES_PER_CROP_PIXEL = 1024


def check_data_sizes(d: dict) -> None:
    """``data.kernel_size`` against the kernel size limit; a step's crops, the kernel bank and the
    validation crops against the memory available (:mod:`kdiff_cli.limits`)."""
    if d["kernel_size"] < 1:
        raise KdiffError(f"data.kernel_size must be at least 1, got {d['kernel_size']}")
    limits.check_kernel_size(d["kernel_size"], "data.kernel_size")
    crop, batch, ks = d["crop"], d["batch"], d["kernel_size"]
    if crop < 1:
        raise KdiffError(f"data.crop must be positive, got {crop}")
    need = (TRAIN_BYTES_PER_CROP_PIXEL * batch * crop * crop  # one step
            + 4 * max(d["bank"], 0) * ks * ks  # the kernel bank (float32)
            + 2 * 3 * 4 * max(d["val_count"], 0) * crop * crop)  # validation x and y (float32 RGB)
    limits.check_memory(need, f"data.batch {batch} of data.crop {crop} (data.kernel_size {ks}, data.bank {d['bank']}, "
                              f"data.val_count {d['val_count']})", "lower data.batch, data.crop, data.bank or data.val_count")


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
