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
