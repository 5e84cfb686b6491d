"""Size guards: what a size option implies in memory and on disk, checked before anything is allocated.

Every size a user gives (a kernel side, a count, a crop, a batch, a tile, a number of samples) is
checked here against the memory or disk space it implies, so that a typo such as ``--size 100000``
is a one-line error naming the limit and how to raise it, not a ``MemoryError`` traceback, an
out-of-memory kill or a file of many gigabytes.

* :func:`check_kernel_size`: a kernel side is at most :data:`MAX_KERNEL_SIZE` pixels (1024), or
  ``$KDIFF_MAX_KERNEL_SIZE``.
* :func:`check_memory`: an estimate against the memory available: ``$KDIFF_MEMORY_LIMIT`` (bytes,
  or a number with K, M, G or T, powers of 1024) when set, else Linux's ``MemAvailable`` (and the
  cgroup's limit, when lower). Where neither is known the check passes.
* :func:`check_disk`: bytes to write against the free space of the target's file system.

The estimates are lower bounds (the arrays the work cannot do without), so a refused size would
certainly not have fitted; each caller documents its estimate.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from kdiff_cli.errors import KdiffError

#: the largest kernel side (pixels) accepted without ``$KDIFF_MAX_KERNEL_SIZE``
MAX_KERNEL_SIZE = 1024
#: environment variables that raise the limits
KERNEL_SIZE_ENV = "KDIFF_MAX_KERNEL_SIZE"
MEMORY_ENV = "KDIFF_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def human(nbytes: float) -> str:
    """``nbytes`` as ``"1.5 GiB"`` (binary units)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover - unreachable


def parse_bytes(text: str, where: str = MEMORY_ENV) -> int:
    """``"64G"``, ``"512M"``, ``"1.5T"`` or a plain number of bytes; anything else is an error."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise KdiffError(f"{where} must be a size such as 64G or 512M, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def max_kernel_size() -> int:
    """The kernel side limit: ``$KDIFF_MAX_KERNEL_SIZE`` or :data:`MAX_KERNEL_SIZE`."""
    text = os.environ.get(KERNEL_SIZE_ENV, "").strip()
    if not text:
        return MAX_KERNEL_SIZE
    try:
        value = int(text)
    except ValueError:
        raise KdiffError(f"{KERNEL_SIZE_ENV} must be an integer, got {text!r}") from None
    if value < 1:
        raise KdiffError(f"{KERNEL_SIZE_ENV} must be >= 1, got {value}")
    return value


def check_kernel_size(size: int, option: str) -> int:
    """``size`` if it is at most the kernel side limit, else a one-line error naming ``option``."""
    limit = max_kernel_size()
    if size > limit:
        raise KdiffError(
            f"{option} {size} is over the kernel size limit of {limit} pixels "
            f"(set {KERNEL_SIZE_ENV}={size} to allow it)"
        )
    return size


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (containers, job schedulers), None without one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes the guards treat as available: ``$KDIFF_MEMORY_LIMIT`` or what the system reports (None: unknown)."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        return parse_bytes(text)
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None


def check_memory(nbytes: float, what: str, remedy: str) -> None:
    """A one-line error when ``what`` needs more than the available memory.

    ``what`` names the options (``"--count 10 --size 4096"``), ``remedy`` says what to lower.
    """
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise KdiffError(
            f"{what} needs at least {human(nbytes)} of memory, {human(avail)} is available; {remedy} "
            f"(or set {MEMORY_ENV} to the memory you can really spare, e.g. {MEMORY_ENV}={_round_up(nbytes)})"
        )


def check_disk(path: str | os.PathLike, nbytes: float, what: str, remedy: str) -> None:
    """A one-line error when writing ``nbytes`` beside ``path`` would not fit on its file system."""
    folder = Path(path).parent if not Path(path).is_dir() else Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if nbytes > free:
        raise KdiffError(f"{what} writes {human(nbytes)}, but {folder} has {human(free)} free; {remedy}")


def _round_up(nbytes: float) -> str:
    """A generous ``KDIFF_MEMORY_LIMIT`` value covering ``nbytes`` (``"75G"``)."""
    for unit in ("G", "T"):
        value = nbytes / _UNITS[unit]
        if value < 1024 or unit == "T":
            return f"{int(value) + 1}{unit}"
    return f"{int(nbytes)}"  # pragma: no cover - unreachable


__all__ = [
    "MAX_KERNEL_SIZE", "KERNEL_SIZE_ENV", "MEMORY_ENV", "human", "parse_bytes", "max_kernel_size",
    "check_kernel_size", "available_memory", "check_memory", "check_disk",
]
