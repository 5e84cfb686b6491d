"""``kdiff deblur``: the options (the everyday ones first, the rest under "Research options") and
the progress bars; :func:`kdiff_cli.apps.deblur.deblur_files` does the work."""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kdiff_cli.errors import KdiffError
from kdiff_cli.cli_common import RESEARCH, user_errors


class Quality(str, Enum):
    """``kdiff deblur --quality``: the presets of :data:`kdiff_cli.blind.settings.QUALITY`."""

    fast = "fast"
    default = "default"
    best = "best"


@user_errors
def deblur_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Blurred images or globs: PNG, JPEG, TIFF, BMP.", metavar="IMAGES", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the images, kernels, report.json.", metavar="DIR")],
    kernel: Annotated[Optional[Path], typer.Option("--kernel", "-k", help="Known kernel (.npy or image): non-blind. Its centre is the pixel at index size//2 (as MATLAB conv2 'same' and scipy.ndimage; see --kernel-center).", metavar="FILE", show_default=False)] = None,
    method: Annotated[str, typer.Option(help="kernel-diff (default), unguided, alternating.", metavar="NAME", show_default=False)] = "kernel-diff",
    solver: Annotated[str, typer.Option(help="Solver F: wiener (default), dwdn, unrolled.", metavar="NAME", show_default=False)] = "wiener",
    quality: Annotated[Quality, typer.Option(help="fast, default, best: sampler/steps/samples.", metavar="LEVEL", show_default=False)] = Quality.default,
    seed: Annotated[int, typer.Option(help="Random seed (default 0); same seed, same x.", metavar="N", show_default=False)] = 0,
    sampler: Annotated[Optional[str], typer.Option(help="Kernel sampler: ddim, ddpm, lookup, unguided (default: --quality's, ddim).", rich_help_panel=RESEARCH)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Reverse diffusion steps (default: --quality's; default quality: the sampler's, ddpm 1000, ddim 25).", rich_help_panel=RESEARCH)] = None,
    samples: Annotated[Optional[int], typer.Option(help="Kernels sampled as one batch; the lowest guidance loss wins (default: --quality's; default quality: 1).", rich_help_panel=RESEARCH)] = None,
    refiner: Annotated[str, typer.Option(help="Stage II refiner: alternating (default, measured) or reblur (the paper's gradient steps).", rich_help_panel=RESEARCH)] = "alternating",
    refine_steps: Annotated[Optional[int], typer.Option(help="Stage II steps (default: --quality's; default quality: the refiner's, reblur 50 gradient steps, alternating 10 rounds per level; 0: none).", rich_help_panel=RESEARCH)] = None,
    classical: Annotated[bool, typer.Option("--classical/--no-classical", help="MAP_k also weighs the classical alternating estimate of the window; the lower reblur residual wins (measured default, docs/deblur.md).", rich_help_panel=RESEARCH)] = True,
    kernel_size: Annotated[Optional[int], typer.Option(help="Side of the full-resolution kernel (default: auto; kernel-diff: from a coarse pass on photos, 64 on small images; alternating: 64).", rich_help_panel=RESEARCH)] = None,
    linear: Annotated[bool, typer.Option("--linear/--no-linear", help="Estimate and deconvolve in linear light (sRGB decoded) and encode the result back (default: off, measured in docs/deblur.md).", rich_help_panel=RESEARCH)] = False,
    fallback: Annotated[bool, typer.Option("--fallback/--no-fallback", help="Keep the input unchanged when no estimated kernel makes it sharper than no deconvolution (--choice sparsity) or the photo-scale coarse passes find no blur, only a kernel spread over the canvas (default: on).", rich_help_panel=RESEARCH)] = True,
    final_solver: Annotated[Optional[str], typer.Option(help="Blind: solver of the final image x = F(y, k): auto (default: hqs, the hyper-Laplacian prior, on photos; --solver on images under 300 px), wiener, hqs, dwdn, unrolled.", metavar="NAME", rich_help_panel=RESEARCH)] = None,
    choice: Annotated[str, typer.Option(help="MAP_k between the diffusion sample and the classical candidate: sparsity (of F(y, k), default) or reblur (the residual; rewards a dot).", rich_help_panel=RESEARCH)] = "sparsity",
    weights: Annotated[Optional[str], typer.Option(help="Kernel-diff weights: shipped name or .safetensors path.", rich_help_panel=RESEARCH)] = None,
    solver_weights: Annotated[Optional[Path], typer.Option(help="Solver weights .safetensors (default: the shipped ones).", rich_help_panel=RESEARCH)] = None,
    roi: Annotated[Optional[str], typer.Option(help="Kernel-estimation window x,y,w,h (default: strongest edges).", rich_help_panel=RESEARCH)] = None,
    polish: Annotated[int, typer.Option(help="Blind, photos: rounds of the full-resolution kernel polish on the strongest-edge 512 px window, kept only when its deconvolution is sharper (default 20; 0: off; docs/deblur.md).", metavar="N", rich_help_panel=RESEARCH)] = 20,
    coarse_scales: Annotated[int, typer.Option(help="Photos: run the coarse pass at this many scales (the coarse factor, then doubled) and keep the estimate that deconvolves most sparsely (default 2; 1: one scale).", metavar="N", rich_help_panel=RESEARCH)] = 2,
    downscale: Annotated[str, typer.Option(help="auto or N: run the kernel prior on the image downscaled N times (auto: where the blur fits its canvas).", rich_help_panel=RESEARCH)] = "auto",
    guidance_scale: Annotated[float, typer.Option(help="c in the guidance step delta = c / ||y - k0*x0||^2 (default measured, see docs/deblur.md).", rich_help_panel=RESEARCH)] = 4.0,
    route: Annotated[str, typer.Option(help="Guidance gradient w.r.t. k0 (k0_hat, cheap) or kt (through the U-Net, as written).", rich_help_panel=RESEARCH)] = "k0",
    discrepancy: Annotated[Optional[float], typer.Option(help="tau: guide the reblur residual to tau x the noise energy instead of down to 0 (default and 0: off, the paper's loss; see docs/deblur.md).", rich_help_panel=RESEARCH)] = None,
    guidance_loss: Annotated[str, typer.Option(help="Blind: loss of Stage I's guidance and of --refiner reblur: reblur (the paper's ||y - k*F(y,k)||^2 through --solver; blind to the kernel's phase with wiener), latent (the reblur of the sparse latent image's gradients, docs/deblur.md) or auto (default: latent with --refiner reblur, else reblur).", metavar="NAME", rich_help_panel=RESEARCH)] = "auto",
    fast_guidance: Annotated[Optional[bool], typer.Option("--fast-guidance/--full-guidance", help="Blind: Stage I's guidance solves with the solver's cheaper copy (wiener: 3 boundary CG steps instead of 12) or the solver itself (default: the copy, the solver itself with --refiner reblur; docs/deblur.md).", show_default=False, rich_help_panel=RESEARCH)] = None,
    kernel_threshold: Annotated[float, typer.Option(help="Blind: the kernel leaving Stage II (the sample with --refine-steps 0) keeps only entries >= this fraction of its peak, without pieces under 5% of its mass (0: off; docs/deblur.md).", rich_help_panel=RESEARCH)] = 0.1,
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in [0, 1] units (default: estimated from each image).", rich_help_panel=RESEARCH)] = None,
    final_sigma_floor: Annotated[float, typer.Option(help="Blind, --no-classical: the final deconvolution regularises as if the noise std were at least this.", rich_help_panel=RESEARCH)] = 0.03,
    lights_sigma: Annotated[float, typer.Option(help="Blind, photos where isolated light streaks agree on a blur (night shots): the kernel choice and the final deconvolution regularise as if the noise std were at least this, against ringing around clipped lights (0: off; docs/deblur.md).", rich_help_panel=RESEARCH)] = 0.03,
    kernel_uncertainty: Annotated[float, typer.Option(help="Blind: u in sigma_final^2 = sigma^2 + u (1 - MNC of the sample and the classical candidate); the kernels' disagreement as extra noise (docs/deblur.md).", rich_help_panel=RESEARCH)] = 0.006,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=RESEARCH)] = "auto",
    tile: Annotated[Optional[int], typer.Option(help="Tile side of the final deconvolution (default: the solver's: 2048 for wiener and hqs, so photos up to 4 MP are solved whole; 512 for dwdn and unrolled). Each tile is solved with a halo of twice the kernel size.", rich_help_panel=RESEARCH)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace outputs that exist in --out before the run (default: refuse; inputs are never overwritten).", rich_help_panel=RESEARCH)] = False,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: deblur only every N-th input from the I-th (job arrays; its report is report.I-of-N.json). Under torchrun the ranks split the inputs by themselves and rank 0 writes report.json.", metavar="I/N", rich_help_panel=RESEARCH)] = None,
    kernel_center: Annotated[str, typer.Option("--kernel-center", help="--kernel's centre convention: ndimage (default: index size//2, MATLAB conv2 'same', scipy.ndimage) or signal (scipy.signal.convolve2d 'same': an even side's centre one pixel earlier).", metavar="NAME", show_default=False, rich_help_panel=RESEARCH)] = "ndimage",
):
    """Deblur images: blind (Kernel-Diff by default) or, with --kernel, non-blind."""
    from kdiff_cli import progress
    from kdiff_cli.apps import deblur
    from kdiff_cli.blind.settings import quality_options
    from kdiff_cli.blind.window import parse_roi
    from kdiff_cli import shard as sharding

    paths = deblur.expand_inputs(inputs)
    part = sharding.resolve(shard)
    mine = part.take(paths)  # this process's share (all of them without --shard or torchrun)
    preset = quality_options(quality.value, sampler=sampler, steps=steps, samples=samples, refine_steps=refine_steps)
    options = {
        **preset, "refiner": refiner, "classical": classical, "solver": solver,
        "guidance_scale": guidance_scale, "guidance_loss": guidance_loss, "route": route, "kernel_threshold": kernel_threshold, "roi": parse_roi(roi) if kernel is None else None, "downscale": downscale,
        "sigma": sigma, "final_sigma_floor": final_sigma_floor, "kernel_uncertainty": kernel_uncertainty, "lights_sigma": lights_sigma, "seed": seed, "tile": tile, "weights": weights, "solver_weights": solver_weights,
        "kernel_size": kernel_size, "linear": linear, "choice": choice, "fallback": fallback,
        "final_solver": final_solver or "auto", "coarse_scales": coarse_scales, "polish": polish,
    }
    if fast_guidance is not None:  # absent: BlindSettings decides by the refiner
        options["fast_guidance"] = fast_guidance
    if discrepancy is not None:  # absent: the measured default of BlindSettings; 0: the paper's plain loss
        options["discrepancy"] = None if discrepancy == 0 else discrepancy
    if method not in ("kernel-diff", "unguided") and final_solver is not None:
        raise KdiffError(f"--final-solver applies to --method kernel-diff and unguided, not {method}")
    if method not in ("kernel-diff", "unguided"):
        for name in ("linear", "choice", "fallback", "final_solver", "coarse_scales", "kernel_threshold", "fast_guidance", "lights_sigma", "polish", "guidance_loss"):  # Kernel-Diff settings only
            options.pop(name, None)

    bars: dict = {}

    def on_start(p):  # blind: one bar per image over its stages
        stack.close()
        bars["totals"] = {}  # the total comes from the stages' own lengths (on_progress)
        bars["update"] = stack.enter_context(progress.task_bar(Path(p).name, total=None, unit="steps"))

    def on_progress(stage, i, n, info):
        # every stage (sampling, refining, their x2 passes) reports its own length; the bar adds them up
        bars["totals"][stage] = n
        bars["update"](1, total=sum(bars["totals"].values()), stage=stage, **{k: v for k, v in info.items() if k == "residual"})

    def on_done(p, err):
        if err is not None:
            typer.echo(f"error: {err}", err=True)
        if kernel is not None:  # non-blind: one bar over the images
            bars["update"](1)

    try:
        with contextlib.ExitStack() as stack:
            if kernel is not None:
                bars["update"] = stack.enter_context(progress.task_bar(f"deblur ({solver})", total=len(mine), unit="images"))
            report = deblur.deblur_files(paths, out, method, options, device, None if kernel is not None else on_start,
                                         on_progress, on_done, kernel=kernel, quality=quality.value, overwrite=overwrite,
                                         kernel_center=kernel_center, shard=part)
    finally:
        part.close()
    for path in report.written:
        typer.echo(str(path))
    if report.failed:
        typer.echo(f"{len(report.failed)} of {len(mine)} inputs failed", err=True)
        raise typer.Exit(1)
