"""SSIM of the deblurred image against the ground truth (scikit-image, the paper's Table 1), as it
is and after the best integer alignment (``ssim_aligned``: the shift of least squared error within
``max_shift`` pixels, ``border`` cropped)."""

from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths import metrics


class SSIM(metrics.PlainAndAligned):
    name = "ssim"
    description = "structural similarity of the image, scikit-image, as is and aligned (higher is better)"
    plain = staticmethod(metrics.ssim)
    aligned = staticmethod(metrics.ssim_aligned)


@hookimpl
def register_metrics(register):
    register(SSIM())
