"""kdiff_cli.blind.result: what a method returns. A typed ``MethodResult`` that still unpacks as
``x, k, info``, from every kind of method (no estimate, a known kernel, the classical baseline,
Kernel-Diff with its ``KernelEstimate``), and plain tuples of third-party methods."""

import numpy as np
import torch

from kdiff_cli import files, plugins
from kdiff_cli.blind.result import KernelEstimate, MethodResult


def test_methods_return_a_method_result():
    """A method's ``run`` returns a typed :class:`MethodResult` that still unpacks as ``x, k, info``."""
    y = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    blurred = plugins.get("method", "blurred").run(y)
    assert isinstance(blurred, MethodResult) and isinstance(blurred, tuple)
    x, k, info = blurred
    assert x is y and k is None and info == {} and blurred.residual is None
    k_true = np.zeros((5, 5))
    k_true[2, 1:4] = 1 / 3
    oracle = plugins.get("method", "oracle").run(y, k_true=k_true, sigma=0.01)
    x, k, info = oracle
    assert isinstance(oracle, MethodResult) and x.shape == y.shape and k.shape == (1, 1, 5, 5)
    assert info == {"solver": "wiener"} and oracle.settings is None and oracle.estimate is None


def test_method_result_is_typed(motion_problem):
    """The method's typed fields: one reblur residual (a float, the report's ``residual``) and the
    RMS residual of every round (a list, ``round_residuals``); ``info`` keeps the raw values."""
    _, _, y = motion_problem
    res = plugins.get("method", "alternating").run(y, kernel_size=15, iterations=2)
    assert isinstance(res, MethodResult) and len(res) == 3
    assert isinstance(res.residual, float) and res.residual == res.info["reblur_residual"]
    assert res.residuals == [res.residual] and res.round_residuals == res.info["residual"]
    assert res.settings == res.info["settings"] and res.estimate is None


def test_method_result_unpacks_and_carries_typed_fields(tiny_weights, photos):
    y = files.to_tensor(files.read_image(photos / "a.png")[0])
    res = plugins.get("method", "kernel-diff").run(y, weights=str(tiny_weights), steps=2, refine_steps=1, downscale="1")
    assert isinstance(res, MethodResult) and isinstance(res, tuple) and len(res) == 3
    x, k, info = res
    assert x is res.x and k is res.k and info is res.info and x.shape == y.shape and k.shape == (1, 1, 16, 16)
    assert isinstance(res.estimate, KernelEstimate) and res.estimate.k is k
    assert res.residual == info["residual"] and res.residuals == info["residuals"] and res.settings == info["settings"]
    assert isinstance(res.final_sigma, float) and res.round_residuals is None
    # a third-party method may still return a plain tuple: typed fields are filled only with the right type
    plain = MethodResult.of((x, k, {"residual": [1.0, 2.0], "residuals": 3.0, "final_sigma": 0.1}))
    assert (plain.residual, plain.residuals, plain.final_sigma, plain.info["residual"]) == (None, None, 0.1, [1.0, 2.0])
    assert MethodResult.of(res) is res
