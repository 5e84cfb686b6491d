"""Seeded, chunked, parallel kernel synthesis: the engine of ``kdiff synth-kernels``.

Kernels are made in fixed chunks of :data:`CHUNK`; chunk ``i`` draws from
``np.random.default_rng(np.random.SeedSequence([seed, i]))``, so a database depends only on
(generator, params, count, size, seed), never on the number of worker processes. Workers are
forked processes handing their chunks to a sink: :func:`synthesize` has them fill a shared
anonymous memory map (the array returned), :func:`kdiff_cli.apps.synth.run` has them write
straight into the output file (:class:`FileSink`) and return the chunk's CRC-32 (no kernels are
pickled or copied between processes).
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import mmap
import multiprocessing
import os
import signal
import warnings
import zlib
from typing import Any, Callable, Iterator

import numpy as np

from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.kernels import MIN_SIZE

#: kernels per chunk (each chunk has its own seed; changing this changes every database)
CHUNK = 512


# --------------------------------------------------------------------------- generators


def get_generator(generator: Any) -> tuple[str, Any]:
    """``(name, component)`` for a registered generator name or a generator object."""
    if isinstance(generator, str):
        from kdiff_cli import plugins

        return generator, plugins.get("generator", generator)
    if not callable(getattr(generator, "sample", None)):
        raise KdiffError(f"{generator!r} is not a kernel generator (it has no sample method)")
    return str(getattr(generator, "name", type(generator).__name__)), generator


# --------------------------------------------------------------------------- synthesis


def chunk_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of chunk ``index`` of a database with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _chunks(count: int) -> list[tuple[int, int, int]]:
    """``(index, start, n)`` of the chunks of a database of ``count`` kernels."""
    return [(i, start, min(CHUNK, count - start)) for i, start in enumerate(range(0, count, CHUNK))]


def _make_chunk(gen: Any, name: str, seed: int, index: int, count: int, size: int, params: dict) -> np.ndarray:
    k = np.asarray(gen.sample(chunk_rng(seed, index), count, size, **params))
    if k.shape != (count, size, size):
        raise KdiffError(f"generator {name!r} returned shape {k.shape}, expected {(count, size, size)}")
    if not np.isfinite(k.sum()):  # a NaN or infinity anywhere makes the sum non-finite
        raise KdiffError(f"generator {name!r} produced non-finite values")
    return k


class ArraySink:
    """Puts each chunk into ``out`` (shared memory when filled by forked workers)."""

    def __init__(self, out: np.ndarray):
        self.out = out

    def __call__(self, start: int, k: np.ndarray) -> None:
        self.out[start : start + len(k)] = k


class FileSink:
    """Writes each chunk, as ``dtype``, into an open file at ``offset`` (``os.pwrite``: from any
    process, in any order); returns the chunk's CRC-32."""

    def __init__(self, fd: int, offset: int, dtype: np.dtype):
        self.fd, self.offset, self.dtype = fd, offset, np.dtype(dtype)

    def __call__(self, start: int, k: np.ndarray) -> int:
        data = np.ascontiguousarray(k, dtype=self.dtype)
        raw = memoryview(data.reshape(-1)).cast("B")
        pos = self.offset + start * (raw.nbytes // max(len(k), 1))
        view = raw
        while view.nbytes:
            written = os.pwrite(self.fd, view, pos)
            view, pos = view[written:], pos + written
        return zlib.crc32(raw)


# The running job, inherited by the forked workers (the generator and sink need not pickle).
_JOB: dict[str, Any] = {}


#: signals the CLI turns into an exception (errors.handle_termination); held back while forking,
#: where an exception raised in an at-fork hook would be swallowed and the signal lost
_TERMINATING = {getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)}


def _worker_init() -> None:
    """Workers leave Ctrl-C and a hang-up to the parent, which cancels the pool and cleans up; a
    SIGTERM (the parent ending them) ends a worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERMINATING)  # blocked in the parent while it forked


def _worker(index: int, start: int, count: int) -> Any:
    job = _JOB
    k = _make_chunk(job["gen"], job["name"], job["seed"], index, count, job["size"], job["params"])
    return job["sink"](start, k)


def default_workers() -> int:
    """CPUs available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _effective_workers(workers: int, count: int) -> int:
    workers = max(1, min(int(workers), len(_chunks(count))))
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        return 1  # pragma: no cover - parallel workers need fork (Linux, macOS)
    return workers


def _check_args(count: int, size: int, seed: int) -> tuple[int, int, int]:
    if int(count) != count or count < 0:
        raise KdiffError(f"count must be a nonnegative integer, got {count}")
    if int(size) != size or size < MIN_SIZE:
        raise KdiffError(f"kernel size must be an integer >= {MIN_SIZE}, got {size}")
    if int(seed) != seed or seed < 0:
        raise KdiffError(f"seed must be a nonnegative integer, got {seed}")
    return int(count), int(size), int(seed)


def produce(
    generator: Any,
    count: int,
    size: int,
    seed: int,
    workers: int,
    params: dict[str, Any] | None,
    sink: Callable[[int, np.ndarray], Any],
) -> Iterator[tuple[int, int, Any]]:
    """Make the kernels chunk by chunk, handing each to ``sink(start, kernels)``.

    Yields ``(start, n, sink result)`` as chunks finish (in any order when ``workers > 1``). With
    several workers, the sink runs in forked processes: it must write to shared memory or a file.
    """
    name, gen = get_generator(generator)
    count, size, seed = _check_args(count, size, seed)
    params = dict(params or {})
    chunks = _chunks(count)
    workers = _effective_workers(workers, count)
    if workers == 1:
        for i, start, n in chunks:
            yield start, n, sink(start, _make_chunk(gen, name, seed, i, n, size, params))
        return
    _JOB.update(gen=gen, name=name, seed=seed, size=size, params=params, sink=sink)
    gc.freeze()  # the workers' garbage collector then skips (and does not copy) the parent's objects
    pool = None
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _TERMINATING)  # delivered once the workers exist
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                pool = cf.ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
                )
                futures = {pool.submit(_worker, i, start, n): (start, n) for i, start, n in chunks}
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fut in cf.as_completed(futures):
            yield (*futures[fut], fut.result())
    except cf.process.BrokenProcessPool as e:
        raise KdiffError(f"a kernel worker process died ({e}); try --workers 1") from None
    except BaseException:  # interrupted or terminated: end the workers now, not after their chunks
        if pool is not None:  # SIGKILL: a worker still starting has the parent's Python handlers
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()
        _JOB.clear()


def synthesize(
    generator: Any,
    count: int,
    size: int,
    seed: int,
    workers: int = 1,
    params: dict[str, Any] | None = None,
    callback: Callable[[int], None] | None = None,
    dtype: Any = np.float64,
) -> np.ndarray:
    """``count`` kernels ``(count, size, size)`` of ``dtype`` from a generator (name or object).

    seed: nonnegative int; chunk i of :data:`CHUNK` kernels is drawn with :func:`chunk_rng`.
    workers: processes (forked; 1 runs in this process); the result does not depend on it.
    params: generator parameters (keyword arguments of its ``sample``).
    callback: called with the number of kernels finished, after each chunk.
    """
    count, size, seed = _check_args(count, size, seed)
    dtype = np.dtype(dtype)
    if _effective_workers(workers, count) == 1:
        out = np.empty((count, size, size), dtype=dtype)
    else:  # shared anonymous memory, inherited by the forked workers; the array keeps it alive
        buffer = mmap.mmap(-1, count * size * size * dtype.itemsize)
        out = np.frombuffer(buffer, dtype=dtype).reshape(count, size, size)
    for _, n, _ in produce(generator, count, size, seed, workers, params, ArraySink(out)):
        if callback is not None:
            callback(n)
    return out
