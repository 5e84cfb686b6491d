"""The paper's 1-D toy (section 3.1, supplement A): numbers, outputs, determinism, CLI."""

import json

import numpy as np
import pytest

from kdiff_cli.apps.analysis import toy, toy_experiments, toy_model, toy_plots
from kdiff_cli.errors import KdiffError

M = 20


@pytest.fixture(scope="module")
def result():
    return toy.run_toy(toy.ToyConfig(seed=0, starts=M))


# --------------------------------------------------------------------------- the acceptance numbers


def test_alternating_falls_into_false_minima(result):
    alt = result.summary["alternating"]
    assert alt["false_minimum_fraction"] >= 0.4
    assert alt["false_minimum_fraction"] < 1.0  # starts overlapping the pulse do reach the optimum
    assert alt["distinct_end_points"] > 5  # many different false minima, not one


def test_map_k_recovers_sigma(result):
    mk = result.summary["map_k"]
    assert abs(mk["sigma_hat"] - 1.5) / 1.5 <= 0.05
    assert mk["sigma_relative_error"] == pytest.approx(abs(mk["sigma_hat"] - 1.5) / 1.5)
    assert (mk["a_hat"], mk["w_hat"]) == (64.0, 10.0)
    assert mk["false_minimum_fraction"] == 0.0
    assert mk["log_p_local_maxima"] == 1
    assert mk["sigma_hat_exact_marginal"] == pytest.approx(mk["sigma_hat"], abs=0.05)


def test_global_minimum_is_map_k_solution(result):
    g, mk = result.summary["global_minimum"], result.summary["map_k"]
    assert (g["a"], g["w"], g["sigma"]) == (mk["a_hat"], mk["w_hat"], mk["sigma_hat"])
    # no end point of either route is below the global minimum (up to the grid resolution)
    assert result.alt_loss.min() >= g["loss"] - 1e-3


@pytest.mark.slow
def test_deterministic_per_seed(result):
    again = toy.run_toy(toy.ToyConfig(seed=0, starts=M))
    assert json.dumps(again.summary) == json.dumps(result.summary)
    other = toy.run_toy(toy.ToyConfig(seed=1, starts=M))
    assert not np.array_equal(other.y, result.y)


def test_starts_do_not_change_y_or_directions(result):
    rng_noise, rng_dir, rng_starts = toy._streams(0)
    cfg = toy.ToyConfig(seed=0, starts=3)
    assert np.array_equal(toy_model.observe(cfg, rng_noise), result.y)
    t1, t2 = toy_experiments.random_directions(rng_dir)
    assert np.array_equal(t1, result.t1) and np.array_equal(t2, result.t2)
    assert np.array_equal(toy_experiments.random_starts(rng_starts, M), result.starts)


def test_outputs(result, tmp_path):
    written = toy.write_outputs(result, tmp_path / "toy")
    names = sorted(p.name for p in written)
    assert names == sorted(list(toy_plots.FIGURES) + [toy.JSON_NAME])
    for name in toy_plots.FIGURES:
        assert (tmp_path / "toy" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "toy" / toy.JSON_NAME).read_text())
    for key in ("config", "truth", "global_minimum", "surface", "map_k", "alternating", "log_p_sigma", "files"):
        assert key in data
    assert data["config"]["starts"] == M and data["config"]["N"] == 128
    assert len(data["log_p_sigma"]["sigma"]) == len(data["log_p_sigma"]["approx_eq16"])
    assert not list((tmp_path / "toy").glob(".*tmp*"))  # atomic writes leave no temp files


# --------------------------------------------------------------------------- the model


def test_loss_gradient_matches_finite_differences():
    y = toy_model.observe(toy.ToyConfig(), np.random.default_rng(3))
    theta = np.array([[60.3, 12.2, 1.1], [64.0, 10.0, 0.3], [30.0, 5.0, 2.9]])
    _, g = toy_model.loss_grad(theta, y)
    h = 1e-6
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        fd = (toy_model.loss(theta + e, y) - toy_model.loss(theta - e, y)) / (2 * h)
        np.testing.assert_allclose(g[:, j], fd, rtol=1e-5, atol=1e-7)


def test_blurred_pulse_properties():
    # blur preserves the mass of a pulse away from the borders, and tends to the pixel coverage
    m = toy_model.blurred_pulse(np.array([40.3, 10.5, 2.0]))
    assert m.sum() == pytest.approx(10.5, abs=1e-9)
    np.testing.assert_allclose(toy_model.blurred_pulse(np.array([40.3, 10.5, 1e-4])), toy_model.pulse(40.3, 10.5), atol=1e-9)
    assert toy_model.pulse(40.3, 10.5)[40] == pytest.approx(0.7)


def test_grid_losses_match_direct_evaluation():
    y = toy_model.observe(toy.ToyConfig(), np.random.default_rng(4))
    a, w = toy_experiments.image_grid()
    L = toy_experiments._grid_losses(y, 1.3)
    for i, j in [(0, 0), (256, 40), (100, 128), (384, 3)]:
        assert L[i, j] == pytest.approx(float(toy_model.loss(np.array([a[i], w[j], 1.3]), y)), rel=1e-9, abs=1e-9)


def test_directions_are_scaled_and_orthogonal():
    t1, t2 = toy_experiments.random_directions(np.random.default_rng(5))
    z = np.random.default_rng(5).standard_normal((2, 3))
    np.testing.assert_allclose(t1, z[0] * [64, 32, 1])  # eq. 21
    assert abs(t1 @ t2) < 1e-9 * (t1 @ t1)  # eq. 22


def test_hill_climb_crosses_plateaus():
    v = np.array([0.0, 1e-9, 0.0, 1.0, 2.0, 1.0, 1.0, 3.0, 0.0])
    np.testing.assert_array_equal(toy_experiments.hill_climb(v, np.arange(9)), [4, 4, 4, 4, 4, 7, 7, 7, 7])


def test_alternating_from_the_truth_stays():
    cfg = toy.ToyConfig()
    y = toy_model.observe(cfg, np.random.default_rng(6))
    end, _, _ = toy_experiments.alternating_minimization(y, np.array([[64.0, 10.0, 1.5]]))
    assert toy_experiments.near(end, np.array([64.0, 10.0, 1.5])).all()


@pytest.mark.parametrize(
    "options, match", [({"starts": 0}, "--starts"), ({"noise": 0.0}, "--noise"), ({"noise": 2.0}, "--noise"), ({"seed": -1}, "--seed")]
)
def test_bad_config(options, match):
    with pytest.raises(KdiffError, match=match):
        toy.run_toy(toy.ToyConfig(**options))


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli(cli, tmp_path):
    res = cli("toy", "--out", tmp_path / "out", "--starts", "8", "--seed", "2")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "out" / "toy.json").read_text())
    assert data["config"]["seed"] == 2 and data["config"]["starts"] == 8
    bad = cli("toy", "--out", tmp_path / "x", "--noise", "-1")
    assert bad.exit_code == 2 and "error:" in bad.output
