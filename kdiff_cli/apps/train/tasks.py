"""The trainable tasks by name (``kdiff train NAME``).

:data:`TASKS` maps a name to a factory returning a :class:`~kdiff_cli.apps.train.task_base.Task`
(the contract, re-exported here): ``dwdn`` and ``unrolled`` from
:mod:`kdiff_cli.apps.train.solver_tasks`; ``kernel-diff`` from
:mod:`kdiff_cli.apps.train.kernel_task` (class ``KernelDiffTask``), imported only when asked for.
Tasks import the contract, never this registry.
"""

from __future__ import annotations

import importlib
from typing import Callable

from kdiff_cli.apps.train.solver_tasks import DwdnTask, UnrolledTask
from kdiff_cli.apps.train.task_base import Task
from kdiff_cli.errors import KdiffError

__all__ = ["TASKS", "Task", "get"]


def _kernel_diff() -> Task:
    try:
        module = importlib.import_module("kdiff_cli.apps.train.kernel_task")
    except ModuleNotFoundError as e:
        if e.name == "kdiff_cli.apps.train.kernel_task":
            raise KdiffError("task 'kernel-diff' is not available in this build (kdiff_cli/apps/train/kernel_task.py is missing)") from None
        raise
    return module.KernelDiffTask()


#: task name -> factory
TASKS: dict[str, Callable[[], Task]] = {
    "kernel-diff": _kernel_diff,
    "dwdn": DwdnTask,
    "unrolled": UnrolledTask,
}


def get(name: str) -> Task:
    """The task called ``name``; an unknown name raises :class:`KdiffError` listing the known ones."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise KdiffError(f"unknown task {name!r} (choose from {', '.join(sorted(TASKS))})") from None
    return factory()
