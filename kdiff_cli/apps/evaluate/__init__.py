"""The evaluation engine behind ``kdiff eval``: run methods on a dataset, score, cache, report.

One concern per module:

* :mod:`.specs`: what runs and what scores (``--method``, ``--method-opt``, ``--metric``);
* :mod:`.store`: per-(method, image) results under ``out/<method>/`` (the resume cache);
* :mod:`.report`: the table, ``metrics.json`` and ``metrics.csv``;
* :mod:`.run`: running a method on an item, the loop, :func:`plan` and :func:`run` for the CLI.

``grid.png`` (the paper's Figure 4) is drawn by :mod:`kdiff_cli.apps.analysis.grid`. The names
below are this package's API (``kdiff_cli.cli`` calls :func:`plan` and :func:`run`).
"""

from kdiff_cli.apps.analysis.grid import GRID_TILE, write_grid
from kdiff_cli.apps.evaluate.report import NOT_APPLICABLE, UNAVAILABLE, Report, versions, write_reports
from kdiff_cli.apps.evaluate.specs import MethodSpec, MetricSpec, default_methods, parse_methods, resolve_metrics, score
from kdiff_cli.apps.evaluate.store import Record, Store
from kdiff_cli.apps.evaluate.runner import CONTEXT_KEYS, Plan, evaluate, method_generator, plan, run, run_method
from kdiff_cli.params import parse_pairs, parse_value
from kdiff_cli.solvers import cached_solver as get_solver

__all__ = [
    "CONTEXT_KEYS", "GRID_TILE", "NOT_APPLICABLE", "UNAVAILABLE", "MethodSpec", "MetricSpec", "Plan", "Record", "Report",
    "Store", "default_methods", "evaluate", "get_solver", "method_generator", "parse_methods", "parse_pairs",
    "parse_value", "plan", "resolve_metrics", "run", "run_method", "score", "versions", "write_grid", "write_reports",
]
