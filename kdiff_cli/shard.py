"""Splitting a run across processes: ``--shard i/n`` (job arrays) or ``torchrun`` (torch.distributed).

A :class:`Shard` says which share of the inputs this process takes: every ``count``-th input
starting at ``index`` (interleaved, so images of one kind spread over the processes). Under
``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the shard is the process's rank, a ``gloo``
process group is started for the barrier and for gathering what the ranks did, and rank 0
writes the merged outputs. With ``--shard`` the processes never talk to each other: each writes
its own share, and the outputs that span all inputs are written by whichever finds the work
complete (``kdiff eval``) or per shard (``kdiff deblur``'s report).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from kdiff_cli.errors import KdiffError

T = TypeVar("T")

ENV_WORLD = "WORLD_SIZE"
ENV_RANK = "RANK"
ENV_LOCAL_RANK = "LOCAL_RANK"


@dataclass(frozen=True)
class Shard:
    """This process's share: inputs ``index``, ``index + count``, ... (``index`` from 0)."""

    index: int = 0
    count: int = 1
    distributed: bool = False  # torchrun: a process group links the ranks
    local_rank: int = 0  # torchrun: the rank on this machine (its GPU)

    @property
    def main(self) -> bool:
        """The process that writes merged outputs (rank 0; every process when there is one)."""
        return self.index == 0

    @property
    def label(self) -> str:
        """``i/n`` as typed (``i`` from 1)."""
        return f"{self.index + 1}/{self.count}"

    def take(self, items: Sequence[T]) -> list[T]:
        return list(items[self.index :: self.count])

    def device(self, device: str) -> str:
        """Under torchrun a bare ``cuda`` (or ``auto`` on a CUDA machine) is this rank's GPU."""
        if not self.distributed or device not in ("cuda", "auto"):
            return device
        import torch

        if device == "auto" and not torch.cuda.is_available():
            return device
        return f"cuda:{self.local_rank % max(1, torch.cuda.device_count())}"

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` in rank order (just ``[obj]`` without torchrun)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.count
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


SINGLE = Shard()


def parse(text: str) -> Shard:
    """``"i/n"`` with 1 <= i <= n -> the shard (index i - 1 of n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise KdiffError(f"--shard must be I/N (this process's share, e.g. 1/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise KdiffError(f"--shard {text}: I must be between 1 and N (N >= 1)")
    return Shard(i - 1, n)


def from_env(environ: dict[str, str] | None = None) -> Shard | None:
    """The torchrun rank from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; None outside torchrun."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get(ENV_WORLD, "1"))
        rank = int(env.get(ENV_RANK, "0"))
        local = int(env.get(ENV_LOCAL_RANK, str(rank)))
    except ValueError:
        raise KdiffError(f"{ENV_WORLD}/{ENV_RANK} must be integers (as torchrun sets them)") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise KdiffError(f"{ENV_RANK}={rank} is outside 0..{world - 1} ({ENV_WORLD}={world})")
    return Shard(rank, world, distributed=True, local_rank=local)


def resolve(text: str | None) -> Shard:
    """The shard of this process: ``--shard`` or torchrun's rank (starting its process group)."""
    env = from_env()
    if env is not None:
        if text is not None:
            raise KdiffError("--shard and torchrun both split the inputs; use one of them")
        import torch.distributed as dist

        if not dist.is_initialized():
            try:
                dist.init_process_group("gloo")
            except (RuntimeError, ValueError) as e:  # MASTER_ADDR missing, port taken, ...
                raise KdiffError(f"torchrun: cannot start the process group: {str(e).splitlines()[0]}") from None
        return env
    return SINGLE if text is None else parse(text)
