"""`unguided`: reverse diffusion without the reblur guidance (the paper's Table 4 ablation)."""

from kdiff_cli.hookspecs import hookimpl
from kdiff_plugins.sampler_ddim import DDIMSampler


class UnguidedSampler:
    name = "unguided"
    description = "DDIM reverse diffusion without reblur guidance (Table 4 ablation)"
    default_steps = 25

    @staticmethod
    def sample(model, schedule, y, *, steps=25, guidance=None, generator=None, callback=None, eta=0.0):
        """Like ``ddim`` but ignores ``guidance``: samples p(k | y) from the network alone."""
        return DDIMSampler.sample(model, schedule, y, steps=steps, guidance=None, generator=generator, callback=callback, eta=eta)


@hookimpl
def register_samplers(register):
    register(UnguidedSampler)
