"""The ``kdiff`` command line: thin Typer commands whose bodies call the engine modules.

Each area keeps its commands in its own section below; engine imports happen inside the command
bodies so that ``kdiff --help`` stays fast.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kdiff_cli import __version__
from kdiff_cli.errors import KdiffError

app = typer.Typer(
    name="kdiff",
    help="Blind image deblurring by kernel diffusion (Kernel-Diff): synthesise kernels, train, deblur, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn :class:`KdiffError` (and Ctrl-C) into a one-line message and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KdiffError as e:
            fail(str(e), e.exit_code)
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

# --------------------------------------------------------------------------- training (train)

# --------------------------------------------------------------------------- deblurring (deblur)

# --------------------------------------------------------------------------- evaluation (eval)

# --------------------------------------------------------------------------- analysis (toy, figures)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
