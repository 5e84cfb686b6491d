"""Metrics: PSNR of a known MSE, SSIM against scikit-image, the aligned scores (a shifted copy is
perfect after alignment, options, golden values), MNC, Levin's error ratio, FID formula, and
LPIPS/FID reporting n/a (never a number from random weights) when backbones are absent."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from kdiff_cli.maths import metrics
from kdiff_cli import plugins
from kdiff_cli.errors import KdiffError


def _img(seed, shape=(32, 40, 3)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# --------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_of_known_mse():
    ref = np.full((8, 9, 3), 0.5)
    est = ref + 0.1  # MSE = 0.01 -> 20 dB
    assert metrics.mse(est, ref) == pytest.approx(0.01, rel=1e-12)
    assert metrics.psnr(est, ref) == pytest.approx(20.0, abs=1e-9)
    # alternating +-0.05: MSE 0.0025 -> 10 log10(400) dB
    est2 = ref + 0.05 * np.where(np.indices(ref.shape).sum(0) % 2 == 0, 1, -1)
    assert metrics.psnr(est2, ref) == pytest.approx(10 * np.log10(400), abs=1e-9)
    assert metrics.psnr(ref, ref) == float("inf")


def test_psnr_clips_the_estimate():
    ref = np.ones((4, 4, 1))
    assert metrics.psnr(np.full((4, 4, 1), 3.0), ref) == float("inf")  # clipped to 1


def test_psnr_plugin_and_gray_vs_rgb():
    m = plugins.get("metric", "psnr")
    assert m.higher_is_better and m.target == "image"
    x = _img(0)
    gray = x.mean(axis=2, keepdims=True)
    # a gray estimate is compared with every channel of an RGB reference
    expected = 10 * np.log10(1 / np.mean((np.repeat(gray, 3, axis=2).astype(np.float64) - x) ** 2))
    assert m.compute(gray, x)["psnr"] == pytest.approx(expected, rel=1e-9)
    assert m.columns == ("psnr", "psnr_aligned") and set(m.compute(gray, x)) == set(m.columns)
    with pytest.raises(KdiffError, match="size"):
        m.compute(x[:10], x)


@pytest.mark.parametrize("shape", [(32, 40, 3), (30, 33, 1)])
def test_ssim_equals_scikit_image(shape):
    ref = _img(1, shape)
    est = np.clip(ref + 0.1 * np.random.default_rng(2).standard_normal(shape), 0, 1)
    expected = structural_similarity(est.astype(np.float64), ref.astype(np.float64), data_range=1.0, channel_axis=2)
    values = plugins.get("metric", "ssim").compute(est, ref, max_shift=0, border=0)
    value = values["ssim"]
    assert value == pytest.approx(expected, abs=1e-12)
    assert values["ssim_aligned"] == value  # no shift searched, no border cropped: the same score
    assert 0.0 < value < 0.99
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)


# --------------------------------------------------------------------------- aligned scores


def test_shifted_copy_scores_perfect_after_alignment_and_not_before():
    x = _img(3, (48, 52, 3))
    moved = np.roll(x, (2, -3), axis=(0, 1))
    al = metrics.align(moved, x)
    assert (al.dy, al.dx, al.ssd) == (2, -3, 0.0)
    assert metrics.psnr(moved, x) < 10 and metrics.psnr_aligned(moved, x) == float("inf")
    assert metrics.ssim(moved, x) < 0.2 and metrics.ssim_aligned(moved, x) == pytest.approx(1.0)
    # an estimate shifted by (2, -3) scores exactly what the unshifted estimate scores
    est = np.clip(x + 0.05 * np.random.default_rng(4).standard_normal(x.shape), 0, 1)
    shifted = np.roll(est, (2, -3), axis=(0, 1))
    assert metrics.psnr_aligned(shifted, x) == pytest.approx(metrics.psnr_aligned(est, x), abs=1e-12)
    assert metrics.ssim_aligned(shifted, x) == pytest.approx(metrics.ssim_aligned(est, x), abs=1e-12)
    assert metrics.psnr(shifted, x) < metrics.psnr(est, x) - 3
    for name in ("psnr", "ssim"):  # the plugins report both, side by side
        v = plugins.get("metric", name).compute(shifted, x)
        assert v[f"{name}_aligned"] > v[name]


def test_align_equals_brute_force_search():
    rng = np.random.default_rng(7)
    ref = rng.random((30, 34, 2))
    est = np.clip(np.roll(ref, (-1, 3), axis=(0, 1)) + 0.2 * rng.standard_normal(ref.shape), 0, 1)
    s, B = 4, 6
    inner = ref[B:-B, B:-B]
    ssd = {(dy, dx): np.sum((est[B + dy : 30 - B + dy, B + dx : 34 - B + dx] - inner) ** 2)
           for dy in range(-s, s + 1) for dx in range(-s, s + 1)}
    best = min(ssd, key=ssd.get)
    al = metrics.align(est, ref, s, B)
    assert (al.dy, al.dx) == best == (-1, 3) and al.ssd == pytest.approx(ssd[best], rel=1e-12)
    assert metrics.best_aligned_ssd(est, ref, s, B) == al.ssd
    flat = np.full((40, 40, 1), 0.5)  # every shift ties: the smallest (none) wins
    assert (metrics.align(flat, flat).dy, metrics.align(flat, flat).dx) == (0, 0)


def test_alignment_options_take_effect():
    x = _img(5, (50, 50, 1))
    est = np.clip(x + 0.05 * np.random.default_rng(6).standard_normal(x.shape), 0, 1)
    moved = np.roll(est, (4, 0), axis=(0, 1))
    assert metrics.psnr_aligned(moved, x, max_shift=3, border=5) < metrics.psnr_aligned(moved, x, max_shift=4, border=5) - 3
    assert metrics.psnr_aligned(moved, x, max_shift=4, border=5) == pytest.approx(metrics.psnr(est[5:-5, 5:-5], x[5:-5, 5:-5]))
    # max_shift 0: no search; the border alone crops
    assert metrics.psnr_aligned(est, x, 0, 0) == metrics.psnr(est, x)
    assert metrics.psnr_aligned(est, x, 0, 7) == pytest.approx(metrics.psnr(est[7:-7, 7:-7], x[7:-7, 7:-7]), abs=1e-12)
    assert metrics.ssim_aligned(est, x, 0, 7) == pytest.approx(metrics.ssim(est[7:-7, 7:-7], x[7:-7, 7:-7]), abs=1e-12)
    m = plugins.get("metric", "psnr")
    assert m.params == {"max_shift": 10, "border": 15}
    assert m.compute(moved, x, max_shift=4, border=5)["psnr_aligned"] == metrics.psnr_aligned(moved, x, 4, 5)


@pytest.mark.parametrize(
    "max_shift,border,message",
    [(3, 2, r"border \(2\) must be at least max_shift \(3\)"), (-1, 2, "max_shift must be an integer >= 0"),
     (1, 2.5, "border must be an integer >= 0"), (True, 2, "max_shift must be an integer")],
)
def test_alignment_option_errors(max_shift, border, message):
    with pytest.raises(KdiffError, match=message):
        metrics.check_alignment(max_shift, border)
    with pytest.raises(KdiffError, match=message):
        plugins.get("metric", "ssim").validate_options(max_shift=max_shift, border=border)


def test_aligned_scores_golden_values():
    """A 16 x 16 ramp pattern and an estimate moved by (1, -1) with a +-0.05 checkerboard on top:
    after alignment the error is 0.05 everywhere, 10 log10(1 / 0.0025) dB."""
    i, j = np.mgrid[:16, :16]
    ref = (0.1 + 0.07 * ((3 * i + 5 * j) % 11))[..., None]
    est = np.roll(ref, (1, -1), axis=(0, 1)) + 0.05 * np.where((i + j) % 2 == 0, 1.0, -1.0)[..., None]
    al = metrics.align(est, ref, max_shift=2, border=3)
    assert (al.dy, al.dx) == (1, -1) and al.ssd == pytest.approx(100 * 0.0025, rel=1e-12)
    assert metrics.psnr_aligned(est, ref, 2, 3) == pytest.approx(10 * np.log10(400), abs=1e-9)
    assert metrics.psnr(est, ref) == pytest.approx(10.422094513286558, abs=1e-9)
    assert metrics.ssim(est, ref) == pytest.approx(0.09977937386640265, abs=1e-9)
    assert metrics.ssim_aligned(est, ref, 2, 3) == pytest.approx(0.9753510953715672, abs=1e-9)


def test_image_too_small_for_the_border():
    x = _img(0, (30, 40, 1))
    with pytest.raises(KdiffError, match="too small for alignment with a 15-pixel border"):
        metrics.psnr_aligned(x, x)
    assert metrics.psnr_aligned(x, x, 2, 4) == float("inf")


# --------------------------------------------------------------------------- MNC


def _kernel(seed=0, size=15):
    k = np.zeros((size, size))
    rng = np.random.default_rng(seed)
    r = c = size // 2
    for _ in range(12):  # a random-walk motion path
        k[r, c] += 1
        r = int(np.clip(r + rng.integers(-1, 2), 2, size - 3))
        c = int(np.clip(c + rng.integers(-1, 2), 2, size - 3))
    return k / k.sum()


def test_mnc_is_one_for_a_shifted_copy_and_below_otherwise():
    k = _kernel()
    shifted = np.roll(np.pad(k, 4), (3, -2), axis=(0, 1))  # bigger canvas, shifted, scaled
    m = plugins.get("metric", "mnc")
    assert m.target == "kernel" and m.higher_is_better
    assert m.compute(shifted * 7, k) == pytest.approx(1.0, abs=1e-12)
    assert m.compute(k, k) == pytest.approx(1.0, abs=1e-12)
    other = _kernel(seed=5)
    assert m.compute(other, k) < 0.99
    delta = np.zeros((15, 15))
    delta[7, 7] = 1
    assert m.compute(delta, k) == pytest.approx(k.max() / np.linalg.norm(k), rel=1e-9)
    assert m.compute(torch.from_numpy(k)[None, None], k) == pytest.approx(1.0)


# --------------------------------------------------------------------------- Levin error ratio


def test_best_aligned_ssd_ignores_small_shifts():
    x = _img(3, (40, 40, 1))
    moved = np.roll(x, (2, -3), axis=(0, 1))
    assert metrics.best_aligned_ssd(moved, x, max_shift=5) == pytest.approx(0.0, abs=1e-12)
    assert metrics.best_aligned_ssd(moved, x, max_shift=1) > 1.0
    with pytest.raises(KdiffError, match="too small"):
        metrics.best_aligned_ssd(x[:8, :8], x[:8, :8], max_shift=5)


def test_error_ratio_values():
    x = _img(4, (40, 40, 1))
    with_truth = np.clip(x + 0.02 * np.random.default_rng(5).standard_normal(x.shape), 0, 1)
    assert metrics.error_ratio(with_truth, with_truth, x) == pytest.approx(1.0)
    worse = np.clip(x + 0.06 * np.random.default_rng(6).standard_normal(x.shape), 0, 1)
    assert metrics.error_ratio(worse, with_truth, x) > 3.0
    assert metrics.error_ratio(np.roll(with_truth, 1, axis=0), with_truth, x) == pytest.approx(1.0)


def test_error_ratio_summary_success_rate():
    m = plugins.get("metric", "error-ratio")
    assert m.summary([1.0, 2.0, 4.0, None]) == {"error-ratio": pytest.approx(7 / 3), "success@3": pytest.approx(2 / 3)}
    assert m.summary([None]) == {"error-ratio": None, "success@3": None}


# --------------------------------------------------------------------------- FID / LPIPS weights


def test_frechet_distance_known_values():
    mu, cov = np.zeros(3), np.eye(3)
    assert metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 1 + 1 + 4 - 4
    assert metrics.frechet_distance(np.array([1.0]), np.array([[1.0]]), np.array([0.0]), np.array([[4.0]])) == pytest.approx(2.0)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    yield tmp_path
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("name,filename", [("lpips", metrics.LPIPS_ALEX_FILE), ("fid", metrics.FID_INCEPTION_FILE)])
def test_perceptual_metrics_unavailable_without_weights(empty_hub, name, filename):
    m = plugins.get("metric", name)
    assert not m.higher_is_better
    reason = m.available(None)
    assert reason is not None and filename in reason and "--metric-weights" in reason


def test_find_weights_in_dir_checkpoints_and_hub(empty_hub):
    wdir = empty_hub / "w"
    (wdir / "checkpoints").mkdir(parents=True)
    assert metrics.find_weights("a.pth", wdir) is None
    (wdir / "checkpoints" / "a.pth").write_bytes(b"x")
    assert metrics.find_weights("a.pth", wdir) == wdir / "checkpoints" / "a.pth"
    (wdir / "a.pth").write_bytes(b"x")
    assert metrics.find_weights("a.pth", wdir) == wdir / "a.pth"
    hub = metrics.hub_checkpoints_dir()
    hub.mkdir(parents=True)
    (hub / "b.pth").write_bytes(b"x")
    assert metrics.find_weights("b.pth") == hub / "b.pth"


def test_hub_dir_holding_links_and_restores(empty_hub):
    f = empty_hub / "loose" / "net.pth"
    f.parent.mkdir()
    f.write_bytes(b"weights")
    before = torch.hub.get_dir()
    with metrics.hub_dir_holding(f):
        linked = metrics.hub_checkpoints_dir() / "net.pth"
        assert linked.read_bytes() == b"weights"
    assert torch.hub.get_dir() == before
