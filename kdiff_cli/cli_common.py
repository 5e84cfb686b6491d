"""What the ``kdiff`` command modules share: one-line errors and warnings, and the help panel of the
research options.

A :class:`~kdiff_cli.errors.KdiffError` becomes one ``error: ...`` line and its exit code, and so
does a usage error (:class:`OneLineErrors`, the root group); a
:class:`~kdiff_cli.errors.KdiffWarning` is one ``warning: ...`` line.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import typer
from typer.core import TyperGroup

from kdiff_cli.errors import KdiffError, KdiffWarning, Terminated

#: the help panel of the options most runs leave alone (the everyday ones come first, under "Options")
RESEARCH = "Research options"

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
