"""Kernel generator plugins (borodenko, boracchi-foi, gaussian, linear): registration, validity, seeding,
errors and each model's statistics (the rasteriser they share: maths/test_kernels.py)."""

import numpy as np
import pytest

from kdiff_cli.maths import kernels
from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError

GENERATORS = ["borodenko", "boracchi-foi", "gaussian", "linear"]
#: medians of the reference implementation (LeviBorodenko/motionblur, intensity U(0.1, 0.95)) over
#: 4,000 kernels of 64 x 64, measured with kernels.kernel_stats: support area, max, path extent
REFERENCE_64 = {"area": 114.0, "max": 0.0187, "extent": 35.0}


def gen(name):
    return plugins.get("generator", name)


def rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- protocol, every generator


@pytest.mark.parametrize("name", GENERATORS)
def test_registered_with_description_and_params(name):
    g = gen(name)
    assert g.name == name and g.description and isinstance(g.params, dict)
    k = g.sample(rng(), 2, 9, **g.params)  # the documented defaults are accepted as they are
    assert k.shape == (2, 9, 9)


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("size", [3, 4, 16, 17])
def test_nonnegative_sum_one_centred(name, size):
    k = gen(name).sample(rng(1), 40, size)
    assert k.shape == (40, size, size) and k.dtype == np.float64
    assert k.min() >= 0.0
    np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-12)
    r, c = kernels.center_of_mass(k)
    dev = np.maximum(np.abs(r - size // 2), np.abs(c - size // 2))
    assert dev.max() < 1.0  # the centre of mass is on or next to the centre pixel...
    assert np.mean(dev <= 0.5 + 1e-9) >= 0.95  # ...and nearly always nearest to it


@pytest.mark.parametrize("name", GENERATORS)
def test_deterministic_per_seed(name):
    a = gen(name).sample(rng(7), 6, 15)
    b = gen(name).sample(rng(7), 6, 15)
    c = gen(name).sample(rng(8), 6, 15)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a[0], a[1])  # kernels of a batch differ


@pytest.mark.parametrize("name", GENERATORS)
def test_zero_count_and_bad_size_or_rng(name):
    assert gen(name).sample(rng(), 0, 8).shape == (0, 8, 8)
    with pytest.raises(KdiffError, match="size"):
        gen(name).sample(rng(), 1, 2)
    with pytest.raises(KdiffError, match="Generator"):
        gen(name).sample(None, 1, 8)
    with pytest.raises(TypeError):
        gen(name).sample(rng(), 1, 8, no_such_param=1)


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("borodenko", {"intensity": 1.5}, r"intensity must be in \[0, 1\]"),
        ("borodenko", {"intensity": "a lot"}, "intensity must be a number"),
        ("boracchi-foi", {"exposure": 0.0}, r"exposure must be in \(0, 1\]"),
        ("boracchi-foi", {"samples": 1}, "samples must be an integer >= 2"),
        ("boracchi-foi", {"length": -3}, "length must be in"),
        ("gaussian", {"sigma_min": 3.0, "sigma_max": 2.0}, "sigma_max .* must be >= sigma_min"),
        ("gaussian", {"sigma_min": 0.0}, "sigma_min must be in"),
        ("linear", {"length_min": 5.0, "length_max": 2.0}, "length_max .* must be >= length_min"),
        ("linear", {"angle": 400}, "angle must be in"),
    ],
)
def test_bad_parameter_values_are_one_line_errors(name, params, message):
    with pytest.raises(KdiffError, match=message) as err:
        gen(name).sample(rng(), 2, 9, **params)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- borodenko


def test_borodenko_statistics_follow_the_reference_model():
    st = kernels.kernel_stats(gen("borodenko").sample(rng(3), 600, 64))
    for key, ref in REFERENCE_64.items():
        assert abs(np.median(st[key]) / ref - 1) < 0.12, (key, np.median(st[key]), ref)


def _principal_variances(k):
    """Variances (px^2) of each kernel along its minor and major axes, ``(N, 2)``."""
    yy, xx = np.mgrid[: k.shape[1], : k.shape[2]]
    out = []
    for ki in k:
        r, c = (ki * yy).sum(), (ki * xx).sum()
        out.append(np.linalg.eigvalsh(np.cov(np.stack([yy.ravel() - r, xx.ravel() - c]), aweights=ki.ravel())))
    return np.array(out)


def test_borodenko_zero_intensity_is_a_straight_line():
    """intensity 0: max angle 0, so every step has angle 0; the path is a rotated segment."""
    v = _principal_variances(gen("borodenko").sample(rng(4), 20, 64, intensity=0.0))
    assert np.all(v[:, 0] < 0.6)  # across the line: only the line profile (~0.27 px^2 variance)
    assert np.all((v[:, 1] > 5 * v[:, 0]) | (v[:, 1] < 1.0))  # along it: the length (unless tiny)


def test_borodenko_higher_intensity_gives_curvier_paths():
    low = _principal_variances(gen("borodenko").sample(rng(5), 150, 64, intensity=0.1))
    high = _principal_variances(gen("borodenko").sample(rng(5), 150, 64, intensity=0.9))
    assert np.median(high[:, 0] / high[:, 1]) > 3 * np.median(low[:, 0] / low[:, 1])


def test_borodenko_step_lengths_reach_the_path_length():
    from kdiff_plugins import gen_borodenko as gb

    intensity = np.full(300, 0.5)
    kid, s = gb.step_lengths(rng(6), intensity, 181.0)
    total = np.bincount(kid, s, minlength=300)
    longest = np.zeros(300)
    np.maximum.at(longest, kid, s)
    last = s[np.r_[np.flatnonzero(np.diff(kid)), kid.size - 1]]
    # steps were drawn until the sum reached L <= 0.75 D (1 + I^2): the sum minus the last step is below it
    assert np.all(total - last < 0.75 * 181.0 * 1.25 + 1e-9)
    assert np.all(np.diff(kid) >= 0) and np.all(s > 0)
    assert np.all(longest < 0.75 * 181.0 * 1.25)


# --------------------------------------------------------------------------- boracchi-foi


def test_boracchi_foi_trajectory_length_is_exact():
    from kdiff_plugins import gen_boracchi_foi as bf

    x = bf.trajectories(rng(2), 8, 500, 30.0)
    np.testing.assert_allclose(np.abs(np.diff(x, axis=0)).sum(axis=0), 30.0, rtol=1e-9)


def test_boracchi_foi_short_exposure_is_a_part_of_the_same_psf():
    full = gen("boracchi-foi").sample(rng(9), 6, 32, samples=400)
    part = gen("boracchi-foi").sample(rng(9), 6, 32, samples=400, exposure=0.25)
    ext_full = kernels.kernel_stats(full, threshold=1e-9)["extent"]
    ext_part = kernels.kernel_stats(part, threshold=1e-9)["extent"]
    assert np.all(ext_part <= ext_full) and np.any(ext_part < ext_full)
    assert np.all(part.max(axis=(1, 2)) >= full.max(axis=(1, 2)) - 1e-12)


# --------------------------------------------------------------------------- gaussian, linear


def test_gaussian_isotropic_second_moments():
    k = gen("gaussian").sample(rng(), 3, 33, sigma_min=2.0, sigma_max=2.0, isotropic=True)
    yy, xx = np.mgrid[:33, :33] - 16
    for ki in k:
        np.testing.assert_allclose([(ki * yy**2).sum(), (ki * xx**2).sum()], 4.0, rtol=2e-3)
        assert abs((ki * yy * xx).sum()) < 1e-9


def test_gaussian_anisotropic_is_elongated():
    k = gen("gaussian").sample(rng(), 10, 33, sigma_min=0.8, sigma_max=4.0)
    yy, xx = np.mgrid[:33, :33] - 16
    ratios = []
    for ki in k:
        cov = [[(ki * yy * yy).sum(), (ki * yy * xx).sum()], [(ki * yy * xx).sum(), (ki * xx * xx).sum()]]
        lo, hi = np.linalg.eigvalsh(cov)
        ratios.append(hi / lo)
    assert max(ratios) > 2.0


def test_linear_horizontal_and_vertical_golden():
    h = gen("linear").sample(rng(), 1, 15, length_min=10.0, length_max=10.0, angle=0.0)[0]
    np.testing.assert_allclose(h[7].sum(), 1.0, atol=1e-12)  # all mass in the centre row
    np.testing.assert_allclose(h[7, 3:12], 0.1, atol=1e-3)  # uniform: 1/L per pixel inside
    assert h[7, :2].sum() + h[7, 13:].sum() == 0.0
    v = gen("linear").sample(rng(), 1, 15, length_min=10.0, length_max=10.0, angle=90.0)[0]
    np.testing.assert_allclose(v, h.T, atol=1e-9)


def test_linear_zero_length_is_the_identity():
    k = gen("linear").sample(rng(), 2, 8, length_min=0.0, length_max=0.0)
    expected = np.zeros((8, 8))
    expected[4, 4] = 1.0
    np.testing.assert_allclose(k, np.stack([expected] * 2), atol=1e-12)
