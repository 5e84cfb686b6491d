"""Blind deblurring of photographs with Kernel-Diff (Algorithm 1 + Stage II + tiled deconvolution).

Pipeline for one image ``y`` (any size, gray or RGB):

1. choose a window (``--roi`` or the ``window x window`` crop with the strongest edges);
2. sample ``samples`` kernels from p(k | y_window) with a guided sampler (one batch), refine each
   with Stage II, keep the one with the lowest reblur residual (the MAP_k criterion);
3. ``downscale="auto"``: if the kernel's mass reaches the border of its canvas the blur is larger
   than the kernel size, so the estimate is redone on the image downscaled 2x and the kernel
   upsampled back (canvas 2S);
4. the non-blind solver deconvolves the whole image with that kernel, tiled with overlap so memory
   stays bounded; one kernel is shared by all colour channels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from kdiff_cli import config, plugins
from kdiff_cli.maths import ops
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths.guidance import ReblurGuidance, refine

DEFAULT_WEIGHTS = "kernel-diff-autocorr"
#: fraction of kernel mass in the outer ring that signals blur larger than the kernel canvas
BORDER_MASS = 0.02


@dataclass
class BlindSettings:
    """Options of the Kernel-Diff pipeline (CLI flags of ``kdiff deblur``)."""

    sampler: str = "ddim"  # sampler plugin: ddim, ddpm, unguided
    steps: int | None = None  # reverse steps (None: the sampler's default)
    samples: int = 1  # kernels sampled as one batch; the lowest residual wins (MAP_k)
    refiner: str = "alternating"  # Stage II refiner plugin: alternating (measured default) or reblur (the paper's)
    refine_steps: int | None = None  # J: Stage II steps (None: the refiner's default; 0: no Stage II)
    classical: bool = True  # the MAP_k choice also weighs the classical alternating estimate of the window
    solver: str = "wiener"  # non-blind solver F for guidance, Stage II and the final image
    guidance_scale: float = 4.0  # c in delta = c / ||y - k0 * x0||^2 (measured for kdiff's kernel map; paper 0.1)
    route: str = "k0"  # guidance gradient w.r.t. "k0" (k0_hat) or "kt" (through the U-Net)
    discrepancy: float | None = None  # tau: guide R towards tau N sigma^2 instead of down (None: the paper's R)
    window: int = 256  # side of the kernel-estimation window
    roi: tuple[int, int, int, int] | None = None  # x, y, w, h of the window (None: automatic)
    downscale: str = "auto"  # "auto", "1" or "2": estimate on the image downscaled by this factor
    sigma: float | None = None  # noise std of y (None: estimated)
    final_sigma_floor: float = 0.03  # without a second candidate: the final x = F(y, k) regularises as if sigma >= this
    kernel_uncertainty: float | None = 0.006  # u: with the classical candidate, sigma_final^2 = sigma^2 + u (1 - agreement); None: the floor
    seed: int = 0
    tile: int = 512  # tile side of the final deconvolution

    #: numeric fields -> (a value of their type, whether None is allowed); ``kdiff eval --method
    #: kernel-diff:KEY=VALUE`` hands over parsed values, coerced here as config overrides are
    _NUMBERS = {"steps": (0, True), "samples": (0, False), "refine_steps": (0, True), "guidance_scale": (0.0, False),
                "discrepancy": (0.0, True), "window": (0, False), "sigma": (0.0, True), "final_sigma_floor": (0.0, False),
                "kernel_uncertainty": (0.0, True), "seed": (0, False), "tile": (0, False)}

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
        if not isinstance(self.classical, bool):
            raise KdiffError(f"classical must be true or false, got {self.classical!r}")
        plugins.get("sampler", self.sampler)  # unknown names: one-line error listing the known ones
        plugins.get("refiner", self.refiner)
        if self.refine_steps is not None and self.refine_steps < 0:
            raise KdiffError(f"--refine-steps must be >= 0, got {self.refine_steps}")
        if self.route not in ("k0", "kt"):
            raise KdiffError(f"--route must be k0 or kt, got {self.route!r}")
        if self.downscale not in ("auto", "1", "2"):
            raise KdiffError(f"--downscale must be auto, 1 or 2, got {self.downscale!r}")
        if self.discrepancy is not None and not self.discrepancy > 0:
            raise KdiffError(f"--discrepancy must be > 0, got {self.discrepancy}")
        if not self.guidance_scale >= 0:
            raise KdiffError(f"--guidance-scale must be >= 0, got {self.guidance_scale}")
        if not self.final_sigma_floor >= 0:
            raise KdiffError(f"--final-sigma-floor must be >= 0, got {self.final_sigma_floor}")
        if self.kernel_uncertainty is not None and not self.kernel_uncertainty >= 0:
            raise KdiffError(f"--kernel-uncertainty must be >= 0, got {self.kernel_uncertainty}")
        if self.window < 32:
            raise KdiffError(f"--window must be >= 32, got {self.window}")
        if self.steps is not None and self.steps < 1:  # 0 used to fall back to the sampler's default silently
            raise KdiffError(f"--steps must be >= 1, got {self.steps}")
        if self.tile < 1:
            raise KdiffError(f"--tile must be >= 1, got {self.tile} (tiles smaller than 2 x the kernel size + 1 are enlarged to that)")

    def effective_steps(self) -> int:
        """Reverse steps actually run: ``steps`` or the sampler's default."""
        return self.steps if self.steps is not None else plugins.get("sampler", self.sampler).default_steps

    def effective_refine_steps(self) -> int:
        """Stage II steps actually run: ``refine_steps`` or the refiner's default (0: none)."""
        if self.refine_steps is not None:
            return self.refine_steps
        return plugins.get("refiner", self.refiner).default_steps


@dataclass
class KernelEstimate:
    k: torch.Tensor  # (1, 1, S', S') nonnegative, sum 1, at the image's full resolution
    residuals: list[float]  # final reblur residual of each sample (window, after Stage II)
    chosen: int  # index of the sample kept
    roi: tuple[int, int, int, int]  # x, y, w, h of the window (full-resolution pixels)
    scale: int  # 1 or 2: downscale factor of the estimation
    trace: list[list[float]] = field(default_factory=list)  # per reverse step, per sample
    refine_trace: list[float] = field(default_factory=list)  # Stage II residuals of the chosen sample
    classical_residual: float | None = None  # reblur residual of the classical candidate (None: not run)
    kept: str = "sample"  # "sample" (the diffusion sample ``chosen``) or "classical"
    agreement: float | None = None  # MNC between the sample and the classical candidate (None: not run)

    @property
    def residual(self) -> float:
        """Reblur residual of the kernel kept (the chosen sample's or the classical candidate's)."""
        return self.classical_residual if self.kept == "classical" else self.residuals[self.chosen]


# --------------------------------------------------------------------------- model loading


def load_kernel_model(weights: str, device: torch.device):
    """The conditional U-Net and its noise schedule from a kernel-diff weights file (name or path)."""
    from kdiff_cli import weights as wio
    from kdiff_cli.maths.schedule import NoiseSchedule
    from kdiff_cli.maths.unet import build_unet

    state, meta = wio.read(weights)
    if meta.get("task") != "kernel-diff" or "unet" not in meta:
        raise KdiffError(f"weights file {wio.resolve(weights)} is not a kernel-diff model (task={meta.get('task')!r})")
    model = build_unet(meta["unet"])
    wio.load_into(model, weights)
    schedule = NoiseSchedule.from_dict(meta.get("schedule", {}))
    return model.to(device).eval(), schedule


# --------------------------------------------------------------------------- window selection


def select_window(y: torch.Tensor, size: int, stride: int = 8) -> tuple[int, int, int, int]:
    """The ``size x size`` window (x, y, w, h) with the largest total gradient magnitude.

    Smaller images give their whole area (cropped to a multiple of 16 px). Deterministic.
    """
    H, W = y.shape[-2:]
    if H <= size or W <= size:
        h, w = min(H, size), min(W, size)
        h, w = h - h % 16, w - w % 16
        return (W - w) // 2, (H - h) // 2, w, h
    g = y.mean(1, keepdim=True)
    mag = (g[..., 1:, :-1] - g[..., :-1, :-1]).abs() + (g[..., :-1, 1:] - g[..., :-1, :-1]).abs()
    # saturated pixels violate the blur model; do not let them attract the window
    mag = mag * (g[..., :-1, :-1] < 0.98)
    sums = F.avg_pool2d(mag, kernel_size=size - 1, stride=stride)
    idx = int(torch.argmax(sums.flatten()))
    r, c = divmod(idx, sums.shape[-1])
    return c * stride, r * stride, size, size


def _check_roi(roi, H: int, W: int) -> tuple[int, int, int, int]:
    x, y0, w, h = roi
    if w < 32 or h < 32 or x < 0 or y0 < 0 or x + w > W or y0 + h > H:
        raise KdiffError(f"--roi {x},{y0},{w},{h} is not a window of at least 32x32 inside the {W}x{H} image")
    return x, y0, w - w % 16, h - h % 16


def downscale(y: torch.Tensor, factor: int) -> torch.Tensor:
    return y if factor == 1 else F.avg_pool2d(y, factor)


def upscale_kernel(k: torch.Tensor, factor: int) -> torch.Tensor:
    """Kernel estimated at 1/factor resolution -> full resolution on a factor x larger canvas."""
    if factor == 1:
        return k
    S = k.shape[-1]
    up = F.interpolate(k, size=(S * factor, S * factor), mode="bilinear", align_corners=False)
    return ops.center_kernel(ops.normalize_kernel(up))


def border_mass(k: torch.Tensor, width: int = 2) -> float:
    inner = k[..., width:-width, width:-width].sum()
    return float(1 - inner / k.sum().clamp(min=1e-12))


# --------------------------------------------------------------------------- estimation


def estimate_kernel(
    y: torch.Tensor,
    model: torch.nn.Module,
    schedule,
    solver: torch.nn.Module,
    settings: BlindSettings,
    callback: Callable[[str, int, int, dict], None] | None = None,
) -> KernelEstimate:
    """Estimate one kernel for the image ``y`` (1, C, H, W) in [0, 1]."""
    settings.validate()
    factors = {"auto": [1, 2], "1": [1], "2": [2]}[settings.downscale]
    est = None
    for factor in factors:
        est = _estimate_at(y, model, schedule, solver, settings, factor, callback)
        if settings.downscale != "auto" or border_mass(est.k) < BORDER_MASS:
            break
        if min(y.shape[-2:]) // 2 < model.kernel_size:
            break
    est.k = upscale_kernel(est.k, est.scale)
    return est


def _estimate_at(y, model, schedule, solver, settings, factor, callback) -> KernelEstimate:
    sampler = plugins.get("sampler", settings.sampler)
    refiner = plugins.get("refiner", settings.refiner)
    ys = downscale(y, factor)
    H, W = ys.shape[-2:]
    S = model.kernel_size
    if min(H, W) < S:
        raise KdiffError(f"image {W * factor}x{H * factor} is smaller than the {S}x{S} kernel")
    if settings.roi is not None:
        x0, y0, w, h = _check_roi(settings.roi, *y.shape[-2:])
        x0, y0, w, h = x0 // factor, y0 // factor, w // factor, h // factor
        w, h = w - w % 16, h - h % 16
    else:
        x0, y0, w, h = select_window(ys, settings.window)
    win = ys[..., y0 : y0 + h, x0 : x0 + w]
    y_batch = win.expand(settings.samples, -1, -1, -1).contiguous()
    generator = torch.Generator().manual_seed(int(settings.seed))
    guidance = None
    if settings.sampler != "unguided":
        guidance = ReblurGuidance(solver, y_batch, settings.sigma, scale=settings.guidance_scale, route=settings.route,
                                  discrepancy=settings.discrepancy)
    steps = settings.effective_steps()
    stage = f"x{factor} sampling" if factor > 1 else "sampling"
    refining = f"x{factor} refining" if factor > 1 else "refining"

    def on_step(i, n, info):
        if callback:
            callback(stage, i + 1, n, info)

    result = sampler.sample(model, schedule, y_batch, steps=steps, guidance=guidance, generator=generator, callback=on_step)
    k = result.k
    g_refine = guidance or ReblurGuidance(solver, y_batch, settings.sigma, discrepancy=settings.discrepancy)
    J = settings.effective_refine_steps()
    if J > 0:
        total = refiner.total_steps(J, S, settings.samples)
        ref = refiner.refine(
            g_refine, k, steps=J,
            callback=lambda j, r: callback and callback(refining, j + 1, total, {"residual": float(r.min())}),
        )
    else:
        ref = refine(g_refine, k, steps=0)  # projection and residuals only
    residuals = ref.residual.tolist()
    best = int(torch.argmin(g_refine.penalty(ref.residual)))
    k_best = ops.center_kernel(ref.k[best : best + 1])
    refine_trace = [step[best] for step in ref.trace]
    roi = (x0 * factor, y0 * factor, w * factor, h * factor)
    est = KernelEstimate(k_best, residuals, best, roi, factor, result.trace, refine_trace)
    if settings.classical:
        _weigh_classical(est, win, solver, settings, S, f"x{factor} classical" if factor > 1 else "classical", callback)
    return est


def _weigh_classical(est: KernelEstimate, win, solver, settings: BlindSettings, S: int, stage: str, callback) -> None:
    """MAP_k over one more candidate: the classical alternating estimate of the same window.

    It replaces the sample when its reblur penalty is lower (same solver, noise level and penalty).
    The two fail on different images, so the choice gains over either (docs/deblur.md).
    """
    from kdiff_cli.maths import alternating

    a_settings = alternating.AlternatingSettings(kernel_size=S)

    def on_round(i, info):
        if callback:
            callback(stage, i, info["total"], {"residual": info["residual"]})

    k_c = alternating.estimate_kernel(win, a_settings, on_round).k.to(device=est.k.device, dtype=est.k.dtype)
    g = ReblurGuidance(solver, win, settings.sigma, discrepancy=settings.discrepancy)
    with torch.no_grad():  # (sample, classical) on the window
        both = torch.cat([g.residual(k.to(win.dtype)) for k in (est.k, k_c)])
    est.classical_residual = float(both[1])
    est.agreement = float(ops.mnc(est.k[0, 0].double(), k_c[0, 0].double()).clamp(0, 1))
    penalty = g.penalty(both)
    if bool(penalty[1] < penalty[0]):
        est.k, est.kept = ops.center_kernel(k_c), "classical"


# --------------------------------------------------------------------------- full pipeline


@dataclass
class BlindResult:
    x: torch.Tensor  # (1, C, H, W) deblurred image
    estimate: KernelEstimate
    seconds: float
    sigma: float | None = None  # noise level of the final deconvolution (:func:`final_sigma`)


def deblur_image(
    y: torch.Tensor,
    model: torch.nn.Module,
    schedule,
    solver: torch.nn.Module,
    settings: BlindSettings,
    callback: Callable[[str, int, int, dict], None] | None = None,
) -> BlindResult:
    """Kernel-Diff on one image: estimate the kernel on a window, deconvolve the whole image."""
    from kdiff_cli.maths.deconv import solve_tiled

    start = time.perf_counter()
    est = estimate_kernel(y, model, schedule, solver, settings, callback)
    k = est.k
    from kdiff_cli.maths.deconv import noise_level

    with torch.no_grad():
        sigma = final_sigma(noise_level(settings.sigma, y), est.agreement, settings)
        x = solve_tiled(solver, y, k, sigma, tile=max(settings.tile, 2 * k.shape[-1] + 1))
    return BlindResult(x.clamp(0, 1), est, time.perf_counter() - start, float(sigma.reshape(-1)[0]))


def final_sigma(sigma: torch.Tensor, agreement: float | None, settings: BlindSettings) -> torch.Tensor:
    """Noise level the final ``x = F(y, k)`` regularises with: an estimated kernel is never exact.

    With two independent estimates (the diffusion sample and the classical candidate), their
    disagreement ``1 - MNC`` measures how uncertain the kernel is, and the kernel error enters as
    extra noise: ``sigma_final^2 = sigma^2 + u (1 - agreement)`` (``u`` = ``kernel_uncertainty``).
    Two estimates that agree get the noise's own regularisation, which a right kernel needs for
    detail; two that disagree get more, which a wrong kernel needs against ringing. Without the
    second estimate (``--no-classical``), or with ``kernel_uncertainty`` None (the previous release):
    ``sigma`` clamped at ``final_sigma_floor``.
    """
    if agreement is None or settings.kernel_uncertainty is None:
        return sigma.clamp(min=settings.final_sigma_floor)
    return (sigma.square() + settings.kernel_uncertainty * (1.0 - float(agreement))).sqrt()


def settings_dict(settings: BlindSettings) -> dict:
    """The settings for a report, with the step counts actually run in place of ``None`` defaults."""
    d = asdict(settings)
    d["roi"] = list(settings.roi) if settings.roi else None
    d["steps"] = settings.effective_steps()
    d["refine_steps"] = settings.effective_refine_steps()
    return d


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise KdiffError(f"--roi must be x,y,w,h (four integers), got {text!r}")
    return parts  # type: ignore[return-value]


def kernel_preview(k: torch.Tensor) -> "np.ndarray":  # noqa: F821
    """A gray (S, S, 1) picture of the kernel scaled to its peak, for ``<stem>_kernel.png``."""
    kk = k.detach().double().cpu()[0, 0]
    return (kk / kk.max().clamp(min=1e-12)).numpy()[..., None].astype("float32")


__all__ = [
    "BlindSettings",
    "KernelEstimate",
    "BlindResult",
    "estimate_kernel",
    "deblur_image",
    "load_kernel_model",
    "select_window",
    "parse_roi",
    "deblur_files",
]


# --------------------------------------------------------------------------- files (kdiff deblur)


@dataclass
class FilesReport:
    written: list = field(default_factory=list)  # output paths
    failed: list = field(default_factory=list)  # (input, message)
    entries: dict = field(default_factory=dict)  # input name -> report.json entry


def _accepted(run, options: dict) -> dict:
    """The options that ``run`` declares (all of them when it takes ``**options``)."""
    import inspect

    params = inspect.signature(run).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def deblur_files(
    paths: list,
    out_dir,
    method: str = "kernel-diff",
    options: dict | None = None,
    device: str = "auto",
    on_start: Callable | None = None,
    on_progress: Callable | None = None,
    on_done: Callable | None = None,
) -> FilesReport:
    """Blind-deblur every file: ``<stem>_deblurred.<ext>``, ``<stem>_kernel.npy``/``.png``, ``report.json``.

    ``options`` go to the method's ``run`` (those it declares). ``on_start(path)``,
    ``on_progress(stage, i, n, info)`` and ``on_done(path, error or None)`` report progress.
    A bad input is recorded and skipped; every output is written atomically.
    """
    import json
    import warnings
    from pathlib import Path

    import numpy as np

    from kdiff_cli import files
    from kdiff_cli.apps.nonblind import plan_outputs
    from kdiff_cli.device import resolve_device

    runner = plugins.get("method", method)
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise KdiffError(f"--out {out_dir} exists and is not a folder")
    sources = [Path(p) for p in paths]
    outputs = plan_outputs(sources, out_dir)
    opts = _accepted(runner.run, {**(options or {}), "device": str(dev)})
    takes_callback = "callback" in _accepted(runner.run, {"callback": None})
    if hasattr(runner, "validate_options"):  # bad options fail once, before any file is read
        runner.validate_options(**opts)
    report = FilesReport()

    def callback(*args):  # methods report (stage, i, n, info) or (step, info)
        if on_progress is None:
            return
        if len(args) == 4:
            on_progress(*args)
        else:
            step, info = args
            on_progress("alternating", step + 1, info.get("total"), info)

    for p in sources:
        if on_start:
            on_start(p)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", files.ImageWarning)
                a, info = files.read_image(p)
            y = files.to_tensor(a).to(dev)
            start = time.perf_counter()
            run_opts = {**opts, "callback": callback} if takes_callback else dict(opts)
            x, k, extra = runner.run(y, **run_opts)
            seconds = time.perf_counter() - start
            out = outputs[p]
            kk = k.detach().float().cpu()[0, 0].numpy().astype(np.float32)
            kk = kk / kk.sum()
            k_npy = out.with_name(f"{p.stem}_kernel.npy")
            files.atomic_write_bytes(k_npy, _npy_bytes(kk))
            k_png = files.write_image(out.with_name(f"{p.stem}_kernel.png"), kernel_preview(k), 8)
            img = files.write_image(out, files.to_numpy(x.clamp(0, 1)), info.bit_depth)
            report.written += [img, k_npy, k_png]
            residuals = extra.get("residuals") or extra.get("reblur_residual")
            residual = extra.get("residual", min(residuals) if isinstance(residuals, list) and residuals else residuals)
            report.entries[p.name] = {
                "input": str(p),
                "output": str(img),
                "kernel": str(k_npy),
                "method": method,
                "settings": extra.get("settings", {k_: v for k_, v in run_opts.items() if k_ != "callback"}),
                "kernel_size": list(kk.shape),
                "residual": residual,
                "residuals": residuals,
                "kept": extra.get("kept"),
                "classical_residual": extra.get("classical_residual"),
                "agreement": extra.get("agreement"),
                "final_sigma": extra.get("final_sigma"),
                "roi": extra.get("roi"),
                "scale": extra.get("scale"),
                "seconds": round(seconds, 3),
            }
            files.atomic_write_bytes(out_dir / "report.json", json.dumps(report.entries, indent=2, default=str).encode())
            err = None
        except KdiffError as e:
            err = str(e)
            report.failed.append((p, err))
        if on_done:
            on_done(p, err)
    return report


def _npy_bytes(a) -> bytes:
    import io as _io

    import numpy as np

    buf = _io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()
