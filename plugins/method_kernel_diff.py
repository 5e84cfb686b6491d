"""`kernel-diff`: the paper's method as a blind-deblurring component for `deblur` and `eval`."""

from __future__ import annotations

from functools import lru_cache

from kdiff_cli.blind.settings import UNGUIDED
from kdiff_cli.hookspecs import hookimpl


@lru_cache(maxsize=4)
def _models(weights: str, solver: str, solver_weights: str | None, device: str):
    from kdiff_cli.blind.estimator import load_kernel_model
    from kdiff_cli.solvers import load_solver
    import torch

    model, schedule = load_kernel_model(weights, torch.device(device))
    return model, schedule, load_solver(solver, weights=solver_weights, device=device)


class KernelDiff:
    name = "kernel-diff"
    description = "Kernel-Diff: guided kernel diffusion + Stage II, then x = F(y, k) (the paper's method)"
    sampler = "ddim"
    #: what the apps pass besides the user's options (``kdiff deblur``: device, callback, expected kernel size)
    CONTEXT = ("device", "callback", "k_true")
    #: memory per kernel sample, lower bound: the U-Net's activations with gradients per kernel pixel
    #: (measured ~10 KB at 64x64 for the shipped network) and the solver's canvas per window pixel
    #: (Stage II and guidance run F on the estimation window for every sample)
    SAMPLE_BYTES_PER_KERNEL_PIXEL = 8192
    SAMPLE_BYTES_PER_WINDOW_PIXEL = 384

    @classmethod
    def option_names(cls) -> set[str]:
        """The options a user may give (``kdiff eval --method kernel-diff:KEY=VALUE``): the
        :class:`~kdiff_cli.blind.settings.BlindSettings` fields, ``weights``, ``solver_weights``, ``device``."""
        from kdiff_cli.blind.settings import BlindSettings

        return set(BlindSettings.__dataclass_fields__) | {"weights", "solver_weights", "device"}

    @classmethod
    def validate_options(cls, **options):
        """Raise a one-line error for options that are not valid pipeline settings."""
        from kdiff_cli import limits, plugins
        from kdiff_cli.blind.settings import DEFAULT_WEIGHTS, BlindSettings

        fields = BlindSettings.__dataclass_fields__
        plugins.check_options(f"method {cls.name!r}", cls.option_names(), set(options) - set(cls.CONTEXT))
        settings = BlindSettings(**{k: v for k, v in options.items() if k in fields})
        settings.validate()
        # load (and cache) the network and the solver now, so bad weights fail before any image
        model = _models(options.get("weights") or DEFAULT_WEIGHTS, settings.solver, options.get("solver_weights"), str(options.get("device", "cpu")))[0]
        if settings.kernel_size is not None:
            limits.check_kernel_size(settings.kernel_size, "--kernel-size")
        S, window = model.kernel_size, settings.window
        per_sample = cls.SAMPLE_BYTES_PER_KERNEL_PIXEL * S * S + cls.SAMPLE_BYTES_PER_WINDOW_PIXEL * window * window
        limits.check_memory(settings.samples * per_sample, f"--samples {settings.samples} ({S}x{S} kernels, {window}x{window} window)",
                            "lower --samples")

    @classmethod
    def run(cls, y, *, weights=None, solver_weights=None, device="cpu", callback=None, k_true=None, **options):  # noqa: ARG003 (checked in validate_options)
        """Deblur ``y`` (1, C, H, W); ``options`` are :class:`kdiff_cli.blind.settings.BlindSettings` fields.

        Returns a :class:`kdiff_cli.blind.result.MethodResult` (unpacks as ``x, k, info``).
        """
        from kdiff_cli.blind.estimator import deblur_image
        from kdiff_cli.blind.result import MethodResult
        from kdiff_cli.blind.settings import DEFAULT_WEIGHTS, BlindSettings, settings_dict

        options.setdefault("sampler", cls.sampler)
        if cls.sampler == UNGUIDED:  # the ablation: the chosen sampler (default ddim) without guidance
            options["sampler"] = options["sampler"] if options["sampler"] != UNGUIDED else KernelDiff.sampler
            options["guidance"] = False
        settings = BlindSettings(**options)
        model, schedule, solver = _models(weights or DEFAULT_WEIGHTS, settings.solver, solver_weights, str(device))
        res = deblur_image(y.to(device), model, schedule, solver, settings, callback)
        est = res.estimate
        resolved = settings_dict(settings)
        info = {
            "residuals": est.residuals,
            "chosen": est.chosen,
            "kept": est.kept,
            "classical_residual": est.classical_residual,
            "agreement": est.agreement,
            "final_sigma": res.sigma,
            "residual": est.residual,
            "roi": list(est.roi),
            "scale": est.scale,
            "plan": est.plan,
            "scores": est.scores,
            "fallback_scores": est.fallback_scores,
            "polish": est.polish,
            "trace": est.trace,
            "refine_trace": est.refine_trace,
            "seconds": res.seconds,
            "settings": resolved,
        }
        return MethodResult(res.x, est.k, info, residual=est.residual, residuals=est.residuals, settings=resolved,
                            estimate=est, final_sigma=res.sigma)


@hookimpl
def register_methods(register):
    register(KernelDiff)
