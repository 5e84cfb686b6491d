"""The blind layer: Kernel-Diff kernel estimation (window, Stage I, Stage II, MAP_k) and the final step.

Imports maths and the foundation; never apps or the CLI."""
