"""PSNR (dB) of the deblurred image against the ground truth (the paper's Table 1), as it is and
after the best integer alignment (``psnr_aligned``: within ``max_shift`` pixels, ``border`` cropped)."""

from kdiff_cli.maths import metrics
from kdiff_cli.hookspecs import hookimpl


class PSNR:
    name = "psnr"
    description = "peak signal-to-noise ratio in dB of the image, as is and aligned (higher is better)"
    target = "image"
    higher_is_better = True
    columns = ("psnr", "psnr_aligned")
    params = {"max_shift": metrics.ALIGN_MAX_SHIFT, "border": metrics.ALIGN_BORDER}

    def validate_options(self, max_shift=metrics.ALIGN_MAX_SHIFT, border=metrics.ALIGN_BORDER) -> None:
        metrics.check_alignment(max_shift, border)

    def compute(self, estimate, reference, max_shift=metrics.ALIGN_MAX_SHIFT, border=metrics.ALIGN_BORDER) -> dict:
        return {
            "psnr": metrics.psnr(estimate, reference),
            "psnr_aligned": metrics.psnr_aligned(estimate, reference, max_shift, border),
        }


@hookimpl
def register_metrics(register):
    register(PSNR())
