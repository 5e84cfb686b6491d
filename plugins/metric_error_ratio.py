"""Levin et al. (2009) error ratio of a kernel estimate, and the success rate at ratio <= 3.

Both images are deconvolved from ``y`` by the same non-blind solver (``wiener``), one with the
estimated kernel and one with the true kernel (the dataset's, orientation and shift fitted to the
pair: :mod:`kdiff_cli.maths.groundtruth`); the ratio of their SSDs to the ground truth, each after
the best integer alignment within ``max_shift`` pixels over the interior ``border`` pixels in (the
shared :func:`kdiff_cli.maths.metrics.align`), is 1 for a perfect kernel estimate.
"""

import numpy as np

from kdiff_cli import plugins
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths import metrics


class ErrorRatio:
    name = "error-ratio"
    description = "Levin et al. error ratio SSD(k_est)/SSD(k_true) and success rate at <= 3 (lower is better)"
    target = "item"
    higher_is_better = False
    solver = "wiener"
    success_threshold = 3.0
    params = {"max_shift": metrics.ALIGN_MAX_SHIFT, "border": metrics.ALIGN_BORDER}

    def available(self, weights_dir=None) -> str | None:
        return None if self.solver in plugins.names("solver") else f"needs the {self.solver!r} solver plugin"

    def validate_options(self, max_shift=metrics.ALIGN_MAX_SHIFT, border=metrics.ALIGN_BORDER) -> None:
        metrics.check_alignment(max_shift, border)

    def compute(self, result, item, max_shift=metrics.ALIGN_MAX_SHIFT, border=metrics.ALIGN_BORDER) -> float | None:
        from kdiff_cli.maths.deconv import deconvolve_numpy

        if result.k is None or item.k is None:
            return None
        x_est = deconvolve_numpy(item.y, result.k, item.sigma, self.solver)
        x_true = deconvolve_numpy(item.y, item.k, item.sigma, self.solver)
        return metrics.error_ratio(x_est, x_true, item.x, max_shift, border)

    def summary(self, values) -> dict:
        v = np.asarray([x for x in values if x is not None], dtype=np.float64)
        if v.size == 0:
            return {self.name: None, "success@3": None}
        return {self.name: float(v.mean()), "success@3": float(np.mean(v <= self.success_threshold))}


@hookimpl
def register_metrics(register):
    register(ErrorRatio())
