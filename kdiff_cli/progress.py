"""Terminal UI: rich progress bars and tables. The only module that imports rich.

Engine code reports progress through plain callbacks; commands wrap them with :func:`task_bar`.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)
stdout_console = Console()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title)
    for c in columns:
        table.add_column(str(c))
    for r in rows:
        table.add_row(*[str(v) for v in r])
    stdout_console.print(table)


@contextlib.contextmanager
def task_bar(description: str, total: int | None, unit: str = "it") -> Iterator[Callable[..., None]]:
    """A progress bar; yields ``update(advance=1, **fields)`` where fields show as ``key=value``.

    Hidden (no-op) when stderr is not a terminal, unless KDIFF_PROGRESS=1.
    """
    import os

    enabled = console.is_terminal or os.environ.get("KDIFF_PROGRESS") == "1"
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )
    import time

    start = time.perf_counter()
    with progress:
        task = progress.add_task(description, total=total, rate="", info="")

        def update(advance: float = 1, total: float | None = None, **fields) -> None:
            done = progress.tasks[0].completed + advance
            elapsed = max(time.perf_counter() - start, 1e-9)
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            extra = {"total": total} if total is not None else {}
            progress.update(task, advance=advance, rate=f"{done / elapsed:,.1f} {unit}/s", info=info, **extra)

        yield update
