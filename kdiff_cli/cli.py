"""The ``kdiff`` command line: thin Typer commands whose bodies call the engine modules.

Each area keeps its commands in its own section below; engine imports happen inside the command
bodies so that ``kdiff --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from kdiff_cli import __version__
from kdiff_cli.errors import KdiffError, KdiffWarning, Terminated, handle_termination


#: click's UsageError as Typer raises it (recent Typer versions bundle their own click)
USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def one_line(text: str) -> str:
    """``text`` on one line: its non-empty lines joined by ``; ``."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


@contextlib.contextmanager
def _usage_errors_one_line():
    """A usage error (a bad value such as ``--count 1e9``, an unknown option or command) becomes one
    ``error: ...`` line and exit 2, instead of Typer's box."""
    try:
        yield
    except USAGE_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # no arguments: the help screen, as asked
            raise
        message = one_line(e.format_message()).rstrip(".")
        message = message[:1].lower() + message[1:]
        where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
        typer.echo(f"error: {message}{where}", err=True)
        raise typer.Exit(e.exit_code) from None


class OneLineErrors(TyperGroup):
    """The root command: usage errors of every command are one line (:func:`_usage_errors_one_line`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_errors_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with _usage_errors_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    cls=OneLineErrors,
    name="kdiff",
    help="Blind image deblurring by kernel diffusion (Kernel-Diff): synthesise kernels, train, deblur, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


#: the help panel of the options most runs leave alone (the everyday ones come first, under "Options")
RESEARCH = "Research options"


class Quality(str, Enum):
    """``kdiff deblur --quality``: the presets of :data:`kdiff_cli.blind.settings.QUALITY`."""

    fast = "fast"
    default = "default"
    best = "best"


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _warnings_one_line():
    """Show a :class:`KdiffWarning` (alpha dropped, kernel clipped, ...) as one ``warning: ...`` line,
    every time it is raised; other warnings as Python shows them."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", KdiffWarning)
        show = warnings.showwarning

        def one_line_warning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, KdiffWarning):
                typer.echo(f"warning: {one_line(str(message))}", err=True)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line_warning
        yield


def user_errors(fn):
    """Turn :class:`KdiffError` (and Ctrl-C) into a one-line message and a non-zero exit; show
    kdiff's warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with _warnings_one_line():
                return fn(*args, **kwargs)
        except KdiffError as e:
            fail(str(e), e.exit_code)
        except Terminated as e:
            import signal

            fail(f"terminated ({signal.Signals(e.signum).name})", 128 + e.signum)
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


def _version(value: bool):
    if value:
        typer.echo(f"kdiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
):
    """Blind image deblurring by kernel diffusion (Kernel-Diff)."""


# --------------------------------------------------------------------------- plugins


@app.command("plugins")
@user_errors
def plugins_cmd(
    kind: Annotated[Optional[str], typer.Option(help="Only this kind (generator, solver, sampler, dataset, metric, method).")] = None,
):
    """List registered components: kind, name, source and description."""
    from kdiff_cli import plugins, progress

    reg = plugins.registry()
    if kind is not None and kind not in plugins.KINDS:
        raise KdiffError(f"unknown kind {kind!r} (choose from {', '.join(plugins.KINDS)})")
    rows = [(e.kind, e.name, e.source, e.description) for e in reg.entries(kind)]
    progress.print_table("kdiff plugins", ["kind", "name", "source", "description"], rows)


# --------------------------------------------------------------------------- kernels (synth-kernels)


@app.command("synth-kernels")
@user_errors
def synth_kernels_cmd(
    generator: Annotated[str, typer.Option(help="Kernel generator (see `kdiff plugins --kind generator`).")],
    out: Annotated[Path, typer.Option(help="Output .npz: `kernels` (N, S, S) and JSON `meta`.")],
    count: Annotated[int, typer.Option(help="Number of kernels N.")] = 60000,
    size: Annotated[int, typer.Option(help="Kernel side S in pixels (>= 3).")] = 64,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives a byte-identical file.")] = 0,
    preview: Annotated[Optional[Path], typer.Option(help="Also write a PNG grid of the first 64 kernels.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: the CPUs); the kernels do not depend on it.")] = None,
    dtype: Annotated[str, typer.Option(help="Stored dtype: float32 or float16.")] = "float32",
    param: Annotated[Optional[list[str]], typer.Option("--param", help="Generator parameter key=value (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace an existing --out / --preview file (default: refuse).")] = False,
):
    """Synthesise a kernel database (the paper's: 60,000 kernels of 64 x 64 from `borodenko`)."""
    import gc
    import time

    from kdiff_cli import progress
    from kdiff_cli.apps import synth

    gc.disable()  # loading the plugins (torch) makes millions of objects; collecting them costs ~0.2 s
    try:
        request = synth.make_request(generator, count, size, seed, out, preview, workers, dtype, param or [], overwrite)
    finally:
        gc.enable()
    start = time.perf_counter()
    with progress.task_bar(f"synth-kernels {request.name}", total=request.count, unit="kernels") as update:
        synth.run(request, callback=update)
    elapsed = time.perf_counter() - start
    typer.echo(
        f"wrote {request.count} kernels {request.size}x{request.size} ({request.name}, seed {request.seed}) "
        f"to {request.out} in {elapsed:.2f} s ({request.count / max(elapsed, 1e-9):,.0f} kernels/s)"
    )


# --------------------------------------------------------------------------- training (train)


@app.command("train")
@user_errors
def train_cmd(
    task: Annotated[str, typer.Argument(help="What to train: kernel-diff, dwdn or unrolled.")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config (see configs/).")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", "-s", help="Override a config key, e.g. --set train.lr=1e-4 (repeatable).", rich_help_panel=RESEARCH)
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/TASK-DATE-TIME).")] = None,
    resume: Annotated[
        Optional[Path], typer.Option("--resume", help="Continue a run: its folder or a checkpoint file.")
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or mps (default: train.device).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Total steps (sets train.steps).")] = None,
    export: Annotated[
        Optional[Path], typer.Option(help="Also write the final EMA weights here (e.g. weights/dwdn.safetensors).")
    ] = None,
    init: Annotated[
        Optional[str], typer.Option(help="Fine-tune: start from these weights (shipped name or path; sets train.init).", rich_help_panel=RESEARCH)
    ] = None,
):
    """Train a model; checkpoints, log.csv, loss.png and ema.safetensors go to the run folder.

    Multi-process: torchrun --nproc_per_node N --no-python kdiff train TASK ...
    """
    from kdiff_cli import progress
    from kdiff_cli.apps.train import loop as train

    overrides = list(set_ or []) + ([f"train.init={init}"] if init else [])
    result = train.run(
        task, config_file=config, overrides=overrides, out=out, resume=resume, device=device, steps=steps,
        export=export, bar=progress.task_bar, echo=lambda m: typer.echo(m, err=True),
    )
    if result.weights is not None:
        val = " ".join(f"{k}={v:.4g}" for k, v in result.val.items())
        typer.echo(f"trained {result.step}/{result.steps} steps in {result.wall_time_s:.0f} s"
                   + (f"; validation {val}" if val else "") + f"; weights: {result.exported or result.weights}")

# --------------------------------------------------------------------------- deblurring (deblur)


@app.command("deblur")
@user_errors
def deblur_cmd(
    inputs: Annotated[list[str], typer.Argument(help="Blurred images or globs: PNG, JPEG, TIFF, BMP.", metavar="IMAGES", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the images, kernels, report.json.", metavar="DIR")],
    kernel: Annotated[Optional[Path], typer.Option("--kernel", "-k", help="Known kernel (.npy or image): non-blind. Its centre is the pixel at index size//2 (as MATLAB conv2 'same' and scipy.ndimage; see --kernel-center).", metavar="FILE", show_default=False)] = None,
    method: Annotated[str, typer.Option(help="kernel-diff (default), unguided, alternating.", metavar="NAME", show_default=False)] = "kernel-diff",
    solver: Annotated[str, typer.Option(help="Solver F: wiener (default), dwdn, unrolled.", metavar="NAME", show_default=False)] = "wiener",
    quality: Annotated[Quality, typer.Option(help="fast, default, best: sampler/steps/samples.", metavar="LEVEL", show_default=False)] = Quality.default,
    seed: Annotated[int, typer.Option(help="Random seed (default 0); same seed, same x.", metavar="N", show_default=False)] = 0,
    sampler: Annotated[Optional[str], typer.Option(help="Kernel sampler: ddim, ddpm, unguided (default: --quality's, ddim).", rich_help_panel=RESEARCH)] = None,
    steps: Annotated[Optional[int], typer.Option(help="Reverse diffusion steps (default: --quality's; default quality: the sampler's, ddpm 1000, ddim 25).", rich_help_panel=RESEARCH)] = None,
    samples: Annotated[Optional[int], typer.Option(help="Kernels sampled as one batch; the lowest reblur residual wins (default: --quality's; default quality: 1).", rich_help_panel=RESEARCH)] = None,
    refiner: Annotated[str, typer.Option(help="Stage II refiner: alternating (default, measured) or reblur (the paper's gradient steps).", rich_help_panel=RESEARCH)] = "alternating",
    refine_steps: Annotated[Optional[int], typer.Option(help="Stage II steps (default: --quality's; default quality: the refiner's, reblur 20 gradient steps, alternating 10 rounds per level; 0: none).", rich_help_panel=RESEARCH)] = None,
    classical: Annotated[bool, typer.Option("--classical/--no-classical", help="MAP_k also weighs the classical alternating estimate of the window; the lower reblur residual wins (measured default, docs/deblur.md).", rich_help_panel=RESEARCH)] = True,
    kernel_size: Annotated[Optional[int], typer.Option(help="Kernel size (must match the kernel-diff weights; alternating: any).", rich_help_panel=RESEARCH)] = None,
    weights: Annotated[Optional[str], typer.Option(help="Kernel-diff weights: shipped name or .safetensors path.", rich_help_panel=RESEARCH)] = None,
    solver_weights: Annotated[Optional[Path], typer.Option(help="Solver weights .safetensors (default: the shipped ones).", rich_help_panel=RESEARCH)] = None,
    roi: Annotated[Optional[str], typer.Option(help="Kernel-estimation window x,y,w,h (default: strongest edges).", rich_help_panel=RESEARCH)] = None,
    downscale: Annotated[str, typer.Option(help="auto, 1 or 2: estimate the kernel on the image downscaled by this factor.", rich_help_panel=RESEARCH)] = "auto",
    guidance_scale: Annotated[float, typer.Option(help="c in the guidance step delta = c / ||y - k0*x0||^2 (default measured, see docs/deblur.md).", rich_help_panel=RESEARCH)] = 4.0,
    route: Annotated[str, typer.Option(help="Guidance gradient w.r.t. k0 (k0_hat, cheap) or kt (through the U-Net, as written).", rich_help_panel=RESEARCH)] = "k0",
    discrepancy: Annotated[Optional[float], typer.Option(help="tau: guide the reblur residual to tau x the noise energy instead of down to 0 (default and 0: off, the paper's loss; see docs/deblur.md).", rich_help_panel=RESEARCH)] = None,
    sigma: Annotated[Optional[float], typer.Option(help="Noise std in [0, 1] units (default: estimated from each image).", rich_help_panel=RESEARCH)] = None,
    final_sigma_floor: Annotated[float, typer.Option(help="Blind, --no-classical: the final deconvolution regularises as if the noise std were at least this.", rich_help_panel=RESEARCH)] = 0.03,
    kernel_uncertainty: Annotated[float, typer.Option(help="Blind: u in sigma_final^2 = sigma^2 + u (1 - MNC of the sample and the classical candidate); the kernels' disagreement as extra noise (docs/deblur.md).", rich_help_panel=RESEARCH)] = 0.006,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=RESEARCH)] = "auto",
    tile: Annotated[int, typer.Option(help="Tile side of the final deconvolution (tiles overlap by the kernel size).", rich_help_panel=RESEARCH)] = 512,
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="Replace outputs that exist in --out before the run (default: refuse; inputs are never overwritten).", rich_help_panel=RESEARCH)] = False,
    kernel_center: Annotated[str, typer.Option("--kernel-center", help="--kernel's centre convention: ndimage (default: index size//2, MATLAB conv2 'same', scipy.ndimage) or signal (scipy.signal.convolve2d 'same': an even side's centre one pixel earlier).", metavar="NAME", show_default=False, rich_help_panel=RESEARCH)] = "ndimage",
):
    """Deblur images: blind (Kernel-Diff by default) or, with --kernel, non-blind."""
    import contextlib

    from kdiff_cli import progress
    from kdiff_cli.apps import deblur
    from kdiff_cli.blind.settings import quality_options
    from kdiff_cli.blind.window import parse_roi

    paths = deblur.expand_inputs(inputs)
    preset = quality_options(quality.value, sampler=sampler, steps=steps, samples=samples, refine_steps=refine_steps)
    options = {
        **preset, "refiner": refiner, "classical": classical, "solver": solver,
        "guidance_scale": guidance_scale, "route": route, "roi": parse_roi(roi) if kernel is None else None, "downscale": downscale,
        "sigma": sigma, "final_sigma_floor": final_sigma_floor, "kernel_uncertainty": kernel_uncertainty, "seed": seed, "tile": tile, "weights": weights, "solver_weights": solver_weights,
        "kernel_size": kernel_size,
    }
    if discrepancy is not None:  # absent: the measured default of BlindSettings; 0: the paper's plain loss
        options["discrepancy"] = None if discrepancy == 0 else discrepancy
    if method in ("kernel-diff", "unguided"):
        options.pop("kernel_size")
        if kernel_size is not None:
            options["expect_kernel_size"] = kernel_size

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

    with contextlib.ExitStack() as stack:
        if kernel is not None:
            bars["update"] = stack.enter_context(progress.task_bar(f"deblur ({solver})", total=len(paths), unit="images"))
        report = deblur.deblur_files(paths, out, method, options, device, None if kernel is not None else on_start,
                                     on_progress, on_done, kernel=kernel, quality=quality.value, overwrite=overwrite,
                                     kernel_center=kernel_center)
    for path in report.written:
        typer.echo(str(path))
    if report.failed:
        typer.echo(f"{len(report.failed)} of {len(paths)} inputs failed", err=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- evaluation (eval)


@app.command("eval")
@user_errors
def eval_cmd(
    dataset: Annotated[str, typer.Argument(help="Dataset: bsd100, levin, folder (see `kdiff plugins --kind dataset`).")],
    data_dir: Annotated[
        Optional[Path], typer.Option("--data-dir", "-d", help="Dataset folder (bsd100: <id>.jpg files, the BSDS300/500 layout or the .tgz).")
    ] = None,
    download: Annotated[bool, typer.Option("--download", help="bsd100: fetch BSDS300-images.tgz into the user cache.")] = False,
    method: Annotated[
        Optional[str], typer.Option("--method", "-m", help="Comma-separated methods, each NAME[:key=value...] (default: blurred,oracle,kernel-diff).")
    ] = None,
    method_opt: Annotated[
        Optional[list[str]], typer.Option("--method-opt", help="KEY=VALUE (or METHOD.KEY=VALUE) for the methods, e.g. steps=25 (repeatable).", rich_help_panel=RESEARCH)
    ] = None,
    metric: Annotated[
        Optional[str], typer.Option("--metric", help="Comma-separated metrics, each NAME[:key=value...] (default: the dataset's, e.g. psnr,ssim,lpips,fid,mnc; psnr and ssim also aligned).")
    ] = None,
    metric_opt: Annotated[
        Optional[list[str]], typer.Option("--metric-opt", help="KEY=VALUE (or METRIC.KEY=VALUE) for the metrics, e.g. max_shift=5, border=16: the aligned scores' shift search and cropped border (default 10, 15; repeatable).", rich_help_panel=RESEARCH)
    ] = None,
    metric_weights: Annotated[
        Optional[Path], typer.Option("--metric-weights", help="Folder with LPIPS/FID backbone weights (default: the torch hub cache).", rich_help_panel=RESEARCH)
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", help="Only the first N images.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder; re-running skips finished images (default: eval-DATASET).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="bsd100: protocol seed (default 2023).", rich_help_panel=RESEARCH)] = None,
    generator: Annotated[Optional[str], typer.Option(help="bsd100: kernel generator (default borodenko).", rich_help_panel=RESEARCH)] = None,
    sigma: Annotated[Optional[float], typer.Option(help="bsd100: Gaussian noise std (default 0.01).", rich_help_panel=RESEARCH)] = None,
    crop: Annotated[Optional[int], typer.Option(help="bsd100: crop side (default 256).", rich_help_panel=RESEARCH)] = None,
    kernel_size: Annotated[Optional[int], typer.Option("--kernel-size", help="bsd100: kernel side (default 64).", rich_help_panel=RESEARCH)] = None,
    export: Annotated[
        Optional[Path], typer.Option("--export", help="Write the blurred set, kernels and ground truth here (alone unless --method is given).", rich_help_panel=RESEARCH)
    ] = None,
    grid: Annotated[int, typer.Option(help="Rows of grid.png (the paper's Figure 4); 0 for none.", rich_help_panel=RESEARCH)] = 4,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite", help="--export: replace files that exist there (default: refuse). The --out folder is kdiff's own resume cache.", rich_help_panel=RESEARCH)] = False,
):
    """Evaluate blind deblurring methods on a benchmark: table, metrics.json/.csv, grid.png."""
    from kdiff_cli.apps import datasets, evaluate
    from kdiff_cli import progress

    options = {"data_dir": data_dir, "download": download, "seed": seed, "generator": generator, "sigma": sigma,
               "crop": crop, "kernel_size": kernel_size}
    if export is not None:
        p = evaluate.plan(dataset, options, limit)
        datasets.export(p.refs, export, p.protocol, overwrite=overwrite)
        typer.echo(f"exported {len(p.refs)} items of {dataset} to {export}", err=True)
        if method is None:
            return
    report = evaluate.run(
        dataset, options, methods=method, method_opts=method_opt or [], metrics=metric, metric_opts=metric_opt or [], metric_weights=metric_weights,
        limit=limit, out=out or Path(f"eval-{dataset}"), device=device, grid=grid, bar=progress.task_bar,
        on_error=lambda item, message: typer.echo(f"error: item {item} skipped: {one_line(message)}", err=True),
    )
    progress.print_table(f"kdiff eval {dataset} ({len(report.ids)} images)", report.table_header(), report.table_rows())
    for note in report.notes():
        typer.echo(note, err=True)
    typer.echo(f"{report.computed} runs, {report.cached} from cache; results in {report.out}", err=True)
    if report.failed:
        typer.echo(f"{len(report.failed)} of {len(report.failed) + len(report.ids)} items failed (listed in metrics.json)", err=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------- analysis (toy, figures)


@app.command("toy")
@user_errors
def toy_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNG figures and toy.json (created if missing).")],
    seed: Annotated[int, typer.Option(help="Seed of the noise, the surface directions and the random starts.")] = 0,
    starts: Annotated[int, typer.Option("--starts", help="M random starts for alternating minimization and MAP_k.")] = 200,
    noise: Annotated[float, typer.Option(help="Standard deviation beta of the additive Gaussian noise.")] = 0.01,
):
    """The paper's 1-D toy (sec. 3.1): alternating MAP_{x,k} falls into false minima, MAP_k does not."""
    from kdiff_cli import progress
    from kdiff_cli.apps.analysis import toy

    result = toy.run_toy(toy.ToyConfig(seed=seed, starts=starts, noise=noise))
    written = toy.write_outputs(result, out)
    progress.print_table(f"kdiff toy: {starts} random starts, noise {noise}, seed {seed}", *toy.summary_table(result.summary))
    typer.echo(f"wrote {len(written)} files to {out}")


figures_app = typer.Typer(help="Regenerate the paper's figures (Figure 5: residual over iterations).", no_args_is_help=True)
app.add_typer(figures_app, name="figures")


@figures_app.command("residual")
@user_errors
def figures_residual_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for residual.png and residual.json.")],
    data: Annotated[Path, typer.Option(help="Folder of sharp photos; each gets the seeded bsd100 protocol.")] = Path("../shared/data/val"),
    trials: Annotated[int, typer.Option(help="Number of trials (images); the paper's figure uses >= 10.")] = 10,
    weights: Annotated[Optional[str], typer.Option(help="Kernel-diff weights (name or path).")] = None,
    solver: Annotated[str, typer.Option(help="Non-blind solver F.")] = "wiener",
    steps: Annotated[Optional[int], typer.Option(help="Reverse diffusion steps of kernel-diff.")] = None,
):
    """Figure 5: reblur residual over iterations, Kernel-Diff vs the alternating baseline."""
    from kdiff_cli.apps.analysis import figures
    from kdiff_cli import progress

    opts = {"kernel-diff": {k: v for k, v in {"weights": weights, "solver": solver, "steps": steps}.items() if v is not None}}
    with progress.task_bar("trials", total=trials, unit="trials") as update:
        summary = figures.residual_figure(data, out, trials, opts, callback=lambda i, n: update(1))
    rows = [(m, s["trials"], f"{s['final_median']:.4g}", f"{s['final_min']:.4g}", f"{s['final_max']:.4g}") for m, s in summary.items()]
    progress.print_table("final RMS reblur residual", ["method", "trials", "median", "min", "max"], rows)
    typer.echo(f"wrote {out / 'residual.png'} and {out / 'residual.json'}")


def main() -> None:
    """Console-script entry point."""
    handle_termination()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
