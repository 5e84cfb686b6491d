"""`alternating`: Stage II by MAP_{x,k} alternating minimisation started from the sampled kernel.

The reblur loss with a linear solver such as ``wiener`` depends on the kernel's Fourier magnitude
only (``k * F(y, k)`` is ``|K|^2 / (|K|^2 + lambda) Y``), so gradient steps on it cannot correct a
kernel's phase: its shape and asymmetry. This refiner instead runs the classical x-step / k-step
alternation (L0 gradient prior, :mod:`kdiff_cli.maths.alternating`) over the finer half of the pyramid,
starting from the Kernel-Diff sample: the sample puts it in the basin of the true kernel, so it
does not fall into the delta-kernel minimum it reaches from a blind start (docs/deblur.md has the
measurements).
"""

import torch

from kdiff_cli.maths import alternating
from kdiff_cli.maths.guidance import RefineResult
from kdiff_cli.hookspecs import hookimpl


class AlternatingRefiner:
    name = "alternating"
    description = "MAP_{x,k} alternation (L0 gradients) over the finer pyramid levels, started from the sampled kernel"
    default_steps = 10  # rounds (x-step, k-step) per pyramid level
    start = 0.5  # first pyramid level: kernel side >= start * S

    @classmethod
    def total_steps(cls, steps, kernel_size, batch):
        """Progress units of :meth:`refine`: rounds over the refined levels and the polish, per sample."""
        settings = alternating.AlternatingSettings(kernel_size=kernel_size, iterations=int(steps))
        return batch * alternating.total_rounds(settings, len(alternating.refined_sizes(settings, cls.start)))

    @classmethod
    def refine(cls, guidance, k0, *, steps=10, callback=None, start=None):
        """Refine each kernel of ``k0`` (B, 1, S, S) on its image of ``guidance.y`` (B, C, H, W)."""
        S = k0.shape[-1]
        settings = alternating.AlternatingSettings(kernel_size=S, iterations=int(steps))
        start = cls.start if start is None else start
        out = []
        for b in range(k0.shape[0]):
            y = guidance.y[b : b + 1]

            def on_round(i, info, b=b):
                if callback is not None:
                    callback(b * info["total"] + i - 1, torch.tensor([info["residual"]]))

            est = alternating.estimate_kernel(y, settings, on_round, k_init=k0[b : b + 1], start=start)
            out.append(est.k.to(device=k0.device, dtype=k0.dtype))
        k = torch.cat(out)
        with torch.no_grad():
            res = guidance.residual(k)
        return RefineResult(k, res, [res.tolist()])


@hookimpl
def register_refiners(register):
    register(AlternatingRefiner)
