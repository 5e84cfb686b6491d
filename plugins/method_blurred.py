"""The trivial baseline: return the blurred input unchanged (no kernel estimate)."""

from kdiff_cli.blind.result import MethodResult
from kdiff_cli.hookspecs import hookimpl


class Blurred:
    name = "blurred"
    description = "baseline: the blurred input itself (no deblurring, no kernel)"

    def run(self, y) -> MethodResult:
        """``x = y``, no kernel."""
        return MethodResult(y, None, {})


@hookimpl
def register_methods(register):
    register(Blurred())
