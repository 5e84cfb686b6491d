"""The ``kdiff`` command line: the Typer app, its small commands and the entry point.

Thin Typer commands whose bodies call the apps: ``deblur`` and ``eval`` have their own modules
(:mod:`kdiff_cli.cli_deblur`, :mod:`kdiff_cli.cli_eval`), the one-line errors and warnings are in
:mod:`kdiff_cli.cli_common`. Engine imports happen inside the command bodies so that
``kdiff --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdiff_cli import __version__
from kdiff_cli.cli_common import RESEARCH, OneLineErrors, user_errors
from kdiff_cli.cli_deblur import deblur_cmd
from kdiff_cli.cli_eval import eval_cmd
from kdiff_cli.errors import KdiffError, handle_termination


app = typer.Typer(
    cls=OneLineErrors,
    name="kdiff",
    help="Blind image deblurring by kernel diffusion (Kernel-Diff): synthesise kernels, train, deblur, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


# --------------------------------------------------------------------------- deblurring, evaluation (their own modules)

app.command("deblur")(deblur_cmd)
app.command("eval")(eval_cmd)


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
