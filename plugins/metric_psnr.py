"""PSNR (dB) of the deblurred image against the ground truth (the paper's Table 1)."""

from kdiff_cli.maths import metrics
from kdiff_cli.hookspecs import hookimpl


class PSNR:
    name = "psnr"
    description = "peak signal-to-noise ratio in dB of the image (higher is better)"
    target = "image"
    higher_is_better = True

    def compute(self, estimate, reference) -> float:
        return metrics.psnr(estimate, reference)


@hookimpl
def register_metrics(register):
    register(PSNR())
