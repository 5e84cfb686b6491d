"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class KdiffError(Exception):
    """An error caused by the user's input or environment (bad file, bad option, missing weights)."""

    exit_code = 2


class KdiffWarning(UserWarning):
    """Something kdiff changed about the user's input or output (an alpha channel dropped, a kernel
    clipped, pixels clipped or quantised): the CLI prints it as one ``warning: ...`` line, and
    ``kdiff deblur`` also records it in report.json (``warnings``)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C so that the same clean-up runs
    (temporary files removed, worker processes ended); the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def handle_termination() -> None:
    """Make SIGTERM (job schedulers, ``timeout``) and SIGHUP (a closed terminal) raise
    :class:`Terminated` in the main thread instead of killing the process on the spot."""
    import signal

    def raise_terminated(signum, frame):  # noqa: ARG001
        raise Terminated(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), raise_terminated)
