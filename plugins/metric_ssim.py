"""SSIM of the deblurred image against the ground truth (scikit-image, the paper's Table 1), as it
is and after the best integer alignment (``ssim_aligned``: the shift of least squared error within
``max_shift`` pixels, ``border`` cropped)."""

from kdiff_cli.maths import metrics
from kdiff_cli.hookspecs import hookimpl


class SSIM:
    name = "ssim"
    description = "structural similarity of the image, scikit-image, as is and aligned (higher is better)"
    target = "image"
    higher_is_better = True
    columns = ("ssim", "ssim_aligned")
    params = {"max_shift": metrics.ALIGN_MAX_SHIFT, "border": metrics.ALIGN_BORDER}

    def validate_options(self, max_shift=metrics.ALIGN_MAX_SHIFT, border=metrics.ALIGN_BORDER) -> None:
        metrics.check_alignment(max_shift, border)

    def compute(self, estimate, reference, max_shift=metrics.ALIGN_MAX_SHIFT, border=metrics.ALIGN_BORDER) -> dict:
        return {
            "ssim": metrics.ssim(estimate, reference),
            "ssim_aligned": metrics.ssim_aligned(estimate, reference, max_shift, border),
        }


@hookimpl
def register_metrics(register):
    register(SSIM())
