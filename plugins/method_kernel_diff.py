"""`kernel-diff`: the paper's method as a blind-deblurring component for `deblur` and `eval`."""

from __future__ import annotations

from functools import lru_cache

from kdiff_cli.hookspecs import hookimpl


@lru_cache(maxsize=4)
def _models(weights: str, solver: str, solver_weights: str | None, device: str):
    from kdiff_cli.deblur import load_kernel_model
    from kdiff_cli.solvers import load_solver
    import torch

    model, schedule = load_kernel_model(weights, torch.device(device))
    return model, schedule, load_solver(solver, weights=solver_weights, device=device)


class KernelDiff:
    name = "kernel-diff"
    description = "Kernel-Diff: guided kernel diffusion + Stage II, then x = F(y, k) (the paper's method)"
    sampler = "ddim"

    @classmethod
    def run(cls, y, *, weights=None, solver_weights=None, device="cpu", callback=None, k_true=None, **options):
        """Deblur ``y`` (1, C, H, W); ``options`` are :class:`kdiff_cli.deblur.BlindSettings` fields."""
        from kdiff_cli.deblur import DEFAULT_WEIGHTS, BlindSettings, deblur_image, settings_dict

        options.setdefault("sampler", cls.sampler)
        settings = BlindSettings(**options)
        model, schedule, solver = _models(weights or DEFAULT_WEIGHTS, settings.solver, solver_weights, str(device))
        res = deblur_image(y.to(device), model, schedule, solver, settings, callback)
        est = res.estimate
        info = {
            "residuals": est.residuals,
            "chosen": est.chosen,
            "roi": list(est.roi),
            "scale": est.scale,
            "trace": est.trace,
            "seconds": res.seconds,
            "settings": settings_dict(settings),
        }
        return res.x, est.k, info


@hookimpl
def register_methods(register):
    register(KernelDiff)
