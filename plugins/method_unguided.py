"""`unguided`: Kernel-Diff without reblur guidance (the paper's Table 4 ablation)."""

from kdiff_cli.blind.settings import UNGUIDED
from kdiff_cli.hookspecs import hookimpl
from kdiff_plugins.method_kernel_diff import KernelDiff


class Unguided(KernelDiff):
    name = "unguided"
    description = "Kernel-Diff without reblur guidance (the paper's Table 4 ablation)"
    sampler = UNGUIDED  # forced whatever --sampler says


@hookimpl
def register_methods(register):
    register(Unguided)
