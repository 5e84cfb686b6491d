"""`reblur`: the paper's Stage II: projected gradient steps on ||y - k * F(y, k)||^2 from k0."""

from kdiff_cli.maths.guidance import refine
from kdiff_cli.hookspecs import hookimpl


class ReblurRefiner:
    name = "reblur"
    description = "the paper's Stage II: J projected gradient steps on the reblur loss through F, with backtracking"
    default_steps = 50  # J (the authors: 20; with the latent loss 50 measured better, docs/deblur.md)

    @staticmethod
    def total_steps(steps, kernel_size, batch):
        """Progress units of :meth:`refine`: one per gradient step (all samples at once)."""
        return int(steps)

    @staticmethod
    def refine(guidance, k0, *, steps=20, callback=None):
        """``steps`` gradient steps from ``k0`` (B, 1, S, S); see :func:`kdiff_cli.maths.guidance.refine`."""
        return refine(guidance, k0, steps=steps, callback=callback)


@hookimpl
def register_refiners(register):
    register(ReblurRefiner)
