"""Image and kernel quality measures for ``kdiff eval`` (the paper's Tables 1 and 2).

Plain functions on NumPy arrays; the metric plugins (``plugins/metric_*.py``) wrap them.
:func:`psnr_batch` is PSNR on torch batches, for the validation figures of training.
:func:`align` is the one alignment: the best integer shift of an estimate within ``max_shift``
pixels, scored over the interior ``border`` pixels in (default 10 and 15), intensities unchanged;
``psnr_aligned``, ``ssim_aligned`` and Levin's error ratio use it.

* images: ``(H, W, C)`` (or ``(H, W)``) float arrays in [0, 1]; the estimate is clipped to [0, 1];
* kernels: ``(h, w)`` nonnegative arrays (any scale; sizes may differ).

Metric component protocol (kind ``metric``)::

    name: str; description: str
    target: "image" | "kernel" | "item"    # what compute() compares
    higher_is_better: bool
    compute(estimate, reference) -> float  # image/kernel metrics, one image
    # optional:
    columns: tuple[str, ...]               # several values per image: compute() returns {column: value}
    params: dict                           # options compute() takes as keywords, with their defaults
    validate_options(**params) -> None     # raise KdiffError for bad options (before anything runs)
    set_level: bool                        # True: compute_set(estimates, references) over all images (FID)
    available(weights_dir) -> str | None   # None when usable, else why not and how to fix it
    summary(values) -> dict[str, float]    # extra columns from the per-image values

``item`` metrics get ``compute(result, item)`` with the method's :class:`Result` and the dataset's
:class:`~kdiff_cli.items.Item` (e.g. Levin's error ratio, which re-deconvolves ``y``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft as scipy_fft
import torch

from kdiff_cli.maths import ops
from kdiff_cli.errors import KdiffError

#: torch hub file names of the backbones that LPIPS (AlexNet) and FID (Inception v3) need
LPIPS_ALEX_FILE = "alexnet-owt-7be5be79.pth"
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: aligned scores: the best integer shift within ALIGN_MAX_SHIFT pixels, ALIGN_BORDER pixels cropped
ALIGN_MAX_SHIFT = 10
ALIGN_BORDER = 15


@dataclass
class Result:
    """One method's output on one item: the image ``x`` (H, W, C) and kernel ``k`` (h, w) or None."""

    x: np.ndarray
    k: np.ndarray | None
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- image metrics


def _pair(estimate: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.clip(np.asarray(estimate, dtype=np.float64), 0.0, 1.0)
    b = np.asarray(reference, dtype=np.float64)
    if a.ndim == 2:
        a = a[..., None]
    if b.ndim == 2:
        b = b[..., None]
    if a.shape[:2] != b.shape[:2]:
        raise KdiffError(f"estimate {a.shape} and reference {b.shape} differ in size")
    if a.shape[2] != b.shape[2]:
        if a.shape[2] == 1:
            a = np.repeat(a, b.shape[2], axis=2)
        elif b.shape[2] == 1:
            b = np.repeat(b, a.shape[2], axis=2)
        else:
            raise KdiffError(f"estimate has {a.shape[2]} channels, reference {b.shape[2]}")
    return a, b


def mse(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Mean squared error over all pixels and channels."""
    a, b = _pair(estimate, reference)
    return float(np.mean((a - b) ** 2))


def psnr(estimate: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)`` (inf when equal)."""
    m = mse(estimate, reference)
    if m == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / m))


def psnr_batch(x_hat: torch.Tensor, x: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of ``x_hat`` (clamped to [0, peak]) against ``x``, in float32 on their
    device: shape ``(B,)``. The MSE is floored at 1e-12 (120 dB at peak 1) instead of giving inf."""
    mse_ = (x_hat.float().clamp(0, peak) - x.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse_.clamp(min=1e-12))


def ssim(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity: scikit-image's ``structural_similarity`` (7x7 window, mean over channels)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(estimate, reference)
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=2))


# --------------------------------------------------------------------------- kernel metrics


def as_kernel(k) -> np.ndarray:
    """A kernel (torch or NumPy, (h, w) or (1, 1, h, w)) as an (h, w) float64 array."""
    if isinstance(k, torch.Tensor):
        k = k.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(k, dtype=np.float64)
    a = a.reshape(a.shape[-2:]) if a.ndim > 2 and int(np.prod(a.shape[:-2])) == 1 else a
    if a.ndim != 2:
        raise KdiffError(f"a kernel must be (h, w) or (1, 1, h, w), got shape {a.shape}")
    return a


def mnc(k_est: np.ndarray, k_true: np.ndarray) -> float:
    """Maximum of normalised cross-correlation (the paper's Table 2): 1 for a shifted copy."""
    return float(ops.mnc(torch.from_numpy(as_kernel(k_est)), torch.from_numpy(as_kernel(k_true))))


# --------------------------------------------------------------------------- alignment


def check_alignment(max_shift, border) -> tuple[int, int]:
    """Validate the alignment options: integers with ``0 <= max_shift <= border``."""
    for name, v in (("max_shift", max_shift), ("border", border)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise KdiffError(f"{name} must be an integer >= 0, got {v!r}")
    if max_shift > border:
        raise KdiffError(f"border ({border}) must be at least max_shift ({max_shift}): every shift is scored on the same window")
    return int(max_shift), int(border)


@dataclass(frozen=True)
class Alignment:
    """The best integer shift of an estimate onto a reference: ``estimate[i + dy, j + dx]`` is
    compared with ``reference[i, j]`` over the reference's interior (``border`` pixels cropped)."""

    dy: int
    dx: int
    ssd: float  # sum of squared differences at that shift (exact, not the FFT's)
    estimate: np.ndarray  # the shifted estimate's window (h, w, C), clipped to [0, 1]
    reference: np.ndarray  # the reference's interior (h, w, C)


def align(estimate: np.ndarray, reference: np.ndarray, max_shift: int = ALIGN_MAX_SHIFT, border: int = ALIGN_BORDER) -> Alignment:
    """Best integer shift within ``max_shift`` pixels (smallest SSD), all shifts scored at once.

    The reference's interior ``reference[border:-border, border:-border]`` is compared with the
    estimate's window at every shift ``|dy|, |dx| <= max_shift`` (so ``border >= max_shift``:
    every window lies inside the image). The SSDs of all shifts come from one FFT correlation and
    an integral image; among equal SSDs the smallest shift wins. Intensities are not rescaled.
    """
    a, b = _pair(estimate, reference)
    s, B = check_alignment(max_shift, border)
    H, W, C = b.shape
    if H <= 2 * B or W <= 2 * B:
        raise KdiffError(f"image {W}x{H} too small for alignment with a {B}-pixel border (options border, max_shift)")
    h, w = H - 2 * B, W - 2 * B
    ref = b[B : H - B, B : W - B]
    region = a[B - s : H - B + s, B - s : W - B + s]  # (h + 2s, w + 2s, C)
    n = 2 * s + 1
    # cross[ty, tx] = sum region[i + ty, j + tx] ref[i, j]: a valid correlation, exact in an FFT of size >= region
    P = (scipy_fft.next_fast_len(h + 2 * s, real=True), scipy_fft.next_fast_len(w + 2 * s, real=True))
    F = scipy_fft.rfft2(region, s=P, axes=(0, 1)) * np.conj(scipy_fft.rfft2(ref, s=P, axes=(0, 1)))
    cross = scipy_fft.irfft2(F.sum(axis=2), s=P)[:n, :n]
    # energy of every window: an integral image of region^2
    S = np.zeros((h + 2 * s + 1, w + 2 * s + 1))
    S[1:, 1:] = np.cumsum(np.cumsum((region**2).sum(axis=2), axis=0), axis=1)
    energy = S[h : h + n, w : w + n] - S[:n, w : w + n] - S[h : h + n, :n] + S[:n, :n]
    ref2 = float(np.sum(ref**2))
    ssd = energy - 2.0 * cross + ref2
    tol = 1e-9 * (ref2 + float(energy.max()) + 1.0)  # FFT rounding: treat near-equal SSDs as ties
    t = np.arange(-s, s + 1)
    size = t[:, None] ** 2 + t[None, :] ** 2
    ties = ssd <= ssd.min() + tol
    iy, ix = np.unravel_index(np.argmin(np.where(ties, size, np.iinfo(np.int64).max)), ssd.shape)
    dy, dx = int(iy) - s, int(ix) - s
    win = a[B + dy : H - B + dy, B + dx : W - B + dx]
    return Alignment(dy, dx, float(np.sum((win - ref) ** 2)), win, ref)


def psnr_aligned(estimate: np.ndarray, reference: np.ndarray, max_shift: int = ALIGN_MAX_SHIFT, border: int = ALIGN_BORDER) -> float:
    """PSNR after the best integer alignment (:func:`align`), on the interior only."""
    al = align(estimate, reference, max_shift, border)
    return psnr(al.estimate, al.reference)


def ssim_aligned(estimate: np.ndarray, reference: np.ndarray, max_shift: int = ALIGN_MAX_SHIFT, border: int = ALIGN_BORDER) -> float:
    """SSIM at the shift of smallest SSD (:func:`align`), on the interior only."""
    al = align(estimate, reference, max_shift, border)
    return ssim(al.estimate, al.reference)


class PlainAndAligned:
    """A full-reference image metric reported as it is and after alignment: columns ``<name>`` and
    ``<name>_aligned`` (the ``psnr`` and ``ssim`` plugins). Subclasses set ``name``,
    ``description``, ``plain(estimate, reference)`` and ``aligned(estimate, reference, max_shift, border)``."""

    name = ""
    target = "image"
    higher_is_better = True
    params = {"max_shift": ALIGN_MAX_SHIFT, "border": ALIGN_BORDER}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.columns = (cls.name, f"{cls.name}_aligned")

    def validate_options(self, max_shift=ALIGN_MAX_SHIFT, border=ALIGN_BORDER) -> None:
        check_alignment(max_shift, border)

    def compute(self, estimate, reference, max_shift=ALIGN_MAX_SHIFT, border=ALIGN_BORDER) -> dict:
        return {self.columns[0]: self.plain(estimate, reference),
                self.columns[1]: self.aligned(estimate, reference, max_shift, border)}


# --------------------------------------------------------------------------- Levin et al. error ratio


def best_aligned_ssd(estimate: np.ndarray, reference: np.ndarray, max_shift: int, border: int | None = None) -> float:
    """Sum of squared differences after the best integer shift within ``max_shift`` pixels, over
    the interior ``border`` pixels in (default ``max_shift``): :func:`align`'s SSD, so a deblurred
    image that is only translated (a shifted kernel estimate) is not penalised."""
    return align(estimate, reference, max_shift, max_shift if border is None else border).ssd


def error_ratio(
    x_with_estimate: np.ndarray, x_with_truth: np.ndarray, x: np.ndarray, max_shift: int = ALIGN_MAX_SHIFT,
    border: int = ALIGN_BORDER,
) -> float:
    """Levin et al. (2009): SSD of the image deconvolved with the estimated kernel over the SSD of
    the image deconvolved (by the same solver) with the true kernel, each after best alignment."""
    num = best_aligned_ssd(x_with_estimate, x, max_shift, border)
    den = best_aligned_ssd(x_with_truth, x, max_shift, border)
    if den == 0.0:
        return 1.0 if num == 0.0 else float("inf")
    return num / den


# --------------------------------------------------------------------------- backbone weights


def hub_checkpoints_dir() -> Path:
    """Where ``torch.hub`` keeps downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(filename: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """``filename`` in ``weights_dir`` (or its ``checkpoints/``), else in the torch hub cache."""
    places = []
    if weights_dir is not None:
        d = Path(weights_dir).expanduser()
        places += [d / filename, d / "checkpoints" / filename]
    places.append(hub_checkpoints_dir() / filename)
    for p in places:
        if p.is_file():
            return p
    return None


def unavailable_reason(package: str, module: str, filename: str, what: str, weights_dir=None) -> str | None:
    """None when ``module`` imports and ``filename`` is found, else what to install (never downloads)."""
    import importlib.util

    place = f"put {filename} in {hub_checkpoints_dir()} or pass --metric-weights DIR"
    if importlib.util.find_spec(module) is None:
        return f"needs pip install {package} and the {what} weights ({place})"
    if find_weights(filename, weights_dir) is None:
        return f"needs the {what} weights: {place}"
    return None


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between two Gaussians (the FID formula), with the usual offset for
    singular covariances."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@contextlib.contextmanager
def hub_dir_holding(weights: Path):
    """Point ``torch.hub`` at a folder whose ``checkpoints/`` holds ``weights`` while inside.

    torchvision / pytorch-fid look their backbones up in the hub cache and download only when the
    file is absent; a file elsewhere (``--metric-weights``) is linked into a temporary hub folder.
    """
    if weights.parent.name == "checkpoints":
        target, tmp = weights.parent.parent, None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="kdiff-hub-")
        target = Path(tmp.name)
        (target / "checkpoints").mkdir()
        (target / "checkpoints" / weights.name).symlink_to(weights.resolve())
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(target))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)
        if tmp is not None:
            tmp.cleanup()
