"""The ``alternating`` method plugin (the classical blind baseline as a `kdiff deblur` / `kdiff eval`
method): progress, the report's fields, solver and option checks. What every method returns:
blind/test_result.py."""

import pytest

from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError
from kdiff_cli.maths import alternating as A
from kdiff_cli.maths import ops

SIZE = 15  # kernel side of motion_problem (conftest.py)


def test_method_registered_and_runs(motion_problem):
    x, k_true, y = motion_problem
    method = plugins.get("method", "alternating")
    y_rgb = y.expand(1, 3, -1, -1).contiguous()
    calls = []
    x_hat, k, info = method.run(y_rgb, kernel_size=SIZE, iterations=3, callback=lambda step, i: calls.append((step, i)))
    assert x_hat.shape == y_rgb.shape and float(x_hat.min()) >= 0 and float(x_hat.max()) <= 1
    assert k.shape == (1, 1, SIZE, SIZE)
    assert [s for s, _ in calls] == list(range(1, 4 * 3 + A.AlternatingSettings().polish + 1))
    assert all(i["total"] == 12 + A.AlternatingSettings().polish for _, i in calls)
    assert len(info["residual"]) == 12 + A.AlternatingSettings().polish and info["solver"] == "wiener"
    assert info["reblur_residual"] > 0
    assert float(ops.mnc(k.double(), k_true)) > 0.75


def test_method_unknown_solver(motion_problem):
    _, _, y = motion_problem
    with pytest.raises(KdiffError, match="unknown solver"):
        plugins.get("method", "alternating").run(y, kernel_size=5, iterations=1, solver="nope")


@pytest.mark.parametrize(
    "option, value, match",
    [("polish", "x", "polish must be an integer"), ("polish", 2.5, "polish must be an integer"),
     ("threshold", "x", "threshold must be a number"), ("seed", True, "seed must be an integer")],
)
def test_method_options_are_checked(motion_problem, option, value, match):
    # `kdiff eval --method alternating:KEY=VALUE` hands over parsed values: a bad one is a one-line error
    _, _, y = motion_problem
    with pytest.raises(KdiffError, match=match):
        plugins.get("method", "alternating").run(y, kernel_size=5, iterations=1, **{option: value})
