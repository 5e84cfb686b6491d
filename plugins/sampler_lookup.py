"""`lookup`: guided DDIM started from the bank kernels nearest to y's blur cue (SDEdit).

The kernel bank (:mod:`kdiff_cli.maths.lookup`) holds kernels of the prior's training mixture with
the gradient autocorrelation each would produce; the nearest ones to y's are noised to
``t = strength * T`` and the reverse diffusion (with the reblur guidance, when given) runs from
there. ``strength = 1`` is plain DDIM from noise; small strengths keep the bank kernel. ``rank="prior"``
(default) re-orders the ``lookup.RANK_POOL`` nearest by the prior's own denoising loss
(:func:`kdiff_cli.maths.lookup.prior_rank`); ``rank="cue"`` keeps the cue's order.
"""

from kdiff_cli.errors import KdiffError
from kdiff_cli.hookspecs import hookimpl
from kdiff_cli.maths import lookup
from kdiff_cli.maths import sampling
from kdiff_cli.maths.sampling import check_steps, reverse_diffusion


class LookupSampler:
    name = "lookup"
    description = "guided DDIM from the nearest bank kernels to y's gradient autocorrelation, noised to strength * T"
    default_steps = 25
    default_strength = 0.3

    @staticmethod
    def sample(model, schedule, y, *, steps=25, guidance=None, generator=None, callback=None, eta=0.0,
               strength=default_strength, bank=None, rank="prior"):
        """One kernel per image of ``y``; copies of one image start from successive candidates."""
        if rank not in ("prior", "cue"):
            raise KdiffError(f"lookup rank must be prior or cue, got {rank!r}")
        strength = float(strength)
        if not 0.0 < strength <= 1.0:
            raise KdiffError(f"lookup strength must be in (0, 1], got {strength}")
        steps = check_steps(steps, schedule)
        t_start = round(strength * (schedule.T - 1))
        # `steps` reverse steps evenly spread over t_start .. 0
        full = min(schedule.T, max(steps, round(steps * (schedule.T - 1) / max(t_start, 1))))
        ts = schedule.set_timesteps(full)
        schedule.timesteps = ts[ts <= t_start][:steps] if t_start < schedule.T - 1 else ts
        ranked = {"model": model, "schedule": schedule} if rank == "prior" else {}
        k_start = lookup.candidates(y, model.kernel_size, bank, **ranked)
        step = sampling.ddim(eta)
        return reverse_diffusion(model, schedule, y, step, guidance=guidance, generator=generator,
                                 callback=callback, k_start=k_start)



@hookimpl
def register_samplers(register):
    register(LookupSampler)
