"""The Kernel-Diff estimator: one kernel for a photograph (Algorithm 1 + Stage II + MAP_k).

Pipeline for one image ``y`` (any size, gray or RGB):

1. choose a window (``--roi`` or the ``window x window`` crop with the strongest edges,
   :mod:`kdiff_cli.blind.window`) at the scale :mod:`kdiff_cli.blind.scale` plans; when its coarse
   passes found no blur (every kernel spread over its canvas) the input is kept (the fallback);
2. Stage I: sample ``samples`` kernels from p(k | y_window) with a guided sampler (one batch);
   Stage II: refine each with the refiner plugin; MAP_k: keep the lowest reblur penalty, weighed
   against the classical alternating estimate of the same window (``classical``);
3. ``downscale="auto"``: if the kernel's mass reaches the border of its canvas the blur is larger
   than the kernel size, so the estimate is redone on the image downscaled 2x and the kernel
   upsampled back (canvas 2S);
4. :func:`deblur_image` ends with the final step shared by every method
   (:mod:`kdiff_cli.blind.final`): the tiled non-blind solve of the whole image.

The settings live in :mod:`kdiff_cli.blind.settings`, the results in :mod:`kdiff_cli.blind.result`;
their names are importable from here as well.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from kdiff_cli import plugins, threads
from kdiff_cli.blind import polish, scale
from kdiff_cli.blind.final import deconvolve, final_sigma
from kdiff_cli.blind.result import BlindResult, KernelEstimate
from kdiff_cli.blind.settings import DEFAULT_WEIGHTS, BlindSettings, settings_dict
from kdiff_cli.blind.window import BORDER_MASS, border_mass, check_roi, downscale, select_window, upscale_kernel
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import camera, choice, ops
from kdiff_cli.maths.noise import noise_level
from kdiff_cli.maths.guidance import ReblurGuidance, RefineResult, clean_kernel, refine
from kdiff_cli.maths.latent_guidance import build_guidance


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
    S = model.kernel_size
    where = plan_scale(y, S, solver, settings, callback)
    if where.spread and settings.fallback:  # the coarse passes found no blur, only noise: keep the input
        return _no_blur_found(y, solver, settings, where)
    if where.how == "crop":  # the first release's path: full resolution, then 2x if the blur outgrows the canvas
        for factor in (1, 2):
            est = _estimate_at(y, model, schedule, solver, settings, factor, callback)
            if border_mass(est.k) < BORDER_MASS or min(y.shape[-2:]) // 2 < S:
                break
    else:
        k_classical = None
        if where.coarse_k is not None:
            k_classical = scale.to_scale(where.coarse_k, where.coarse_factor, where.factor, S)
        est = _estimate_at(y, model, schedule, solver, settings, where.factor, callback, k_classical,
                           lights=lights_floor(where.streaks, settings) > 0)
    est.k = upscale_kernel(est.k, est.scale)
    if where.kernel_size is not None:
        est.k = ops.center_kernel(ops.normalize_kernel(ops.resize_kernel_canvas(est.k, where.kernel_size)))
    if est.kept == "none":  # the fallback's delta stays a delta at full resolution (upsampling spreads it)
        est.k = choice.delta_like(est.k)
    elif where.how != "crop" and settings.polish > 0:  # photos: refine the upsampled kernel at full resolution
        est.k, done = polish.polish(y, est.k, settings.polish, solver, noise_level(settings.sigma, y),
                                    floor=max(choice.SIGMA_FLOOR, lights_floor(where.streaks, settings)))
        est.polish = done.report()
        if callback:
            callback("polishing", 1, 1, {})
    est.plan = where.report()
    return est


def plan_scale(y: torch.Tensor, canvas: int, solver: torch.nn.Module, settings: BlindSettings,
               callback: Callable[[str, int, int, dict], None] | None = None) -> scale.ScalePlan:
    """Where and how large the kernel of ``y`` is estimated for a ``canvas`` px prior:
    :func:`kdiff_cli.blind.scale.plan` with the options of ``settings`` (``benchmarks/bench_photos.py
    --coarse`` scores this plan alone)."""
    return scale.plan(y, canvas, settings.kernel_size, settings.downscale, callback, settings.roi,
                      scales=settings.coarse_scales, solver=solver, sigma=settings.sigma)


def _window_box(y: torch.Tensor, ys: torch.Tensor, settings: BlindSettings, factor: int) -> tuple[int, int, int, int]:
    """The estimation window (x, y, w, h) in ``ys``, the image ``y`` downscaled by ``factor``:
    ``--roi`` (full-resolution pixels, checked against ``y``; sides trimmed to multiples of 16) or
    the strongest-edge window."""
    if settings.roi is None:
        return select_window(ys, settings.window)
    x0, y0, w, h = (v // factor for v in check_roi(settings.roi, *y.shape[-2:]))
    return x0, y0, w - w % 16, h - h % 16


def _no_blur_found(y, solver, settings: BlindSettings, where: scale.ScalePlan) -> KernelEstimate:
    """The fallback without Stage I: every coarse pass's kernel spread over its whole canvas
    (:func:`kdiff_cli.blind.scale.spread`), so ``y`` is kept (kept "none", the delta kernel on the
    estimate's canvas; its reblur residual on the full-resolution window for the report)."""
    x0, y0, w, h = _window_box(y, y, settings, 1)
    win = y[..., y0 : y0 + h, x0 : x0 + w]
    k = choice.delta_like(torch.zeros(1, 1, where.kernel_size, where.kernel_size, dtype=y.dtype, device=y.device))
    with torch.no_grad():
        residual = float(ReblurGuidance(solver, win, settings.sigma, discrepancy=settings.discrepancy).residual(k))
    return KernelEstimate(k, [], 0, (x0, y0, w, h), 1, kept="none", none_residual=residual, plan=where.report())


def lights_floor(streaks: int | None, settings: BlindSettings) -> float:
    """The noise floor of the MAP_k scores and of the final image: ``settings.lights_sigma`` on a
    photo where light streaks agreed on the coarse kernel (``streaks``: how many; None: no lights),
    else 0 (the usual floors apply). Clipped lights and the camera's tone curve break ``y = k * x``
    around them; regularised as for noise 0.01, the right streak kernel rings there and loses the
    choice to the input (real-blur's car3 and night5; docs/deblur.md)."""
    return settings.lights_sigma if streaks is not None else 0.0


def lights_keep_input(est: KernelEstimate, win, solver, settings: BlindSettings, k: torch.Tensor, sigma) -> bool:
    """The fallback on a photo with light streaks: keep ``y`` unless the final solver (``hqs`` on
    photos) deconvolves the window with ``k`` more sparsely than with the delta by
    :data:`kdiff_cli.maths.choice.LIGHTS_MARGIN`, both regularised for noise ``settings.lights_sigma``.

    The ``wiener`` scores of the choice hand such photos to the input even with the right streak
    kernel (its solve rings around the clipped lights: real-blur's car3, whose plate becomes
    readable); the sparse prior of the final solver does not ring there, but it also makes any
    kernel's output sparser than the input's, hence the margin. The two scores (kernel, delta) are
    recorded in ``est.fallback_scores``.
    """
    scorer = final_solver(solver, settings, win.device, photo=True)
    pair = choice.sparsity_scores(scorer, win, [k, choice.delta_like(k)], sigma, floor=settings.lights_sigma)
    est.fallback_scores = [float(v) for v in pair]
    return choice.keep_input_lights(pair)


def _estimate_at(y, model, schedule, solver, settings, factor, callback, k_classical=None, lights: bool = False) -> KernelEstimate:
    ys = downscale(y, factor)
    H, W = ys.shape[-2:]
    S = model.kernel_size
    if min(H, W) < S:
        raise KdiffError(f"image {W * factor}x{H * factor} is smaller than the {S}x{S} kernel")
    x0, y0, w, h = _window_box(y, ys, settings, factor)
    win = ys[..., y0 : y0 + h, x0 : x0 + w]
    roi = (x0 * factor, y0 * factor, w * factor, h * factor)
    if not settings.classical or k_classical is not None:
        est = _sample_and_refine(win, model, schedule, solver, settings, factor, roi, callback)
        if settings.classical:  # photo scale brings the coarse pass's kernel (kdiff_cli.blind.scale)
            _weigh_classical(est, win, solver, settings, k_classical, lights)
        return est
    # the classical estimate of the same window does not depend on Stage I: both run at once
    # (kdiff_cli.threads: chains of small single-threaded FFTs, which 2 cores do side by side)

    def stage_one(check):
        return _sample_and_refine(win, model, schedule, solver, settings, factor, roi, threads.checked(callback, check))

    def classical(check):
        stage = f"x{factor} classical" if factor > 1 else "classical"
        return _classical_kernel(win, S, stage, threads.checked(callback, check))

    est, k_c = threads.concurrently(win.device, stage_one, classical)
    _weigh_classical(est, win, solver, settings, k_c)
    return est


def _sample_and_refine(win, model, schedule, solver, settings, factor, roi, callback) -> KernelEstimate:
    """Stage I (guided sampling) and Stage II (the refiner) on the window ``win``; MAP_k among the samples."""
    sampler = plugins.get("sampler", settings.sampler)
    refiner = plugins.get("refiner", settings.refiner)
    S = model.kernel_size
    y_batch = win.expand(settings.samples, -1, -1, -1).contiguous()
    generator = torch.Generator().manual_seed(int(settings.seed))
    guidance = None
    loss = settings.effective_guidance_loss()  # the paper's reblur loss through F, or the latent loss (phase-aware)
    if settings.guided:  # a solver plugin may offer a cheaper copy for the many guidance solves (``for_guidance``)
        g_solver = solver.for_guidance() if settings.effective_fast_guidance() and hasattr(solver, "for_guidance") else solver
        guidance = build_guidance(loss, g_solver, y_batch, settings.sigma, scale=settings.guidance_scale, route=settings.route,
                                  discrepancy=settings.discrepancy)
    steps = settings.effective_steps()
    stage = f"x{factor} sampling" if factor > 1 else "sampling"
    refining = f"x{factor} refining" if factor > 1 else "refining"

    def on_step(i, n, info):
        if callback:
            callback(stage, i + 1, n, info)

    result = sampler.sample(model, schedule, y_batch, steps=steps, guidance=guidance, generator=generator, callback=on_step)
    k = result.k
    g_refine = build_guidance(loss, solver, y_batch, settings.sigma, scale=settings.guidance_scale, route=settings.route,
                              discrepancy=settings.discrepancy)  # Stage II and MAP_k with the solver itself
    J = settings.effective_refine_steps()
    if J > 0:
        total = refiner.total_steps(J, S, settings.samples)
        ref = refiner.refine(
            g_refine, k, steps=J,
            callback=lambda j, r: callback and callback(refining, j + 1, total, {"residual": float(r.min())}),
        )
    else:
        ref = refine(g_refine, k, steps=0)  # projection and residuals only
    if settings.kernel_threshold > 0:  # the sample's haze and Stage II's ripple removed (docs/deblur.md)
        k_clean = clean_kernel(ref.k, settings.kernel_threshold)
        with torch.no_grad():  # MAP_k over the samples as they are kept
            ref = RefineResult(k_clean, g_refine.residual(k_clean), ref.trace)
    residuals = ref.residual.tolist()
    best = int(torch.argmin(g_refine.penalty(ref.residual)))
    k_best = ops.center_kernel(ref.k[best : best + 1])
    refine_trace = [step[best] for step in ref.trace]
    return KernelEstimate(k_best, residuals, best, roi, factor, result.trace, refine_trace)


def _classical_kernel(win: torch.Tensor, S: int, stage: str, callback) -> torch.Tensor:
    """The classical alternating estimate (:mod:`kdiff_cli.maths.alternating`) of the window, S x S."""
    from kdiff_cli.maths import alternating

    def on_round(i, info):
        if callback:
            callback(stage, i, info["total"], {"residual": info["residual"]})

    return alternating.estimate_kernel(win, alternating.AlternatingSettings(kernel_size=S), on_round).k


def _weigh_classical(est: KernelEstimate, win, solver, settings: BlindSettings, k_c: torch.Tensor, lights: bool = False) -> None:
    """MAP_k over one more candidate ``k_c``: the classical alternating estimate of the same window.

    It replaces the sample when it scores lower (``--choice``: the normalized sparsity of
    ``F(y, k)``, or the reblur penalty). The two fail on different images, so the choice gains over
    either (docs/deblur.md). ``lights``: a photo with light streaks (:func:`lights_floor`): the
    scores regularise for noise ``settings.lights_sigma``, and the fallback asks the final solver
    (:func:`lights_keep_input`).
    """
    k_c = k_c.to(device=est.k.device, dtype=est.k.dtype)
    g = ReblurGuidance(solver, win, settings.sigma, discrepancy=settings.discrepancy)
    with torch.no_grad():  # (sample, classical) on the window
        both = torch.cat([g.residual(k.to(win.dtype)) for k in (est.k, k_c)])
    est.classical_residual = float(both[1])
    est.agreement = float(ops.mnc(est.k[0, 0].double(), k_c[0, 0].double()).clamp(0, 1))
    if settings.choice == "sparsity":  # kdiff_cli.maths.choice: the reblur residual rewards a dot
        candidates = [est.k, k_c] + ([choice.delta_like(k_c)] if settings.fallback else [])
        sigma = noise_level(settings.sigma, win)
        floor = settings.lights_sigma if lights else choice.SIGMA_FLOOR
        score = choice.sparsity_scores(solver, win, candidates, sigma, floor=floor)
        est.scores = [float(v) for v in score]
        if lights and settings.fallback:
            best = est.k if bool(score[0] <= score[1]) else k_c
            keep = lights_keep_input(est, win, solver, settings, best, sigma)
        else:
            keep = settings.fallback and choice.keep_input(score)
        if keep:
            # neither kernel makes F(y, k) sharper than y itself: keep the input (no photo made worse)
            est.k, est.kept = choice.delta_like(k_c), "none"
            with torch.no_grad():
                est.none_residual = float(g.residual(est.k.to(win.dtype)))
            return
    else:
        score = g.penalty(both)
    if bool(score[1] < score[0]):
        est.k, est.kept = ops.center_kernel(k_c), "classical"


# --------------------------------------------------------------------------- full pipeline


#: the final-image solver of ``--final-solver auto`` on photos (measured: docs/deblur.md)
PHOTO_FINAL_SOLVER = "hqs"


def final_solver_name(final: str, solver: str, photo: bool) -> str:
    """The name of the final image's solver: ``final`` (``--final-solver``), or for ``auto``
    :data:`PHOTO_FINAL_SOLVER` on a photo and ``solver`` (``--solver``) on a small crop."""
    if final != "auto":
        return final
    return PHOTO_FINAL_SOLVER if photo else solver


def final_solver(solver: torch.nn.Module, settings: BlindSettings, device: torch.device, photo: bool = False) -> torch.nn.Module:
    """The solver of the final image: ``settings.final_solver`` (a learned one with its shipped
    weights) on ``device``; ``auto``: :data:`PHOTO_FINAL_SOLVER` for a photo (short side >=
    ``scale.CROP_SIDE``), ``solver`` itself on small crops (the 256 x 256 benchmarks' path, kept
    comparable with the published BSD100 table)."""
    name = final_solver_name(settings.final_solver, settings.solver, photo)
    if name == getattr(solver, "name", settings.solver):
        return solver
    from kdiff_cli.solvers import cached_solver

    return cached_solver(name, None, str(device))


def deblur_image(y: torch.Tensor, model: torch.nn.Module, schedule, solver: torch.nn.Module, settings: BlindSettings,
                 callback: Callable[[str, int, int, dict], None] | None = None) -> BlindResult:
    """Kernel-Diff on one image: :func:`estimate_kernel` (same arguments) on a window, then the
    final step on the whole image (:mod:`kdiff_cli.blind.final`)."""
    start = time.perf_counter()
    y_work = camera.to_linear(y) if settings.linear else y
    est = estimate_kernel(y_work, model, schedule, solver, settings, callback)
    photo = est.plan is not None and est.plan.get("how") == "coarse"
    with torch.no_grad():
        sigma = final_sigma(noise_level(settings.sigma, y_work), est.agreement, settings, photo=photo,
                            floor=lights_floor(est.plan.get("streaks"), settings) if photo else 0.0)
    x = final_image(y, est, sigma, solver, settings)
    return BlindResult(x, est, time.perf_counter() - start, float(sigma.reshape(-1)[0]))


def final_image(y: torch.Tensor, est: KernelEstimate, sigma, solver: torch.nn.Module, settings: BlindSettings) -> torch.Tensor:
    """``x = F(y, k)`` on the whole image ``y`` (1, C, H, W) with the estimate's kernel and the final
    noise level ``sigma``: the fallback's input kept as is, the final solver of ``settings``
    (:func:`final_solver`; a photo is an image whose short side is at least ``scale.CROP_SIDE``),
    linear light when ``settings.linear``."""
    if est.kept == "none":  # the fallback: no kernel made y sharper than no deconvolution
        return y.clone()
    y_work = camera.to_linear(y) if settings.linear else y
    large = min(y.shape[-2:]) >= scale.CROP_SIDE  # a photo, not a benchmark crop
    x = deconvolve(final_solver(solver, settings, y_work.device, large), y_work, est.k, sigma, tile=settings.tile)
    return camera.to_encoded(x) if settings.linear else x


__all__ = [
    "DEFAULT_WEIGHTS",
    "BlindSettings",
    "KernelEstimate",
    "BlindResult",
    "estimate_kernel",
    "deblur_image",
    "final_sigma",
    "final_image",
    "final_solver",
    "final_solver_name",
    "load_kernel_model",
    "plan_scale",
    "settings_dict",
]
