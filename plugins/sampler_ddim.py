"""`ddim`: the same reblur guidance on a strided DDIM schedule (deterministic for eta = 0)."""

from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths import sampling
from kdiff_cli.maths.sampling import check_steps, reverse_diffusion


class DDIMSampler:
    name = "ddim"
    description = "guided DDIM on a strided schedule (25-100 steps); deterministic for eta = 0"
    default_steps = 25

    @staticmethod
    def sample(model, schedule, y, *, steps=25, guidance=None, generator=None, callback=None, eta=0.0):
        """Sample one kernel per image of ``y`` with ``steps`` DDIM steps."""
        schedule.set_timesteps(check_steps(steps, schedule))
        step = sampling.ddim(eta)
        return reverse_diffusion(model, schedule, y, step, guidance=guidance, generator=generator, callback=callback)



@hookimpl
def register_samplers(register):
    register(DDIMSampler)
