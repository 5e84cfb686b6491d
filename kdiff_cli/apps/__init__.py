"""The application layer: what each command does (deblur, eval, train, synth-kernels, toy, figures).

Imports blind, maths and the foundation; the CLI (kdiff_cli.cli) is the only module above it."""
