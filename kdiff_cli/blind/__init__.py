"""The blind layer: Kernel-Diff kernel estimation and the final step every method shares.

``settings`` (BlindSettings, --quality presets), ``window`` (where the kernel is estimated),
``estimator`` (Stage I, Stage II, MAP_k), ``final`` (final_sigma, tiled x = F(y, k)), ``result``
(KernelEstimate, BlindResult, MethodResult). Imports maths and the foundation; never apps or the CLI."""
