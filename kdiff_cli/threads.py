"""Independent computations at once: the CPU's torch threads shared, a failure stopping the others.

Kernel estimation has pieces that do not depend on each other (the classical candidate beside
Stage I; the coarse passes at two scales). Each is a chain of small FFTs that one core runs as fast
as two (``kdiff_cli.maths.alternating`` pins itself to one thread), so on the 2-core CPU running
them at once nearly halves the time. :func:`concurrently` runs the first task on the calling thread
(grad mode and other thread-local torch state stay the caller's) and the others on worker threads;
every task gets a ``check`` function to call between its rounds, which raises :class:`Stopped` once
another task failed or the caller was interrupted (Ctrl-C), so nothing keeps running behind an error.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import torch


class Stopped(Exception):
    """A task abandoned because another one failed or was interrupted."""


@contextlib.contextmanager
def cpu_threads(device: torch.device, count: int) -> Iterator[int]:
    """Run the block on ``count`` intra-op CPU threads, then restore the previous count (also when
    the block's own code changed it meanwhile); other devices are left alone. Yields the count."""
    if device.type != "cpu":
        yield torch.get_num_threads()
        return
    n = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(n)


def split_threads(device: torch.device, ways: int = 2) -> contextlib.AbstractContextManager[int]:
    """Share the CPU's intra-op threads between ``ways`` computations run at once: ``max(1, n // ways)``
    threads for the block (:func:`cpu_threads`), ``n`` again after it."""
    return cpu_threads(device, max(1, torch.get_num_threads() // ways))


def checked(callback: Callable[..., Any] | None, check: Callable[[], None]) -> Callable[..., None]:
    """A progress callback for a task of :func:`concurrently`: ``check()`` first (raising
    :class:`Stopped` when the task should stop), then ``callback`` (None: nothing reported)."""

    def report(*args: Any) -> None:
        check()
        if callback is not None:
            callback(*args)

    return report


def concurrently(device: torch.device, *tasks: Callable[[Callable[[], None]], Any]) -> list[Any]:
    """Run ``tasks`` (each ``task(check)``) at once and return their results in order.

    The first runs on the calling thread, the others on worker threads; the CPU threads are split
    between them (:func:`split_threads`). An exception in any task (or KeyboardInterrupt) is
    raised here after the others have stopped at their next ``check()``.
    """
    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise Stopped

    if len(tasks) == 1:
        return [tasks[0](check)]

    def on_done(future) -> None:  # a worker's failure stops the caller's task and the other workers
        if future.exception() is not None:
            stop.set()

    with split_threads(device, len(tasks)), ThreadPoolExecutor(len(tasks) - 1, thread_name_prefix="kdiff") as pool:
        futures = [pool.submit(task, check) for task in tasks[1:]]
        for future in futures:
            future.add_done_callback(on_done)
        try:
            first = tasks[0](check)
            return [first] + [f.result() for f in futures]
        except Stopped:
            for f in futures:  # the worker's own error, not the Stopped it caused here
                error = f.exception() if f.done() else None
                if error is not None and not isinstance(error, Stopped):
                    raise error from None
            raise
        except BaseException:
            stop.set()
            raise


__all__ = ["Stopped", "cpu_threads", "split_threads", "checked", "concurrently"]
