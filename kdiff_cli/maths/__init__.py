"""The maths layer: operators, deconvolution, the diffusion model, sampling, guidance, metrics.

Imports only the foundation (kdiff_cli.errors, ...) and itself; never blind, apps or the CLI."""
