"""Plugin hook specifications for kdiff.

Every hook receives a ``register`` callback. Call ``register(component)`` once per component;
a component is any object (class or instance) with a ``name`` (str, unique within its kind) and
a ``description`` (one line). What else it must provide depends on the kind; see docs/plugins.md.
Third-party distributions expose a module with ``@hookimpl`` functions through the entry-point
group ``kdiff``.
"""

import pluggy

hookspec = pluggy.HookspecMarker("kdiff")
hookimpl = pluggy.HookimplMarker("kdiff")


@hookspec
def register_kernel_generators(register):
    """Register blur-kernel generators: ``sample(rng, count, size, **params) -> (count, size, size)``."""


@hookspec
def register_solvers(register):
    """Register non-blind solvers: ``nn.Module`` classes computing ``forward(y, k, sigma=None) -> x``."""


@hookspec
def register_samplers(register):
    """Register kernel samplers: ``sample(model, schedule, y, *, guidance, generator, callback, ...)``."""


@hookspec
def register_datasets(register):
    """Register evaluation datasets: ``load(**options) -> list[ItemRef]`` (see kdiff_cli.items)."""


@hookspec
def register_metrics(register):
    """Register image/kernel metrics: ``compute(estimate, reference) -> float``."""


@hookspec
def register_methods(register):
    """Register blind deblurring methods: ``run(y, **options) -> MethodResult`` (unpacks as ``x, k, info``)."""


@hookspec
def register_refiners(register):
    """Register Stage II kernel refiners: ``refine(guidance, k0, *, steps, callback) -> RefineResult``."""
