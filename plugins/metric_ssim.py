"""SSIM of the deblurred image against the ground truth (scikit-image, the paper's Table 1)."""

from kdiff_cli.maths import metrics
from kdiff_cli.hookspecs import hookimpl


class SSIM:
    name = "ssim"
    description = "structural similarity of the image, scikit-image (higher is better)"
    target = "image"
    higher_is_better = True

    def compute(self, estimate, reference) -> float:
        return metrics.ssim(estimate, reference)


@hookimpl
def register_metrics(register):
    register(SSIM())
