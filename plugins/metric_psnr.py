"""PSNR (dB) of the deblurred image against the ground truth (the paper's Table 1), as it is and
after the best integer alignment (``psnr_aligned``: within ``max_shift`` pixels, ``border`` cropped)."""

from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths import metrics


class PSNR(metrics.PlainAndAligned):
    name = "psnr"
    description = "peak signal-to-noise ratio in dB of the image, as is and aligned (higher is better)"
    plain = staticmethod(metrics.psnr)
    aligned = staticmethod(metrics.psnr_aligned)


@hookimpl
def register_metrics(register):
    register(PSNR())
