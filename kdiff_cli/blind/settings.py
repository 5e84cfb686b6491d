"""Settings of the Kernel-Diff pipeline: :class:`BlindSettings`, the ``--quality`` presets, the report form.

``kdiff deblur``'s flags and ``kdiff eval --method kernel-diff:KEY=VALUE`` both end here; the
estimator (:mod:`kdiff_cli.blind.estimator`) and the final step (:mod:`kdiff_cli.blind.final`) read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kdiff_cli import config, plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.latent_guidance import LOSSES

#: the shipped kernel-diff weights used when ``--weights`` is not given
DEFAULT_WEIGHTS = "kernel-diff-autocorr"
#: the sampler of the unguided ablation (paper Table 4; ``plugins/sampler_unguided.py``): it ignores
#: the reblur guidance, so the estimator builds none. ``--method unguided`` forces it.
UNGUIDED = "unguided"


@dataclass
class BlindSettings:
    """Options of the Kernel-Diff pipeline (CLI flags of ``kdiff deblur``)."""

    sampler: str = "ddim"  # sampler plugin: ddim, ddpm, unguided
    steps: int | None = None  # reverse steps (None: the sampler's default)
    samples: int = 1  # kernels sampled as one batch; the lowest residual wins (MAP_k)
    refiner: str = "alternating"  # Stage II refiner plugin: alternating (measured default) or reblur (the paper's)
    refine_steps: int | None = None  # J: Stage II steps (None: the refiner's default; 0: no Stage II)
    choice: str = "sparsity"  # MAP_k between sample and classical candidate: sparsity (of F(y, k)) or reblur (residual)
    fallback: bool = True  # keep y itself when no kernel's F(y, k) is sharper than y's own (--choice sparsity) or the coarse passes spread (scale.spread)
    classical: bool = True  # the MAP_k choice also weighs the classical alternating estimate of the window
    guidance: bool = True  # Stage I steered by the reblur guidance (False: the unguided ablation, any sampler)
    solver: str = "wiener"  # non-blind solver F for guidance, Stage II and the MAP_k scores
    final_solver: str = "auto"  # solver of the final image x = F(y, k): auto (hqs on photos, ``solver`` on small crops) or a name
    guidance_scale: float = 4.0  # c in delta = c / ||y - k0 * x0||^2 (measured for kdiff's kernel map; paper 0.1)
    route: str = "k0"  # guidance gradient w.r.t. "k0" (k0_hat) or "kt" (through the U-Net)
    discrepancy: float | None = None  # tau: guide R towards tau N sigma^2 instead of down (None: the paper's R)
    guidance_loss: str = "auto"  # Stage I guidance and the reblur Stage II: reblur (the paper's, through ``solver``), latent (kdiff_cli.maths.latent_guidance), auto: latent with --refiner reblur, else reblur
    fast_guidance: bool | None = None  # Stage I's guidance solves with the solver's cheaper copy (``for_guidance``); None: unless the refiner is reblur
    kernel_threshold: float = 0.1  # the kernel leaving Stage II: entries below this x peak zeroed, pieces < 5% of the mass removed (0: off)
    window: int = 256  # side of the kernel-estimation window
    roi: tuple[int, int, int, int] | None = None  # x, y, w, h of the window (None: automatic)
    downscale: str = "auto"  # "auto" (kdiff_cli.blind.scale) or an integer: estimate on the image downscaled by this factor
    kernel_size: int | None = None  # side of the full-resolution kernel (None: auto, from the coarse pass on photos)
    coarse_scales: int = 2  # photo scale: coarse passes at this many factors (f0, 2 f0, ...), the sparsest kept
    sigma: float | None = None  # noise std of y (None: estimated)
    final_sigma_floor: float = 0.03  # without a second candidate: the final x = F(y, k) regularises as if sigma >= this
    kernel_uncertainty: float | None = 0.006  # u: with the classical candidate, sigma_final^2 = sigma^2 + u (1 - agreement); None: the floor
    lights_sigma: float = 0.03  # photos where light streaks agreed on the coarse kernel (plan.streaks): the MAP_k scores and the final x = F(y, k) regularise as if sigma >= this (0: off)
    polish: int = 20  # photos: rounds of the full-resolution kernel polish (kdiff_cli.blind.polish), kept when sharper (0: off)
    linear: bool = False  # estimate and deconvolve in linear light (sRGB decoded), write back encoded
    seed: int = 0
    tile: int | None = None  # tile side of the final deconvolution (None: the final solver's, 2048 for wiener/hqs)

    #: numeric fields -> (a value of their type, whether None is allowed); ``kdiff eval --method
    #: kernel-diff:KEY=VALUE`` hands over parsed values, coerced here as config overrides are
    _NUMBERS = {"steps": (0, True), "samples": (0, False), "refine_steps": (0, True), "guidance_scale": (0.0, False),
                "discrepancy": (0.0, True), "kernel_threshold": (0.0, False), "window": (0, False), "sigma": (0.0, True), "final_sigma_floor": (0.0, False),
                "lights_sigma": (0.0, False), "kernel_uncertainty": (0.0, True), "seed": (0, False), "tile": (0, True),
                "kernel_size": (0, True), "coarse_scales": (0, False), "polish": (0, False)}

    def __post_init__(self) -> None:
        # `kdiff eval --method kernel-diff:downscale=2` parses the value as a number
        if isinstance(self.downscale, int) and not isinstance(self.downscale, bool):
            self.downscale = str(self.downscale)
        for name, (kind, optional) in self._NUMBERS.items():
            value = getattr(self, name)
            if value is not None or not optional:
                setattr(self, name, config.coerce(value, kind, f"--{name.replace('_', '-')}", "blind deblurring"))

    def validate(self) -> None:
        if self.samples < 1:
            raise KdiffError(f"--samples must be >= 1, got {self.samples}")
        if not isinstance(self.fallback, bool):
            raise KdiffError(f"fallback must be true or false, got {self.fallback!r}")
        if not isinstance(self.linear, bool):
            raise KdiffError(f"linear must be true or false, got {self.linear!r}")
        if not isinstance(self.classical, bool):
            raise KdiffError(f"classical must be true or false, got {self.classical!r}")
        if self.fast_guidance is not None and not isinstance(self.fast_guidance, bool):
            raise KdiffError(f"fast_guidance must be true or false, got {self.fast_guidance!r}")
        plugins.get("sampler", self.sampler)  # unknown names: one-line error listing the known ones
        if self.final_solver != "auto":
            plugins.get("solver", self.final_solver)
        plugins.get("refiner", self.refiner)
        if self.refine_steps is not None and self.refine_steps < 0:
            raise KdiffError(f"--refine-steps must be >= 0, got {self.refine_steps}")
        if self.choice not in ("sparsity", "reblur"):
            raise KdiffError(f"--choice must be sparsity or reblur, got {self.choice!r}")
        if self.guidance_loss not in ("auto",) + LOSSES:
            raise KdiffError(f"--guidance-loss must be one of auto, {', '.join(LOSSES)}, got {self.guidance_loss!r}")
        if self.discrepancy is not None and self.effective_guidance_loss() != "reblur":
            raise KdiffError("--discrepancy applies to --guidance-loss reblur only")
        if self.route not in ("k0", "kt"):
            raise KdiffError(f"--route must be k0 or kt, got {self.route!r}")
        if self.downscale != "auto" and not (self.downscale.isdigit() and 1 <= int(self.downscale) <= 16):
            raise KdiffError(f"--downscale must be auto or an integer from 1 to 16, got {self.downscale!r}")
        if self.kernel_size is not None and not 3 <= self.kernel_size:
            raise KdiffError(f"--kernel-size must be >= 3, got {self.kernel_size}")
        if self.discrepancy is not None and not self.discrepancy > 0:
            raise KdiffError(f"--discrepancy must be > 0, got {self.discrepancy}")
        if not 0 <= self.kernel_threshold < 1:
            raise KdiffError(f"--kernel-threshold must be in [0, 1), got {self.kernel_threshold}")
        if not self.guidance_scale >= 0:
            raise KdiffError(f"--guidance-scale must be >= 0, got {self.guidance_scale}")
        if not self.final_sigma_floor >= 0:
            raise KdiffError(f"--final-sigma-floor must be >= 0, got {self.final_sigma_floor}")
        if not 0 <= self.lights_sigma <= 1:
            raise KdiffError(f"--lights-sigma must be in [0, 1], got {self.lights_sigma}")
        if self.kernel_uncertainty is not None and not self.kernel_uncertainty >= 0:
            raise KdiffError(f"--kernel-uncertainty must be >= 0, got {self.kernel_uncertainty}")
        if self.polish < 0:
            raise KdiffError(f"--polish must be >= 0, got {self.polish}")
        if self.coarse_scales < 1:
            raise KdiffError(f"--coarse-scales must be >= 1, got {self.coarse_scales}")
        if self.window < 32:
            raise KdiffError(f"--window must be >= 32, got {self.window}")
        if self.steps is not None and self.steps < 1:  # 0 used to fall back to the sampler's default silently
            raise KdiffError(f"--steps must be >= 1, got {self.steps}")
        if self.tile is not None and self.tile < 1:
            raise KdiffError(f"--tile must be >= 1, got {self.tile} (tiles smaller than 2 x the kernel size + 1 are enlarged to that)")

    @property
    def guided(self) -> bool:
        """Whether Stage I is steered by the reblur guidance (``guidance``, and any sampler but :data:`UNGUIDED`)."""
        return self.guidance and self.sampler != UNGUIDED

    def effective_guidance_loss(self) -> str:
        """The loss of Stage I's guidance and of the ``reblur`` Stage II: ``guidance_loss``, or for
        ``auto`` the latent loss when Stage II is ``reblur`` (the paper's pipeline: its kernel is
        the sample refined by gradient steps on this loss, which must see the kernel's phase) and
        the paper's reblur loss otherwise (the default pipeline did not gain from the latent one;
        docs/deblur.md, "The latent loss")."""
        if self.guidance_loss != "auto":
            return self.guidance_loss
        return "latent" if self.refiner == "reblur" else "reblur"

    def effective_steps(self) -> int:
        """Reverse steps actually run: ``steps`` or the sampler's default."""
        return self.steps if self.steps is not None else plugins.get("sampler", self.sampler).default_steps

    def effective_fast_guidance(self) -> bool:
        """Whether Stage I's guidance uses the solver's cheaper copy: ``fast_guidance``, or by default
        yes unless Stage II is ``reblur`` (the paper's pipeline keeps the sample's kernel, and the
        full solver's guidance made better samples there; the default pipeline did not differ,
        docs/deblur.md)."""
        if self.fast_guidance is not None:
            return self.fast_guidance
        return self.refiner != "reblur"

    def effective_refine_steps(self) -> int:
        """Stage II steps actually run: ``refine_steps`` or the refiner's default (0: none)."""
        if self.refine_steps is not None:
            return self.refine_steps
        return plugins.get("refiner", self.refiner).default_steps


def settings_dict(settings: BlindSettings) -> dict:
    """The settings for a report, with the step counts and the guidance solver actually used in place of ``None`` defaults."""
    d = asdict(settings)
    d["roi"] = list(settings.roi) if settings.roi else None
    d["steps"] = settings.effective_steps()
    d["refine_steps"] = settings.effective_refine_steps()
    d["fast_guidance"] = settings.effective_fast_guidance()
    d["guidance_loss"] = settings.effective_guidance_loss()
    return d


@dataclass(frozen=True)
class Quality:
    """A ``--quality`` preset: the sampling effort; an option given explicitly overrides its field."""

    sampler: str  # sampler plugin
    steps: int | None  # reverse steps (None: the sampler's default)
    samples: int  # kernels sampled as one batch (MAP_k over them)
    refine_steps: int | None  # Stage II steps (None: the refiner's default)


#: ``--quality`` presets; ``default`` is exactly the defaults of :class:`BlindSettings`
QUALITY: dict[str, Quality] = {
    "fast": Quality(sampler="ddim", steps=10, samples=1, refine_steps=5),
    "default": Quality(sampler="ddim", steps=None, samples=1, refine_steps=None),
    "best": Quality(sampler="ddim", steps=50, samples=4, refine_steps=None),
}


def quality_options(quality: str, **given) -> dict:
    """``sampler``, ``steps``, ``samples``, ``refine_steps`` of preset ``quality``; ``given`` values not None win.

    >>> quality_options("fast", steps=30)
    {'sampler': 'ddim', 'steps': 30, 'samples': 1, 'refine_steps': 5}
    """
    if quality not in QUALITY:
        raise KdiffError(f"--quality must be one of {', '.join(QUALITY)}, got {quality!r}")
    unknown = sorted(set(given) - set(Quality.__dataclass_fields__))
    if unknown:
        raise KdiffError(f"quality presets do not set {', '.join(unknown)}")
    preset = asdict(QUALITY[quality])
    return {name: preset[name] if given.get(name) is None else given[name] for name in preset}
