"""`ddpm`: Algorithm 1 of the paper — ancestral reverse diffusion with reblur guidance."""

from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths import sampling
from kdiff_cli.maths.sampling import check_steps, reverse_diffusion


class DDPMSampler:
    name = "ddpm"
    description = "Algorithm 1: ancestral DDPM reverse steps (eq. 18), guided by the reblur loss"
    default_steps = 1000

    @staticmethod
    def sample(model, schedule, y, *, steps=1000, guidance=None, generator=None, callback=None, variance="posterior"):
        """Sample one kernel per image of ``y`` with ``steps`` ancestral steps (1000 = every timestep)."""
        schedule.set_timesteps(check_steps(steps, schedule))
        step = sampling.ddpm(variance)
        return reverse_diffusion(model, schedule, y, step, guidance=guidance, generator=generator, callback=callback)



@hookimpl
def register_samplers(register):
    register(DDPMSampler)
