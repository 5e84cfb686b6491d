"""The trivial baseline: return the blurred input unchanged (no kernel estimate)."""

from kdiff_cli.hookspecs import hookimpl


class Blurred:
    name = "blurred"
    description = "baseline: the blurred input itself (no deblurring, no kernel)"

    def run(self, y):
        """``x = y``, no kernel."""
        return y, None, {}


@hookimpl
def register_methods(register):
    register(Blurred())
