"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class KdiffError(Exception):
    """An error caused by the user's input or environment (bad file, bad option, missing weights)."""

    exit_code = 2
