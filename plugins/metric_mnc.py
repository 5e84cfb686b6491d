"""MNC of the estimated kernel against the true kernel (the paper's Table 2)."""

from kdiff_cli.maths import metrics
from kdiff_cli.hookspecs import hookimpl


class MNC:
    name = "mnc"
    description = "maximum of normalised cross-correlation of the kernel (higher is better)"
    target = "kernel"
    higher_is_better = True

    def compute(self, estimate, reference) -> float:
        return metrics.mnc(estimate, reference)


@hookimpl
def register_metrics(register):
    register(MNC())
