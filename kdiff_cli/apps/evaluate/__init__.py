"""The evaluation engine behind ``kdiff eval``: run methods on a dataset, score, cache, report.

One concern per module:

* :mod:`.specs`: what runs and what scores (``--method``, ``--method-opt``, ``--metric``);
* :mod:`.store`: per-(method, image) results under ``out/<method>/`` (the resume cache);
* :mod:`.report`: the table, ``metrics.json`` and ``metrics.csv``;
* :mod:`.runner`: running a method on an item, the loop, :func:`plan` and :func:`run` for the CLI.

``grid.png`` (the paper's Figure 4) is drawn by :mod:`kdiff_cli.apps.analysis.grid`. The names
below are this package's API (``kdiff_cli.cli`` calls :func:`plan` and :func:`run`); the rest is
imported from its module.
"""

from kdiff_cli.apps.evaluate.report import Report
from kdiff_cli.apps.evaluate.runner import Plan, evaluate, method_generator, plan, run, run_method
from kdiff_cli.apps.evaluate.specs import MethodSpec, parse_methods
from kdiff_cli.params import parse_value

__all__ = [
    "MethodSpec", "Plan", "Report", "evaluate", "method_generator", "parse_methods", "parse_value", "plan", "run",
    "run_method",
]
