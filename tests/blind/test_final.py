"""kdiff_cli.blind.final: the noise level of the final deconvolution, from the noise estimate and the
agreement of the MAP_k candidates."""

import pytest
import torch

from kdiff_cli.blind.final import final_sigma
from kdiff_cli.blind.settings import BlindSettings


def test_final_sigma_grows_with_the_candidates_disagreement():
    s = BlindSettings()
    sigma = torch.tensor([0.01])
    assert float(final_sigma(sigma, None, s)) == pytest.approx(0.03)  # no second estimate: the floor
    assert float(final_sigma(torch.tensor([0.05]), None, s)) == pytest.approx(0.05)  # noisier than the floor
    assert float(final_sigma(sigma, 1.0, s)) == pytest.approx(0.01)  # agreeing candidates: the noise alone
    values = [float(final_sigma(sigma, a, s)) for a in (1.0, 0.9, 0.7, 0.3)]
    assert values == sorted(values) and values[-1] == pytest.approx((0.01**2 + 0.006 * 0.7) ** 0.5)
    assert float(final_sigma(sigma, 0.2, BlindSettings(kernel_uncertainty=0.0))) == pytest.approx(0.01)
    assert float(final_sigma(sigma, 0.2, BlindSettings(kernel_uncertainty=None))) == pytest.approx(0.03)


def test_final_solver_auto_is_hqs_on_photos_and_the_solver_on_crops():
    import torch

    from kdiff_cli.blind.estimator import final_solver
    from kdiff_cli.blind.settings import BlindSettings
    from kdiff_cli.solvers import load_solver

    wiener = load_solver("wiener", device="cpu")
    cpu = torch.device("cpu")
    assert final_solver(wiener, BlindSettings(), cpu, photo=True).name == "hqs"
    assert final_solver(wiener, BlindSettings(), cpu, photo=False) is wiener
    assert final_solver(wiener, BlindSettings(final_solver="wiener"), cpu, photo=True) is wiener
    assert final_solver(wiener, BlindSettings(final_solver="hqs"), cpu, photo=False).name == "hqs"
